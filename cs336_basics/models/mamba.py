"""The Mamba block, plan letter ``M``: ``x + mixer(RMSNorm(x))``, then ``x + ffn(RMSNorm(x))`` when an FFN is set.

A pure Mamba language model is the plan ``"M" * num_layers`` with no FFN (``ffn.kind="none"``, Mamba's own design);
in hybrids the ``M`` layers carry the same SwiGLU (or MoE) FFN as the attention layers.

- Residual scaling: the mixer's ``out_proj`` and a dense FFN's ``w2`` are scaled at init by
  ``1/sqrt(branches_per_layer * num_layers)`` (GPT-2 / ``mixer_seq_simple`` "rescale prenorm residual" style), so the
  residual stream's variance at init does not grow with depth. The mixer itself follows ``mamba_simple`` rule by rule
  (``ssm.init="mamba_simple"``, see :mod:`~cs336_basics.models.mamba_block`); what stays the project's own: the
  token embedding (CS336 init, std 1; the reference LM draws N(0, 0.02)), the norms (RMSNorm, as the reference with
  ``rms_norm=True``) and a dense FFN (CS336 ``Linear`` init, where the reference re-draws an MLP's ``fc2`` like
  ``out_proj``).
- Decoding state: a :class:`~cs336_basics.models.mamba_block.MambaState` (conv state ``(b, d_inner, d_conv - 1)``,
  SSM state ``(b, d_inner, d_state)``), whose size does not depend on the sequence length.

Keys (``d_inner = expand * d_model``, ``R = dt_rank = ceil(d_model / 16)``, ``n = d_state``):

| key | shape |
| --- | --- |
| ``norm.weight`` | (d_model,) |
| ``mixer.in_proj.weight`` | (2 d_inner, d_model); rows ``[:d_inner]`` are x, ``[d_inner:]`` the gate z |
| ``mixer.conv1d.weight`` / ``.bias`` | (d_inner, d_conv) / (d_inner,); the last tap is the current token |
| ``mixer.x_proj.weight`` | (R + 2n, d_inner); rows are ``[dt_low, B, C]`` |
| ``mixer.dt_proj.weight`` | (d_inner, R) |
| ``mixer.dt_bias`` | (d_inner,) |
| ``mixer.A_log`` | (d_inner, n) |
| ``mixer.D`` | (d_inner,) |
| ``mixer.out_proj.weight`` | (d_model, d_inner) |
| ``mixer.conv_norm.weight`` | (d_inner,); only with ``conv_norm=True`` |
| ``mixer.out_norm.weight`` | (d_inner,); only with ``out_norm=True`` |
| ``ffn_norm.weight``, ``ffn.w1/w2/w3.weight`` | only with an FFN |
"""

from __future__ import annotations

import math

import torch

from cs336_basics.models.block import Block, Branch, register_block
from cs336_basics.models.ffn import build_dense_ffn, build_moe_ffn
from cs336_basics.models.mamba_block import MambaBlock, MambaState
from cs336_basics.models.spec import ModelSpec, SSMSpec
from cs336_basics.nn.layers import RMSNorm


def mamba_mixer(d_model: int, ssm: SSMSpec, out_proj_scale: float = 1.0) -> MambaBlock:
    """The Mamba mixer an :class:`SSMSpec` describes."""
    return MambaBlock(
        d_model,
        ssm.d_state,
        ssm.d_conv,
        ssm.expand,
        dt_rank=ssm.dt_rank,
        scan_backend=ssm.scan_backend,
        out_proj_scale=out_proj_scale,
        dt_limit=ssm.dt_limit,
        a_min_magnitude=ssm.a_min_magnitude,
        conv_norm=ssm.conv_norm,
        out_norm=ssm.out_norm,
        decay_limit=ssm.decay_limit,
        checkpoint_scan=ssm.checkpoint_scan,
        init=ssm.init,
    )


@register_block("M")
class MambaLayer(Block):
    """Pre-norm residual Mamba layer with an optional FFN; see the module docstring."""

    def __init__(self, spec: ModelSpec, layer: int) -> None:
        super().__init__()
        d = spec.d_model
        moe = build_moe_ffn(d, spec.ffn)
        dense = build_dense_ffn(d, spec.ffn) if moe is None else None
        ffn = moe if moe is not None else dense
        scale = 1.0 / math.sqrt((1 if ffn is None else 2) * spec.num_layers)
        self.norm = RMSNorm(d)
        self.mixer = mamba_mixer(d, spec.ssm, out_proj_scale=scale)
        self.ffn_norm = RMSNorm(d) if ffn is not None else None
        self.ffn = ffn
        if dense is not None and hasattr(dense, "w2"):  # the identity FFN has no output projection to scale
            with torch.no_grad():
                dense.w2.weight.mul_(scale)
        self.init_residual(spec, ("mixer", "ffn") if ffn is not None else ("mixer",))

    def make_state(self, batch_size: int, capacity: int) -> MambaState:
        return self.mixer.make_state(batch_size)

    def branches(self, state: MambaState | None) -> list[Branch]:
        out = [Branch("mixer", lambda h: self.mixer(self.norm(h), state=state))]
        if self.ffn is not None:
            out.append(Branch("ffn", lambda h: self.ffn(self.ffn_norm(h))))
        return out
