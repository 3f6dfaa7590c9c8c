"""Building a block's feed-forward network from an :class:`~cs336_basics.models.spec.FFNSpec`: one place for the
dense choices (SwiGLU, SiLU, none) and the sparse one (a mixture of experts)."""

from __future__ import annotations

from torch import nn

from cs336_basics.models.moe import MoEFeedForward
from cs336_basics.models.spec import FFNSpec
from cs336_basics.nn.layers import Identity, SiLUFFN, SwiGLU, default_swiglu_d_ff


def default_d_ff(d_model: int, kind: str = "swiglu") -> int:
    """The default FFN width: SwiGLU's ~8/3 d_model (rounded up to a multiple of 64), and for the two-matrix SiLU FFN
    1.5x that, so an ablation that swaps the FFN type keeps exactly the same parameter count at every ``d_model``
    (3 x d_model x d_ff for SwiGLU = 2 x d_model x 1.5 d_ff for SiLU)."""
    if kind not in ("swiglu", "silu"):
        raise ValueError(f"ffn must be 'swiglu' or 'silu', got {kind!r}")
    swiglu_d_ff = default_swiglu_d_ff(d_model)
    return swiglu_d_ff if kind == "swiglu" else 3 * swiglu_d_ff // 2


def build_moe_ffn(d_model: int, spec: FFNSpec) -> MoEFeedForward | None:
    """The MoE feed-forward ``spec`` asks for, or None for a dense (or absent) FFN.

    Blocks build it before their mixer, and a dense FFN after it: that is the parameter-initialisation order of the
    runs the experiment log reports, which the golden-loss tests pin.
    """
    moe = spec.moe
    if moe is None:
        return None
    return MoEFeedForward(
        d_model,
        num_experts=moe.num_experts,
        top_k=moe.top_k,
        d_ff=moe.d_ff if moe.d_ff is not None else spec.d_ff,
        load_balance_weight=moe.load_balance_weight,
        z_loss_weight=moe.z_loss_weight,
        balance_convention=moe.balance_convention,
        router_init=moe.router_init,
        router_init_scale=moe.router_init_scale,
    )


def build_dense_ffn(d_model: int, spec: FFNSpec) -> nn.Module | None:
    """The dense feed-forward ``spec`` asks for (None for ``kind="none"``; the identity for ``kind="identity"``)."""
    if spec.kind == "none":
        return None
    if spec.kind == "identity":
        return Identity()
    d_ff = default_d_ff(d_model, spec.kind) if spec.d_ff is None else spec.d_ff
    return SwiGLU(d_model, d_ff) if spec.kind == "swiglu" else SiLUFFN(d_model, d_ff)
