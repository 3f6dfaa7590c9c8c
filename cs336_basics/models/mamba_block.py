"""The Mamba (S6) mixer block of Gu & Dao (2023), with optional stability switches and recurrent decoding.

Data flow for an input ``x (b, L, d_model)``, with ``d_inner = expand * d_model``:

1. ``in_proj`` maps ``x`` to ``[x_in, z]``, each ``(b, L, d_inner)``; ``z`` is the output gate.
2. ``conv1d`` (causal depthwise, kernel ``d_conv``, with bias) mixes each channel with its recent past, then SiLU.
   Optionally ``conv_norm`` (RMSNorm over ``d_inner``) follows.
3. ``x_proj`` maps the conv output to ``[dt_low (dt_rank), B (d_state), C (d_state)]``; ``dt_proj`` lifts the
   low-rank ``dt_low`` to ``d_inner``, and ``dt = softplus(dt_proj(dt_low) + dt_bias)``
   (``dt_bias`` is a separate parameter because :class:`~cs336_basics.nn.layers.Linear` has no bias; it plays the
   role of the reference's ``dt_proj.bias``).
4. The selective scan (``kernels.selective_scan``) runs ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t``,
   ``y_t = C_t h_t + D u_t``, gated by ``silu(z)``; ``A = -exp(A_log)`` is strictly negative by construction.
5. ``out_proj`` maps ``d_inner`` back to ``d_model``.

Initialisation (``init="mamba_simple"``, the default), rule by rule against the reference ``Mamba`` of
``mamba_ssm/modules/mamba_simple.py`` plus the ``_init_weights`` pass of ``mamba_ssm/models/mixer_seq_simple.py``:

- ``in_proj``, ``x_proj``, ``out_proj``: uniform in ``+-1/sqrt(fan_in)`` (PyTorch's ``nn.Linear`` default,
  ``kaiming_uniform_(a=sqrt(5))``, which the reference keeps; ``_init_weights`` only zeroes Linear biases, and
  none of these has one). Same distribution, not the same random draws: the stream of draws differs.
- ``out_proj`` is then multiplied by ``out_proj_scale``; :class:`~cs336_basics.models.mamba.MambaLayer` passes
  ``1/sqrt(branches_per_layer * num_layers)``, which is ``_init_weights``' re-draw of ``out_proj.weight`` divided
  by ``sqrt(n_residuals_per_layer * n_layer)`` (``n_residuals_per_layer`` = 2 with an MLP, else 1).
- ``conv1d``: weight and bias uniform in ``+-1/sqrt(d_conv)`` (``nn.Conv1d``'s default for a depthwise conv, which
  the reference keeps).
- ``dt_proj.weight`` is uniform in ``+-dt_rank**-0.5`` (the reference's ``dt_init="random"``, ``dt_scale=1``).
- ``dt_bias`` is the inverse softplus of ``dt`` drawn log-uniformly in ``[dt_min, dt_max] = [1e-3, 1e-1]`` and
  floored at ``dt_init_floor = 1e-4``, so at init ``softplus(dt_bias)`` spans the paper's range of timescales. It
  is the reference's ``dt_proj.bias`` (marked ``_no_reinit`` there so that ``_init_weights`` keeps it), held as a
  separate parameter because :class:`~cs336_basics.nn.layers.Linear` has no bias.
- ``A_log[c] = log(1, 2, ..., d_state)`` for every channel (S4D-real); ``D = 1``. Both are marked
  :func:`~cs336_basics.models.base.no_weight_decay` (the reference's ``_no_weight_decay``): decaying them would pull
  ``A`` towards ``-1`` and the skip to 0.
- ``A_log`` and ``D`` are float32 whatever ``dtype`` the block is built in, as in ``mamba_simple`` (``log(n)`` in
  bfloat16 is off by up to 0.4%, and the scan reads ``A = -exp(A_log)`` in float32 anyway). Beyond the reference,
  which only creates them in float32, later module casts (``.to(torch.bfloat16)``, ``.half()``) also leave them (and
  their gradients) in float32; casts to float64 and device moves apply as usual.

``init="cs336"`` draws ``in_proj``, ``x_proj`` and ``out_proj`` (before the ``out_proj_scale``) from the project's
:class:`~cs336_basics.nn.layers.Linear` init instead: truncated normal, std ``sqrt(2 / (fan_in + fan_out))``, cut
at 3 std. At ``d_model=64`` (``d_state=16``) that starts ``x_proj`` 2.1x and ``out_proj`` 2.0x wider in standard
deviation (``in_proj`` 1.1x) than the reference; every run logged before this option existed used it. Everything
else is the same in both.

Stability switches ("improved SSM"); every default is *off*, so the default block is Mamba-1 as in the reference,
which trains stably in fp32 at the sizes this project runs and keeps weight layouts identical to the reference. Turn
them on for high learning rates, low precision or long contexts:

- ``dt_limit=(lo, hi)``: clamp ``dt`` after the softplus. An unbounded ``dt`` lets a single token erase the state
  (``exp(dt A) -> 0``) and inject ``dt B u`` of arbitrary size; ``(1e-4, 1.0)`` is a reasonable choice.
- ``a_min_magnitude``: floor on ``|A|`` (``A = -max(exp(A_log), floor)``) so that no channel stops forgetting
  entirely (``|A| -> 0`` means the state integrates forever and can grow without bound over a long context).
- ``conv_norm=True``: RMSNorm after the conv + SiLU, bounding the scale of the scan input ``u`` and of ``B, C, dt``.
- ``out_norm=True``: RMSNorm (with a gain) on the gated scan output, before ``out_proj``: Mamba-2's ``RMSNormGated``
  with ``norm_before_gate=False``, ``out_proj(norm(y * silu(z)))``. The block's output scale then no longer follows
  the state's; Hymba's fusion normalises its SSM heads the same way (EXPERIMENT_LOG study 11).
- ``decay_limit=(min, max)``: keep the per-step decay ``exp(dt A)`` inside ``[min, max]`` for every state. The scan
  kernels take ``dt`` and ``A`` separately, so this is applied as the tightest per-channel bound on ``dt`` that
  guarantees it: ``dt <= -log(min) / max|A|`` and ``dt >= -log(max) / min|A|`` (the second wins if they cross).

Memory: ``checkpoint_scan=True`` keeps only the scan's inputs for the backward pass and recomputes its internals
there (one extra scan forward per step). The CPU ``chunked`` scan otherwise saves ``(d_inner, d_state)`` values per
token, which dominates training memory; the GPU Triton kernel checkpoints internally and gains little from it.

Recurrent decoding: :meth:`MambaBlock.make_state` gives a :class:`MambaState` (conv inputs of the last ``d_conv - 1``
steps and the SSM state). A fresh state is filled by a full-sequence pass (prefill: the scan with
``return_last_state``); after that every token goes through the single-step path in O(1) time and memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cs336_basics.models.base import no_weight_decay
from cs336_basics.nn.conv import CausalDepthwiseConv1d, conv_state_after
from cs336_basics.nn.functional import silu
from cs336_basics.nn.layers import Linear, RMSNorm
from kernels.selective_scan import selective_scan, selective_scan_step

MAMBA_INITS = ("mamba_simple", "cs336")


@dataclass
class MambaState:
    """Recurrent state of one :class:`MambaBlock` for a batch; updated in place by ``forward(x, state=...)``."""

    conv: Tensor  # (b, d_inner, d_conv - 1): the last conv inputs
    ssm: Tensor  # (b, d_inner, d_state)
    seen: int = 0  # tokens consumed so far


def softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` without overflow (``logaddexp(x, 0)``)."""
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


