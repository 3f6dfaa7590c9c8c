"""A small Vision Transformer classifier whose residual connections are standard or mHC hyper-connections.

It exists to compare residual choices (``residual="standard"`` vs ``"mhc"``) on a task other than language
modelling (CIFAR-10, see :mod:`assignment_experiments.studies.cifar10`):

- images ``(B, C, H, W)`` are cut into non-overlapping ``patch_size`` squares, each flattened and projected to
  ``d_model`` (``patch_embed``), plus a learned position embedding per patch;
- ``num_layers`` pre-norm blocks of bidirectional multi-head attention (no mask: every patch sees every patch) and
  SwiGLU; with ``residual="mhc"`` each attention branch and each FFN branch is wrapped by a
  :class:`~cs336_basics.models.hyper_connections.HyperConnection` over ``hc_expansion`` streams;
- final RMSNorm, mean over patches, linear ``head`` to class logits.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from cs336_basics.models.base import no_weight_decay
from cs336_basics.models.hyper_connections import HyperConnection, collapse_streams, expand_streams
from cs336_basics.nn.attention import scaled_dot_product_attention
from cs336_basics.nn.layers import Linear, RMSNorm, SwiGLU


def patchify(images: Float[Tensor, "B C H W"], patch_size: int) -> Float[Tensor, "B N P"]:
    """Non-overlapping patches in row-major order, each flattened channel-first: ``(B, H/p * W/p, C p p)``."""
    B, C, H, W = images.shape
    if H % patch_size or W % patch_size:
        raise ValueError(f"image size {H}x{W} is not divisible by patch_size={patch_size}")
    x = images.reshape(B, C, H // patch_size, patch_size, W // patch_size, patch_size)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, H/p, W/p, C, p, p)
    return x.reshape(B, (H // patch_size) * (W // patch_size), C * patch_size * patch_size)


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention; keys q_proj, k_proj, v_proj, output_proj."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.q_proj, self.k_proj = Linear(d_model, d_model), Linear(d_model, d_model)
        self.v_proj, self.output_proj = Linear(d_model, d_model), Linear(d_model, d_model)

    def forward(self, x: Float[Tensor, "B N d"]) -> Float[Tensor, "B N d"]:
        B, N, d = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(B, N, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, h, N, hd)

        y = scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)))
        return self.output_proj(y.transpose(1, 2).reshape(B, N, d))


class ViTBlock(nn.Module):
    """Pre-norm attention + SwiGLU block; its two residual branches are exposed for hyper-connections."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int | None = None) -> None:
        super().__init__()
        self.ln1, self.attn = RMSNorm(d_model), SelfAttention(d_model, num_heads)
        self.ln2, self.ffn = RMSNorm(d_model), SwiGLU(d_model, d_ff)

    def attn_branch(self, x: Tensor) -> Tensor:
        return self.attn(self.ln1(x))

    def ffn_branch(self, x: Tensor) -> Tensor:
        return self.ffn(self.ln2(x))

    def forward(self, x: Float[Tensor, "B N d"]) -> Float[Tensor, "B N d"]:
        x = x + self.attn_branch(x)
        return x + self.ffn_branch(x)


class ViTClassifier(nn.Module):
    """Images ``(B, C, H, W)`` -> class logits ``(B, num_classes)``; see the module docstring."""

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        in_channels: int = 3,
        num_classes: int = 10,
        d_model: int = 64,
        num_layers: int = 4,
        num_heads: int = 4,
        d_ff: int | None = None,
        residual: str = "standard",
        hc_expansion: int = 4,
        sinkhorn_iters: int = 20,
    ) -> None:
        super().__init__()
        if residual not in ("standard", "mhc"):
            raise ValueError(f"residual must be 'standard' or 'mhc', got {residual!r}")
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not divisible by patch_size={patch_size}")
        self.patch_size, self.residual, self.hc_expansion = patch_size, residual, hc_expansion
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = Linear(in_channels * patch_size * patch_size, d_model)
        self.pos_embed = no_weight_decay(nn.Parameter(torch.randn(num_patches, d_model) * 0.02))  # a table, not a map
        self.layers = nn.ModuleList(ViTBlock(d_model, num_heads, d_ff) for _ in range(num_layers))
        if residual == "mhc":
            self.hyper = nn.ModuleList(
                nn.ModuleDict({b: HyperConnection(None, hc_expansion, sinkhorn_iters) for b in ("attn", "ffn")})
                for _ in range(num_layers)
            )
        self.ln_final = RMSNorm(d_model)
        self.head = Linear(d_model, num_classes)

    def forward(self, images: Float[Tensor, "B C H W"]) -> Float[Tensor, "B classes"]:
        x = self.patch_embed(patchify(images, self.patch_size)) + self.pos_embed  # (B, N, d)
        if self.residual == "mhc":
            streams = expand_streams(x, self.hc_expansion)  # (B, N, n, d)
            for block, hyper in zip(self.layers, self.hyper, strict=True):
                streams = hyper["attn"].mix(streams, block.attn_branch)
                streams = hyper["ffn"].mix(streams, block.ffn_branch)
            x = collapse_streams(streams)
        else:
            for block in self.layers:
                x = block(x)
        return self.head(self.ln_final(x).mean(dim=1))
