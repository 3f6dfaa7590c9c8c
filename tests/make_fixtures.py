"""Regenerate the snapshot fixtures in ``tests/fixtures/transformer/`` and ``tests/fixtures/adapters/``.

Run from the repository root::

    uv run python -m tests.make_fixtures           # regenerate into a temporary folder and compare, write nothing
    uv run python -m tests.make_fixtures --write   # overwrite the tracked fixtures

``transformer/``: a tiny fixed-seed ``transformer_lm`` (vocab 64, context 16, d_model 32, 2 layers, 4 heads, d_ff 64)
with its weights in the ``docs/ADAPTERS.md`` key layout as a tensor-only ``weights.pt`` (loadable with
``torch.load(..., weights_only=True)``), plus fixed-seed inputs and every nn/Transformer adapter's output on them in
``outputs.npz``.

``adapters/``: the same kind of snapshot for the other numeric adapters: ``run_get_batch`` (global NumPy RNG
seeded, plus a dataset with a single valid window, which is deterministic whatever the sampler), ``get_adamw_cls``
(the parameter trajectory over a few steps of a fixed least-squares problem), ``run_gradient_clipping``,
``run_get_lr_cosine_schedule`` (a vector of its values), ``run_selective_scan`` (reference and chunked backends,
with and without D / z / delta_bias / softplus), ``run_mamba_lm`` and ``run_hybrid_lm``. The two LMs' weights are
tensor-only ``mamba_lm.pt`` / ``hybrid_lm.pt`` in their models' state-dict key layout; inputs and outputs are in
``outputs.npz``.

``tests/test_transformer_fixtures.py`` and ``tests/test_adapter_snapshots.py`` recompute the outputs from the stored
inputs and weights and compare them with explicit tolerances, so any change in the numerics of these components
shows up as a failing test. Regenerate only when such a change is intended, and say why in the commit message.

Determinism: all inputs and weights come from fixed seeds and no file carries a timestamp (``torch.save`` archives
have none; ``.npz`` files are written by :func:`save_npz`, which pins the zip entry dates), so running the script
twice gives byte-identical files. Across torch versions the bytes may differ (the ``torch.save`` container layout,
fixed-seed ``torch`` random streams and float kernels are not guaranteed stable); the stored numbers stay the
reference the tests hold the current code to.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from cs336_basics.models.factory import hybrid_lm, mamba_lm, transformer_lm
from tests import adapters

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "transformer"
CONFIG = {"vocab_size": 64, "context_length": 16, "d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 64}
THETA = 10000.0

ADAPTER_DIR = Path(__file__).parent / "fixtures" / "adapters"
MAMBA_CONFIG = {"vocab_size": 32, "d_model": 16, "num_layers": 2, "d_state": 4, "d_conv": 4, "expand": 2}
HYBRID_CONFIG = {
    "vocab_size": 32,
    "context_length": 16,
    "d_model": 16,
    "num_heads": 2,
    "d_ff": 32,
    "d_state": 4,
    "pattern": "AM",  # one attention and one Mamba layer: both halves of the key layout
    "rope_theta": 10000.0,
}
GET_BATCH_SEED = 7  # np.random.seed before run_get_batch (the adapter takes no generator)
ADAMW_HPARAMS = {"lr": 0.05, "weight_decay": 0.1, "betas": (0.9, 0.95), "eps": 1e-8}
ADAMW_STEPS = 10
COSINE_ARGS = {"max_learning_rate": 1.0, "min_learning_rate": 0.1, "warmup_iters": 5, "cosine_cycle_iters": 20}
COSINE_ITERS = 30  # covers warmup, the cosine and the flat tail after cosine_cycle_iters


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``np.load``-compatible compressed ``.npz`` with fixed entry dates (``np.savez`` stamps the clock)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


def make_inputs() -> dict[str, torch.Tensor]:
    """Fixed-seed inputs of every nn/Transformer adapter call (shapes kept tiny)."""
    generator = torch.Generator().manual_seed(1234)
    randn = lambda *shape: torch.randn(*shape, generator=generator)
    d, v = CONFIG["d_model"], CONFIG["vocab_size"]
    return {
        "features": randn(2, 12, d),  # (B, T, D)
        "token_ids": torch.randint(0, v, (2, 12), generator=generator),  # (B, T)
        "positions": torch.randint(0, CONFIG["context_length"], (2, 12), generator=generator),  # (B, T)
        "q": randn(2, 2, 5, 8),  # (..., q, d_k) with two leading dims
        "k": randn(2, 2, 6, 8),
        "v": randn(2, 2, 6, 4),
        "mask": torch.rand(2, 2, 5, 6, generator=generator) > 0.4,
        "logits": randn(6, v) * 10,  # (batch, vocab)
        "targets": torch.randint(0, v, (6,), generator=generator),
    }


def adapter_outputs(weights: dict[str, torch.Tensor], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every nn/Transformer adapter applied to the fixture weights and inputs."""
    c, w = CONFIG, weights
    d, v, h, d_ff, ctx = c["d_model"], c["vocab_size"], c["num_heads"], c["d_ff"], c["context_length"]
    attn = [w[f"layers.0.attn.{n}_proj.weight"] for n in ("q", "k", "v", "output")]
    block = {k.removeprefix("layers.0."): t for k, t in w.items() if k.startswith("layers.0.")}
    ffn = [w[f"layers.0.ffn.{n}.weight"] for n in ("w1", "w2", "w3")]
    feats = x["features"]
    return {
        "linear": adapters.run_linear(d, d_ff, w["layers.0.ffn.w1.weight"], feats),
        "embedding": adapters.run_embedding(v, d, w["token_embeddings.weight"], x["token_ids"]),
        "swiglu": adapters.run_swiglu(d, d_ff, *ffn, feats),
        "sdpa": adapters.run_scaled_dot_product_attention(x["q"], x["k"], x["v"], x["mask"]),
        "mha": adapters.run_multihead_self_attention(d, h, *attn, feats),
        "mha_rope": adapters.run_multihead_self_attention_with_rope(d, h, ctx, THETA, *attn, feats, x["positions"]),
        "rope": adapters.run_rope(d // h, THETA, ctx, feats[..., : d // h], x["positions"]),
        "rmsnorm": adapters.run_rmsnorm(d, 1e-5, w["layers.0.ln1.weight"], feats),
        "silu": adapters.run_silu(feats),
        "softmax": adapters.run_softmax(x["logits"], dim=-1),
        "cross_entropy": adapters.run_cross_entropy(x["logits"], x["targets"]),
        "transformer_block": adapters.run_transformer_block(d, h, d_ff, ctx, THETA, block, feats),
        "transformer_lm": adapters.run_transformer_lm(
            v, ctx, d, c["num_layers"], h, d_ff, THETA, weights, x["token_ids"]
        ),
    }


def make_adapter_inputs() -> dict[str, torch.Tensor]:
    """Fixed-seed inputs of the other adapter snapshots (shapes kept tiny)."""
    generator = torch.Generator().manual_seed(4321)
    randn = lambda *shape: torch.randn(*shape, generator=generator)
    b, d, n, length = 2, 4, 3, 20  # scan: length 20 spans several chunks of the chunked backend, the last partial
    return {
        "dataset": torch.randint(0, 1000, (40,), generator=generator),  # token ids, stored as uint16 like corpora
        "short_dataset": torch.randint(0, 1000, (9,), generator=generator),  # one valid window at context 8
        "adamw_x": randn(8, 3),  # least squares: minimise mean((x @ w + b - y)^2)
        "adamw_y": randn(8, 2),
        "adamw_w": randn(3, 2),
        "adamw_b": 0.1 * randn(2),
        "clip_p0": randn(4, 3),
        "clip_g0": 3 * randn(4, 3),
        "clip_p1": randn(5),
        "clip_g1": 3 * randn(5),
        "clip_p2": randn(2, 2),  # this parameter gets no gradient: clipping must skip it
        "scan_u": randn(b, d, length),
        "scan_delta": 0.5 * randn(b, d, length),  # raw, used with delta_bias + softplus
        "scan_dt": 0.05 + 0.5 * torch.rand(b, d, length, generator=generator),  # positive, used as is
        "scan_A": -torch.exp(randn(d, n)),
        "scan_B": randn(b, n, length),
        "scan_C": randn(b, n, length),
        "scan_D": randn(d),
        "scan_z": randn(b, d, length),
        "scan_delta_bias": 0.1 * randn(d),
        "mamba_ids": torch.randint(0, MAMBA_CONFIG["vocab_size"], (2, 10), generator=generator),
        "hybrid_ids": torch.randint(0, HYBRID_CONFIG["vocab_size"], (2, 12), generator=generator),
    }


def get_batch_outputs(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``run_get_batch`` with the global NumPy RNG seeded (restored afterwards), and on a single-window dataset."""
    state = np.random.get_state()
    try:
        np.random.seed(GET_BATCH_SEED)
        inputs, targets = adapters.run_get_batch(x["dataset"].numpy().astype(np.uint16), 4, 6, "cpu")
        single_inputs, single_targets = adapters.run_get_batch(x["short_dataset"].numpy(), 3, 8, "cpu")
    finally:
        np.random.set_state(state)
    return {
        "get_batch_inputs": inputs,
        "get_batch_targets": targets,
        "get_batch_single_inputs": single_inputs,
        "get_batch_single_targets": single_targets,
    }


def adamw_outputs(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``(ADAMW_STEPS, 8)``: the flattened ``(w, b)`` after each AdamW step on the fixed least-squares problem."""
    w = torch.nn.Parameter(x["adamw_w"].clone())
    b = torch.nn.Parameter(x["adamw_b"].clone())
    optimizer = adapters.get_adamw_cls()([w, b], **ADAMW_HPARAMS)
    trajectory = []
    for _ in range(ADAMW_STEPS):
        optimizer.zero_grad()
        loss = ((x["adamw_x"] @ w + b - x["adamw_y"]) ** 2).mean()
        loss.backward()
        optimizer.step()
        trajectory.append(torch.cat([w.detach().flatten(), b.detach().flatten()]))
    return {"adamw_trajectory": torch.stack(trajectory)}


def clipping_outputs(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gradients after ``run_gradient_clipping`` with a limit below the global norm (clips) and above it (no-op)."""
    outputs = {}
    for case, max_norm in (("clipped", 1.0), ("unclipped", 1e3)):
        params = [torch.nn.Parameter(x[f"clip_p{i}"].clone()) for i in range(3)]
        params[0].grad = x["clip_g0"].clone()
        params[1].grad = x["clip_g1"].clone()
        adapters.run_gradient_clipping(params, max_norm)
        if params[2].grad is not None:
            raise RuntimeError("run_gradient_clipping gave a gradient to a parameter that had none")
        outputs[f"clip_{case}_g0"], outputs[f"clip_{case}_g1"] = params[0].grad, params[1].grad
    return outputs


def cosine_outputs() -> dict[str, torch.Tensor]:
    """``run_get_lr_cosine_schedule`` at iterations ``0 .. COSINE_ITERS - 1`` (float64)."""
    values = [adapters.run_get_lr_cosine_schedule(it, **COSINE_ARGS) for it in range(COSINE_ITERS)]
    return {"cosine_lr": torch.tensor(values, dtype=torch.float64)}


def scan_outputs(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``run_selective_scan`` per backend: plain (positive dt as given), and with D, z, delta_bias and softplus."""
    u, A, B, C = x["scan_u"], x["scan_A"], x["scan_B"], x["scan_C"]
    outputs = {}
    for backend in ("reference", "chunked"):
        outputs[f"scan_{backend}_plain"] = adapters.run_selective_scan(u, x["scan_dt"], A, B, C, backend=backend)
        outputs[f"scan_{backend}_full"] = adapters.run_selective_scan(
            u,
            x["scan_delta"],
            A,
            B,
            C,
            D=x["scan_D"],
            z=x["scan_z"],
            delta_bias=x["scan_delta_bias"],
            delta_softplus=True,
            backend=backend,
        )
    return outputs


def adapter_snapshot_outputs(
    x: dict[str, torch.Tensor], mamba_weights: dict[str, torch.Tensor], hybrid_weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Every snapshot in ``fixtures/adapters/outputs.npz`` (except the stored inputs), recomputed now."""
    m, h = MAMBA_CONFIG, HYBRID_CONFIG
    with torch.no_grad():
        mamba = adapters.run_mamba_lm(*m.values(), weights=mamba_weights, in_indices=x["mamba_ids"])
        hybrid = adapters.run_hybrid_lm(*h.values(), weights=hybrid_weights, in_indices=x["hybrid_ids"])
        scans = scan_outputs(x)
    return {
        **get_batch_outputs(x),
        **adamw_outputs(x),
        **clipping_outputs(x),
        **cosine_outputs(),
        **scans,
        "mamba_lm": mamba,
        "hybrid_lm": hybrid,
    }


def _fixture_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of ``model``'s state dict, moved off their init where the init would hide a term.

    Norm gains leave 1 and conv biases leave 0; Mamba step sizes ``softplus(dt_bias)`` go from the init's ~0.03 to
    0.3-1, so over the fixtures' ~10 tokens the scan state (A, B, C, dt) visibly shapes the logits rather than
    only the ``D`` skip path.
    """
    weights = {k: t.detach().clone() for k, t in model.state_dict().items()}
    for key, tensor in weights.items():
        if key.endswith(".weight") and tensor.ndim == 1:  # RMSNorm gains
            tensor.copy_(1.0 + 0.1 * torch.randn_like(tensor))
        elif key.endswith("conv1d.bias"):
            tensor.add_(0.1 * torch.randn_like(tensor))
        elif key.endswith("dt_bias"):  # inverse softplus of the target step size
            tensor.copy_(torch.log(torch.expm1(0.3 + 0.7 * torch.rand_like(tensor))))
    return weights


def write_transformer_fixtures(out_dir: Path) -> None:
    torch.manual_seed(0)
    weights = _fixture_weights(transformer_lm(**CONFIG, rope_theta=THETA))
    inputs = make_inputs()
    with torch.no_grad():
        outputs = adapter_outputs(weights, inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out_dir / "weights.pt")
    save_npz(out_dir / "outputs.npz", {f"input_{k}": t.numpy() for k, t in inputs.items()} | _numpy(outputs))
    print(f"wrote {out_dir}/weights.pt and outputs.npz ({len(outputs)} adapter outputs)")


def write_adapter_fixtures(out_dir: Path) -> None:
    torch.manual_seed(0)
    mamba_weights = _fixture_weights(mamba_lm(**MAMBA_CONFIG))
    torch.manual_seed(1)
    hybrid_weights = _fixture_weights(hybrid_lm(**HYBRID_CONFIG))
    inputs = make_adapter_inputs()
    outputs = adapter_snapshot_outputs(inputs, mamba_weights, hybrid_weights)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(mamba_weights, out_dir / "mamba_lm.pt")
    torch.save(hybrid_weights, out_dir / "hybrid_lm.pt")
    save_npz(out_dir / "outputs.npz", {f"input_{k}": t.numpy() for k, t in inputs.items()} | _numpy(outputs))
    print(f"wrote {out_dir}/mamba_lm.pt, hybrid_lm.pt and outputs.npz ({len(outputs)} adapter outputs)")


def _numpy(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: t.detach().numpy() for k, t in tensors.items()}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(
        prog="python -m tests.make_fixtures",
        description="Regenerate the snapshot fixtures of tests/fixtures/transformer and tests/fixtures/adapters. "
        "Without --write they are built in a temporary folder and compared byte for byte with the tracked files.",
    )
    parser.add_argument(
        "--write", action="store_true", help="overwrite the tracked fixtures (only when a numerics change is intended)"
    )
    args = parser.parse_args(argv)
    if args.write:
        write_transformer_fixtures(FIXTURE_DIR)
        write_adapter_fixtures(ADAPTER_DIR)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        pairs = [(FIXTURE_DIR, Path(tmp) / "transformer"), (ADAPTER_DIR, Path(tmp) / "adapters")]
        write_transformer_fixtures(pairs[0][1])
        write_adapter_fixtures(pairs[1][1])
        changed = [
            str(tracked / path.name)
            for tracked, fresh in pairs
            for path in sorted(fresh.iterdir())
            if not (tracked / path.name).is_file() or (tracked / path.name).read_bytes() != path.read_bytes()
        ]
    if changed:  # float noise across torch versions / CPUs also shows here; the tests compare with tolerances
        print(f"these files would differ byte-wise from the tracked ones: {', '.join(changed)}")
    else:
        print("tracked fixtures are up to date (byte-identical)")
    print("nothing written; pass --write to overwrite the tracked fixtures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