def inverse_softplus(y: Tensor) -> Tensor:
    """``x`` with ``softplus(x) = y`` for ``y > 0``: ``y + log(1 - exp(-y))``."""
    return y + torch.log(-torch.expm1(-y))


class MambaBlock(nn.Module):
    """Mamba-1 mixer ``(b, L, d_model) -> (b, L, d_model)``; see the module docstring for every choice."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        scan_backend: str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        out_proj_scale: float = 1.0,
        dt_limit: tuple[float, float] | None = None,
        a_min_magnitude: float | None = None,
        conv_norm: bool = False,
        decay_limit: tuple[float, float] | None = None,
        checkpoint_scan: bool = False,
        init: str = "mamba_simple",
        out_norm: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if min(d_model, d_state, d_conv, expand) < 1:
            raise ValueError(f"d_model, d_state, d_conv, expand must be >= 1, got {d_model, d_state, d_conv, expand}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if dt_limit is not None and not 0 <= dt_limit[0] < dt_limit[1]:
            raise ValueError(f"dt_limit must be (lo, hi) with 0 <= lo < hi, got {dt_limit}")
        if decay_limit is not None and not 0 < decay_limit[0] < decay_limit[1] <= 1:
            raise ValueError(f"decay_limit must be (min, max) with 0 < min < max <= 1, got {decay_limit}")
        if init not in MAMBA_INITS:
            raise ValueError(f"init must be one of {MAMBA_INITS}, got {init!r}")
        if a_min_magnitude is not None and a_min_magnitude <= 0:
            raise ValueError(f"a_min_magnitude must be > 0 (or None to disable), got {a_min_magnitude}")
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        self.scan_backend, self.checkpoint_scan = scan_backend, checkpoint_scan
        self.dt_limit, self.a_min_magnitude, self.decay_limit = dt_limit, a_min_magnitude, decay_limit

        self.init = init
        self.in_proj = self._projection(d_model, 2 * self.d_inner, factory)
        self.conv1d = CausalDepthwiseConv1d(self.d_inner, d_conv, bias=True, **factory)
        self.conv_norm = RMSNorm(self.d_inner, **factory) if conv_norm else None
        self.x_proj = self._projection(self.d_inner, self.dt_rank + 2 * d_state, factory)
        self.dt_proj = Linear(self.dt_rank, self.d_inner, **factory)
        self.dt_bias = nn.Parameter(torch.empty(self.d_inner, **factory))
        fp32 = {"device": device, "dtype": torch.float32}  # kept in float32 whatever ``dtype`` is; see _apply
        self.A_log = no_weight_decay(nn.Parameter(torch.empty(self.d_inner, d_state, **fp32)))
        self.D = no_weight_decay(nn.Parameter(torch.empty(self.d_inner, **fp32)))
        self.out_norm = RMSNorm(self.d_inner, **factory) if out_norm else None
        self.out_proj = self._projection(self.d_inner, d_model, factory)
        self._init_ssm_parameters(dt_min, dt_max, dt_init_floor, out_proj_scale)

    @torch.no_grad()
    def _projection(self, fan_in: int, fan_out: int, factory: dict) -> Linear:
        """A bias-free projection, re-drawn uniform in ``+-1/sqrt(fan_in)`` for ``init="mamba_simple"``."""
        linear = Linear(fan_in, fan_out, **factory)
        if self.init == "mamba_simple":
            bound = 1.0 / math.sqrt(fan_in)
            linear.weight.uniform_(-bound, bound)
        return linear

    @torch.no_grad()
    def _init_ssm_parameters(self, dt_min: float, dt_max: float, dt_init_floor: float, out_proj_scale: float) -> None:
        bound = self.dt_rank**-0.5
        self.dt_proj.weight.uniform_(-bound, bound)
        log_dt = torch.empty_like(self.dt_bias, dtype=torch.float32).uniform_(math.log(dt_min), math.log(dt_max))
        dt = log_dt.exp().clamp(min=dt_init_floor)
        self.dt_bias.copy_(inverse_softplus(dt))
        states = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(states.log().expand(self.d_inner, -1))
        self.D.fill_(1.0)
        self.out_proj.weight.mul_(out_proj_scale)

    def _apply(self, fn, recurse=True):
        """Module casts (``.to(torch.bfloat16)``, ``.half()``) leave ``A_log`` and ``D`` (and their gradients) in
        float32, as ``mamba_simple`` creates them; device moves and casts to float64 apply as usual."""
        keep = {id(t) for p in (self.A_log, self.D) for t in (p, p.grad) if t is not None}

        def guarded(t: Tensor) -> Tensor:
            out = fn(t)
            if id(t) in keep and out.is_floating_point() and torch.finfo(out.dtype).bits < 32:
                return t.to(device=out.device, dtype=torch.float32)
            return out

        return super()._apply(guarded, recurse)

    def make_state(self, batch_size: int) -> MambaState:
        """An empty recurrent state on the parameters' device (conv in their dtype, the SSM state in float32)."""
        conv = self.in_proj.weight.new_zeros(batch_size, self.d_inner, self.d_conv - 1)
        ssm = self.A_log.new_zeros(batch_size, self.d_inner, self.d_state, dtype=torch.float32)
        return MambaState(conv=conv, ssm=ssm)

    def ssm_matrix(self) -> Float[Tensor, "d n"]:
        """``A = -exp(A_log)``, with ``|A|`` floored at ``a_min_magnitude`` when that switch is on."""
        magnitude = self.A_log.float().exp()
        if self.a_min_magnitude is not None:
            magnitude = magnitude.clamp(min=self.a_min_magnitude)
        return -magnitude

    def _scan_dt_arguments(self, dt_raw: Tensor, A: Tensor) -> tuple[Tensor, Tensor | None, bool]:
        """``(delta, delta_bias, delta_softplus)`` for the scan: with no clamp in between, the scan (a fused kernel on
        GPU) applies the bias and softplus itself; otherwise it gets the final, clamped ``dt``."""
        if self.dt_limit is None and self.decay_limit is None:
            return dt_raw.contiguous(), self.dt_bias.float(), True
        return self.step_sizes(dt_raw, A).contiguous(), None, False

    def step_sizes(self, dt_raw: Float[Tensor, "b d *L"], A: Float[Tensor, "d n"]) -> Float[Tensor, "b d *L"]:
        """``dt = softplus(dt_raw + dt_bias)``, then the ``dt_limit`` and ``decay_limit`` clamps when switched on."""
        extra = (1,) * (dt_raw.ndim - 2)
        dt = softplus(dt_raw + self.dt_bias.view(-1, *extra))
        if self.dt_limit is not None:
            dt = dt.clamp(min=self.dt_limit[0], max=self.dt_limit[1])
        if self.decay_limit is not None:
            decay_min, decay_max = self.decay_limit
            magnitude = -A  # (d, n)
            upper = -math.log(decay_min) / magnitude.amax(dim=-1)  # (d,)
            lower = -math.log(decay_max) / magnitude.amin(dim=-1)  # (d,)
            dt = torch.minimum(dt, upper.view(-1, *extra).to(dt.dtype))
            dt = torch.maximum(dt, lower.view(-1, *extra).to(dt.dtype))
        return dt

    def _conv_activation(self, x: Tensor) -> Tensor:
        """SiLU and the optional RMSNorm, applied to conv outputs with channels last."""
        x = silu(x)
        return self.conv_norm(x) if self.conv_norm is not None else x

    def forward(self, x: Float[Tensor, "b L d_model"], state: MambaState | None = None) -> Float[Tensor, "b L d_model"]:
        """Full-sequence pass; with ``state``, continue from it and update it in place (prefill or steps)."""
        if state is not None and state.seen > 0:
            return torch.stack([self.step(x[:, t], state) for t in range(x.shape[1])], dim=1)
        x_in, z = self.in_proj(x).chunk(2, dim=-1)  # (b, L, d_inner) each
        x_in, z = x_in.transpose(1, 2), z.transpose(1, 2)  # (b, d_inner, L)
        u = self._conv_activation(self.conv1d(x_in).transpose(1, 2))  # (b, L, d_inner)
        dt_low, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt_raw = self.dt_proj(dt_low).transpose(1, 2)  # (b, d_inner, L)
        B, C = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # (b, d_state, L)
        u = u.transpose(1, 2).contiguous()  # (b, d_inner, L)
        A = self.ssm_matrix()
        delta, delta_bias, delta_softplus = self._scan_dt_arguments(dt_raw, A)
        scan = partial(selective_scan, return_last_state=state is not None, backend=self.scan_backend)
        scan_args = (u, delta, A, B, C, self.D.float(), z.contiguous(), delta_bias, delta_softplus)
        if self.checkpoint_scan and torch.is_grad_enabled():
            scanned = checkpoint(scan, *scan_args, use_reentrant=False)
        else:
            scanned = scan(*scan_args)
        if state is not None:
            y, last = scanned
            state.ssm.copy_(last)
            state.conv.copy_(conv_state_after(x_in, self.d_conv))
            state.seen += x.shape[1]
        else:
            y = scanned
        return self._output(y.transpose(1, 2))  # (b, L, d_model)

    def _output(self, y: Float[Tensor, "... d_inner"]) -> Float[Tensor, "... d_model"]:
        """``out_proj`` of the gated scan output, RMS-normalised first when ``out_norm`` is on."""
        return self.out_proj(self.out_norm(y) if self.out_norm is not None else y)

    def step(self, x: Float[Tensor, "b d_model"], state: MambaState) -> Float[Tensor, "b d_model"]:
        """One token through the recurrence in O(1): updates ``state`` in place and returns the output."""
        x_in, z = self.in_proj(x).chunk(2, dim=-1)  # (b, d_inner) each
        conv_out, new_conv = self.conv1d.step(x_in, state.conv)
        u = self._conv_activation(conv_out)  # (b, d_inner)
        dt_low, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt_raw = self.dt_proj(dt_low)  # (b, d_inner)
        A = self.ssm_matrix()
        delta, delta_bias, delta_softplus = self._scan_dt_arguments(dt_raw, A)
        y, new_ssm = selective_scan_step(state.ssm, u, delta, A, B, C, self.D.float(), z, delta_bias, delta_softplus)
        state.conv.copy_(new_conv)
        state.ssm.copy_(new_ssm)
        state.seen += 1
        return self._output(y)
