"""Triton kernels for the Mamba-1 selective scan (forward, and backward with per-chunk recomputation).

One program owns one batch row and a block of ``BLOCK_D`` channels, keeps their ``(BLOCK_D, BLOCK_N)`` float32 state
in registers and walks time sequentially, ``CHUNK`` steps at a time.

- Forward writes ``y`` and, at the start of every chunk, the state (``states (b, d, n, n_chunks)``): that checkpoint
  is all the backward needs, so memory is O(b d n L / CHUNK) instead of O(b d n L).
- Backward walks chunks in reverse. For each chunk it recomputes the states forward from the saved checkpoint into a
  per-program scratch buffer ``(b, d, n, CHUNK)``, then runs the reverse-time adjoint recurrence
  ``dh_{t-1} = exp(dt_t A) * (dh_t + g_t C_t)``. Gradients summed over channels (``dB``, ``dC``) are written as
  per-block partials and summed in PyTorch (deterministic, no atomics); ``dA`` and ``dD`` as per-batch partials.

Time steps past ``L`` (the tail of the last chunk) are masked to ``dt = 0``: decay 1 and no input, so they are no-ops.
Only mainstream ``tl`` APIs are used so the kernels run on recent Triton releases and under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _step_size(delta, bias, valid, SOFTPLUS: tl.constexpr):
    """dt = softplus(delta + bias) (softplus optional; linear above 20 as in Mamba), forced to 0 where not valid."""
    dt = delta + bias
    if SOFTPLUS:
        dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(tl.minimum(dt, 20.0))))
    return tl.where(valid, dt, 0.0)


@triton.jit
def selective_scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,  # inputs
    y_ptr, states_ptr, last_ptr,  # outputs
    dim, L, n_state, n_chunks,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < n_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    zero_d = tl.zeros([BLOCK_D], tl.int32)  # "zero_d + t < L" gives a bool vector mask (the interpreter needs one)
    zero_n = tl.zeros([BLOCK_N], tl.int32)

    A = tl.load(A_ptr + offs_d[:, None] * n_state + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    D = tl.zeros([BLOCK_D], tl.float32)
    if HAS_D:
        D = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

    row = (pid_b * dim + offs_d) * L  # (BLOCK_D,) start of each channel's sequence in (b, d, L)
    bc_row = (pid_b * n_state + offs_n) * L  # (BLOCK_N,) start of each state's sequence in (b, n, L)
    dn = (pid_b * dim + offs_d[:, None]) * n_state + offs_n[None, :]  # (BLOCK_D, BLOCK_N) index into (b, d, n)

    h = tl.zeros([BLOCK_D, BLOCK_N], tl.float32)
    for c in range(n_chunks):
        tl.store(states_ptr + dn * n_chunks + c, h, mask=mask_dn)
        for j in range(CHUNK):
            t = c * CHUNK + j
            valid = mask_d & (zero_d + t < L)
            u = tl.load(u_ptr + row + t, mask=valid, other=0.0).to(tl.float32)
            delta = tl.load(delta_ptr + row + t, mask=valid, other=0.0).to(tl.float32)
            dt = _step_size(delta, bias, valid, SOFTPLUS)
            Bt = tl.load(B_ptr + bc_row + t, mask=mask_n & (zero_n + t < L), other=0.0).to(tl.float32)
            Ct = tl.load(C_ptr + bc_row + t, mask=mask_n & (zero_n + t < L), other=0.0).to(tl.float32)
            h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
            y = tl.sum(h * Ct[None, :], axis=1) + D * u
            if HAS_Z:
                z = tl.load(z_ptr + row + t, mask=valid, other=0.0).to(tl.float32)
                y = y * z * tl.sigmoid(z)
            tl.store(y_ptr + row + t, y.to(y_ptr.dtype.element_ty), mask=valid)
    tl.store(last_ptr + dn, h, mask=mask_dn)


@triton.jit
def selective_scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dy_ptr, states_ptr, dlast_ptr,  # inputs
    scratch_ptr,  # (b, d, n, CHUNK) float32 workspace
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dD_ptr, dB_ptr, dC_ptr,  # outputs (float32)
    dim, L, n_state, n_chunks, n_dblocks,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < n_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    zero_d = tl.zeros([BLOCK_D], tl.int32)  # "zero_d + t < L" gives a bool vector mask (the interpreter needs one)
    zero_n = tl.zeros([BLOCK_N], tl.int32)

    A = tl.load(A_ptr + offs_d[:, None] * n_state + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    D = tl.zeros([BLOCK_D], tl.float32)
    if HAS_D:
        D = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

    row = (pid_b * dim + offs_d) * L
    bc_row = (pid_b * n_state + offs_n) * L
    part_row = ((pid_b * n_dblocks + pid_d) * n_state + offs_n) * L  # (BLOCK_N,) into (b, n_dblocks, n, L)
    dn = (pid_b * dim + offs_d[:, None]) * n_state + offs_n[None, :]

    dh = tl.zeros([BLOCK_D, BLOCK_N], tl.float32)  # adjoint of the state after the current step
    if HAS_DLAST:
        dh = tl.load(dlast_ptr + dn, mask=mask_dn, other=0.0).to(tl.float32)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], tl.float32)
    dD_acc = tl.zeros([BLOCK_D], tl.float32)
    for cc in range(n_chunks):
        c = n_chunks - 1 - cc
        # Recompute this chunk's states from its checkpoint; scratch[j] holds the state *before* step j.
        h = tl.load(states_ptr + dn * n_chunks + c, mask=mask_dn, other=0.0)
        for j in range(CHUNK):
            t = c * CHUNK + j
            valid = mask_d & (zero_d + t < L)
            tl.store(scratch_ptr + dn * CHUNK + j, h, mask=mask_dn)
            u = tl.load(u_ptr + row + t, mask=valid, other=0.0).to(tl.float32)
            delta = tl.load(delta_ptr + row + t, mask=valid, other=0.0).to(tl.float32)
            dt = _step_size(delta, bias, valid, SOFTPLUS)
            Bt = tl.load(B_ptr + bc_row + t, mask=mask_n & (zero_n + t < L), other=0.0).to(tl.float32)
            h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
        tl.debug_barrier()
        for jj in range(CHUNK):
            j = CHUNK - 1 - jj
            t = c * CHUNK + j
            valid = mask_d & (zero_d + t < L)
            h_prev = tl.load(scratch_ptr + dn * CHUNK + j, mask=mask_dn, other=0.0)
            u = tl.load(u_ptr + row + t, mask=valid, other=0.0).to(tl.float32)
            delta = tl.load(delta_ptr + row + t, mask=valid, other=0.0).to(tl.float32)
            dt = _step_size(delta, bias, valid, SOFTPLUS)
            Bt = tl.load(B_ptr + bc_row + t, mask=mask_n & (zero_n + t < L), other=0.0).to(tl.float32)
            Ct = tl.load(C_ptr + bc_row + t, mask=mask_n & (zero_n + t < L), other=0.0).to(tl.float32)
            g = tl.load(dy_ptr + row + t, mask=valid, other=0.0).to(tl.float32)
            decay = tl.exp(dt[:, None] * A)
            h = decay * h_prev + (dt * u)[:, None] * Bt[None, :]
            if HAS_Z:
                z = tl.load(z_ptr + row + t, mask=valid, other=0.0).to(tl.float32)
                sig = tl.sigmoid(z)
                y_pre = tl.sum(h * Ct[None, :], axis=1) + D * u
                tl.store(dz_ptr + row + t, g * y_pre * sig * (1.0 + z * (1.0 - sig)), mask=valid)
                g = g * z * sig
            dD_acc += g * u
            tl.store(dC_ptr + part_row + t, tl.sum(g[:, None] * h, axis=0), mask=mask_n & (zero_n + t < L))
            dh += g[:, None] * Ct[None, :]
            # h = decay * h_prev + dt * u * B, with decay = exp(dt * A)
            dh_B = tl.sum(dh * Bt[None, :], axis=1)  # (BLOCK_D,)
            tl.store(dB_ptr + part_row + t, tl.sum(dh * (dt * u)[:, None], axis=0), mask=mask_n & (zero_n + t < L))
            d_log_decay = dh * h_prev * decay  # gradient w.r.t. dt * A
            dA_acc += d_log_decay * dt[:, None]
            ddt = dh_B * u + tl.sum(d_log_decay * A, axis=1)
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(delta + bias)
            tl.store(du_ptr + row + t, g * D + dh_B * dt, mask=valid)
            tl.store(ddelta_ptr + row + t, ddt, mask=valid)
            dh = dh * decay
        tl.debug_barrier()
    tl.store(dA_ptr + dn, dA_acc, mask=mask_dn)
    tl.store(dD_ptr + pid_b * dim + offs_d, dD_acc, mask=mask_d)
