"""How the study plots name a model: the architecture (a hybrid by its layer pattern) plus every setting that makes it
a variant, so that a variant is never drawn, or pooled into one line, as its base model.

Shared by ``plot_accuracy``, ``plot_scaling`` and ``plot_lr``. A setting that only tunes a variant (mHC's initial
residual logit, an MoE's loss coefficients) is not named; runs that differ in it and are pooled anyway are refused by
``seed_pooling.check_seeds`` with the setting named.
"""

from __future__ import annotations


def variant_label(setting: dict | None, summary: dict) -> str:
    """The model as a plot line names it, from a run's flattened, completed config (``seed_pooling.training_setting``,
    None for a run without ``config.json``: then the architecture alone) and its ``summary.json``: hybrids with their
    pattern, plus ``+conv4`` for a short convolution before attention, ``(ssm conv 1)`` for an SSM without its time
    convolution, ``+out norm`` for Mamba-2's output norm, ``(ssm branch only)`` for a one-branch Hymba, ``+4 meta
    tokens`` for meta tokens outside Hymba (which has them), ``+MoE 8x top-2`` for a mixture-of-experts FFN and
    ``+mHC`` for manifold-constrained hyper-connections."""
    s = setting or {}
    arch = summary.get("architecture") or s.get("model.architecture") or "?"
    pattern = summary.get("pattern") or s.get("model.pattern")
    label = f"{arch} {pattern}" if arch == "hybrid" and pattern else arch
    if short_conv := s.get("model.attention.short_conv"):
        label += f" +conv{short_conv}"
    if s.get("model.ssm.d_conv") == 1:
        label += " (ssm conv 1)"
    if s.get("model.ssm.out_norm"):
        label += " +out norm"
    meta = s.get("model.num_meta_tokens") or 0
    if arch == "hymba" and (branches := s.get("model.hymba.branches", "both")) != "both":
        label += f" ({branches} branch only{'' if meta else ', no meta tokens'})"
    elif arch != "hymba" and meta:
        label += f" +{meta} meta tokens"
    if experts := s.get("model.ffn.moe.num_experts"):
        label += f" +MoE {experts}x top-{s['model.ffn.moe.top_k']}"
    if s.get("model.residual.kind") == "mhc":
        label += " +mHC"
    return label
