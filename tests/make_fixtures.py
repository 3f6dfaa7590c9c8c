"""Regenerate the Transformer reference fixtures in ``tests/fixtures/transformer/``.

Run from the repository root::

    uv run python -m tests.make_fixtures

It builds a tiny fixed-seed ``TransformerLM`` (vocab 64, context 16, d_model 32, 2 layers, 4 heads, d_ff 64), saves
its weights in the ``shared/docs/ADAPTERS.md`` key layout as a tensor-only ``weights.pt`` (loadable with
``torch.load(..., weights_only=True)``), and saves fixed-seed inputs plus every nn/Transformer adapter's output on
them to ``outputs.npz``. ``tests/test_transformer_fixtures.py`` recomputes the outputs and compares them with
explicit tolerances, so any change in the numerics of these components shows up as a failing test. Regenerate
only when such a change is intended, and say why in the commit message.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cs336_basics.models.transformer import TransformerLM
from tests import adapters

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "transformer"
CONFIG = {"vocab_size": 64, "context_length": 16, "d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 64}
THETA = 10000.0


def make_inputs() -> dict[str, torch.Tensor]:
    """Fixed-seed inputs of every adapter call (shapes kept tiny)."""
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


def main() -> None:
    torch.manual_seed(0)
    model = TransformerLM(**CONFIG, rope_theta=THETA)
    with torch.no_grad():  # non-trivial norm gains so the fixtures exercise them
        for param in model.parameters():
            if param.ndim == 1:
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
    weights = {k: t.detach().clone() for k, t in model.state_dict().items()}
    inputs = make_inputs()
    with torch.no_grad():
        outputs = adapter_outputs(weights, inputs)
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(weights, FIXTURE_DIR / "weights.pt")
    arrays = {f"input_{k}": t.numpy() for k, t in inputs.items()} | {k: t.numpy() for k, t in outputs.items()}
    np.savez_compressed(FIXTURE_DIR / "outputs.npz", **arrays)
    print(f"wrote {FIXTURE_DIR}/weights.pt and outputs.npz ({len(outputs)} adapter outputs)")


if __name__ == "__main__":
    main()
