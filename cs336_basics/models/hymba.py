"""The Hymba block, plan letter ``H``: attention and SSM heads side by side in one layer (Dong et al., 2024).

What the paper and the NVlabs reference code (``barebones_hymba_block.py``; ``modeling_hymba.py`` of Hymba-1.5B)
do in one layer, for input ``x`` (``d_model`` wide) and the SSM's inner width ``I = expand * d_model``:

1. one input projection gives the attention's Q, K, V and the Mamba branch's input and gate, all at width ``I``
   (the attention heads have ``head_dim = I / num_heads``);
2. the attention heads (RoPE, or ``attention.positions`` as in ``A`` blocks; sliding window in most layers, the meta
   tokens always visible; no output projection) and the Mamba heads (conv, selective scan, gate; no output
   projection) run on the same input;
3. each branch output is RMS-normalised with a learned per-channel scale (the paper's ``beta_1``, ``beta_2``; in the
   reference code the gains of ``pre_avg_layernorm1/2``), the two are averaged (the reference divides the sum by 2;
   with learned scales the factor only rescales beta), and one output projection ``I -> d_model`` follows:
   ``y = W_out ((beta_1 * norm(attn) + beta_2 * norm(ssm)) / 2)``.

``hymba.fusion="paper"`` (default) is exactly that structure: ``attn`` projects Q/K/V ``d_model -> I`` and has no
output projection, the Mamba mixer's own ``out_proj`` is removed, each branch is normalised without a gain and scaled
by ``beta_attn`` / ``beta_ssm`` (initialised to one, the reference's norm-weight init: one scale per channel, not a
gain times a beta), then ``out_proj`` (``I -> d_model``). Remaining deviations from the reference, all outside the
fusion: Q/K/V and the Mamba input are separate projections, bias-free by default (the reference's single
``in_proj`` is their concatenation, with a bias; ``attention.bias`` gives Q/K/V biases, and ``attention.dropout``
drops attention weights in training, as in ``A`` blocks); attention is full multi-head (Hymba-1.5B uses
grouped-query attention, 5 K/V heads for 25 query heads); the Mamba mixer is this project's Mamba-1 block (no
dt/B/C RMSNorms as in Hymba-1.5B's ``mamba_inner_layernorms``); ``out_proj`` has this project's ``Linear`` init
(truncated normal, ``std = sqrt(2 / (fan_in + fan_out))``; the reference: normal, std 0.02); Hymba-1.5B slides 1024
positions and the minimal reference 2048 of 4096, here ``attention.window="auto"`` gives half the context
(:func:`~cs336_basics.models.spec.hymba_default_window`) in all but the first, middle and last layer, and a window
``w`` covers ``w`` positions including the query itself (the reference's mask ``q - k <= w`` covers ``w + 1``).

``hymba.fusion="projected"`` is the layout of this project's earlier Hymba runs: attention at ``d_model`` with its own
output projection, the Mamba mixer with its ``out_proj``, RMSNorms with gains *and* ``beta`` (the scale counted
twice), then an extra ``d_model x d_model`` ``out_proj``. With ``attention.window=None`` (all global) it reproduces
those runs exactly.

``hymba.kv_sharing=True``: cross-layer KV sharing as in Hymba-1.5B (``kv_reuse_group``): within each run of
consecutive non-global layers, pairs of layers share one set of keys and values (a run of odd length starts with a
group of three; :meth:`~cs336_basics.models.spec.ModelSpec.kv_producer`). The first layer of a group (the producer)
computes K/V and keeps the KV cache; the others project only Q and attend over the producer's post-RoPE keys, so
they have no ``attn.k_proj``/``attn.v_proj`` and no KV cache. Measured (exact counts, ``uv run python
benchmarks/bench_hymba_kv_sharing.py``; d_model 104, 4 heads, expand 2, d_ff 312, vocab 256, 8 meta tokens, context
128, KV cache for batch 16 in float32): 4 layers (global 0, 2, 3): nothing to share; 8 layers (global 0, 4, 7;
consumers 2, 3, 6): parameters 1,991,080 -> 1,861,288 (-6.5%), KV cache 27.62 -> 17.27 MiB (0.62x); 32 layers
(15 consumers): 7,801,768 -> 7,152,808 (-8.3%), 110.50 -> 58.70 MiB (0.53x). The KV cache of a sliding-window layer
still holds every position (Hymba-1.5B keeps only the window and the meta tokens), so sliding windows save compute
here, not cache memory.

``hymba.branches="ssm"`` (or ``"attention"``): an ablation, not in the paper. The layer is built without the other
branch (no ``attn.*`` and ``beta_attn``, or no ``mixer.*`` and ``beta_ssm``) and computes the same formula with that
term removed, ``y = W_out(beta_2 * norm(ssm) / 2)``: exactly the two-branch layer with the absent branch's ``beta``
held at zero through training (tested), so it shows what one branch learns on its own inside the Hymba layer
(learned absolute positions, ``attention.positions="learned"``, are the shell's and are still added to the input). A
knockout after training (``mqar_by_query --zero``) shows instead what a branch does in a model trained with both.

Diagnostics (``diagnostics()``, logged as ``diag/hymba/layer{i}/...``): ``scale_share_attn`` / ``scale_share_ssm``
are the shares of the per-channel scale each branch really gets after normalisation,
``mean|g_attn * beta_attn| / (mean|g_attn * beta_attn| + mean|g_ssm * beta_ssm|)`` with ``g`` the branch norm's gain
(no gain, i.e. one, under paper fusion); ``beta_share_attn`` uses ``beta`` alone, a proxy that ignores the gains
(the only share logged before). Both are magnitudes of scales, not of the branches' contributions to the output; a
one-branch layer logs none.
:func:`branch_shares` is the one computation (also used on checkpoints by
``assignment_experiments.studies.hymba_branch_shares``).

Decoding state: ``(KVCache or None, MambaState or None)`` (None for a branch the layer does not have, and for the
KV cache of a KV-sharing consumer). Keys (paper): ``norm``, ``attn.{q,k,v}_proj``, ``mixer.*`` (no
``mixer.out_proj``), ``beta_attn``, ``beta_ssm``, ``out_proj``, ``ffn_norm``, ``ffn.*``; projected adds
``attn.output_proj``, ``mixer.out_proj``, ``attn_norm``, ``ssm_norm``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from cs336_basics.models.block import Block, Branch, register_block
from cs336_basics.models.ffn import build_dense_ffn, build_moe_ffn
from cs336_basics.models.mamba import mamba_mixer
from cs336_basics.models.mamba_block import MambaState
from cs336_basics.models.spec import ModelSpec
from cs336_basics.nn.attention import CausalMultiHeadSelfAttention, KVCache
from cs336_basics.nn.layers import Identity, Linear, RMSNorm

NORM_EPS = 1e-5  # as RMSNorm


def rms_normalize(x: Float[Tensor, "... d"], eps: float = NORM_EPS) -> Float[Tensor, "... d"]:
    """``x / sqrt(mean(x^2) + eps)`` over the last dimension, in float32 (an RMSNorm without a gain)."""
    in_dtype = x.dtype
    x = x.float()
    return (x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)).to(in_dtype)


def branch_shares(
    beta_attn: Tensor, beta_ssm: Tensor, gain_attn: Tensor | None = None, gain_ssm: Tensor | None = None
) -> dict[str, float]:
    """The branch shares of one Hymba layer from its scales (see the module docstring).

    ``scale_share_*`` uses the effective per-channel scale ``gain * beta`` (``gain`` None: no gain, i.e. one);
    ``beta_share_attn`` uses ``beta`` alone. Shares of a pair sum to one.
    """
    beta_a, beta_s = beta_attn.detach().float(), beta_ssm.detach().float()
    eff_a = beta_a * gain_attn.detach().float() if gain_attn is not None else beta_a
    eff_s = beta_s * gain_ssm.detach().float() if gain_ssm is not None else beta_s
    a, s = eff_a.abs().mean(), eff_s.abs().mean()
    ba, bs = beta_a.abs().mean(), beta_s.abs().mean()
    scale_share_attn = float(a / (a + s))
    return {
        "scale_share_attn": scale_share_attn,
        "scale_share_ssm": 1.0 - scale_share_attn,
        "beta_share_attn": float(ba / (ba + bs)),
    }


@register_block("H")
class HymbaLayer(Block):
    """Parallel attention + SSM heads, normalised and beta-scaled, averaged, one output projection; then an FFN."""

    uses_positions = True
    diagnostics_group = "hymba"

    def __init__(self, spec: ModelSpec, layer: int) -> None:
        super().__init__()
        d, attn, hymba = spec.d_model, spec.attention, spec.hymba
        self.fusion = hymba.fusion
        paper = hymba.fusion == "paper"
        inner = spec.ssm.expand * d if paper else d
        has_attn, has_ssm = hymba.branches != "ssm", hymba.branches != "attention"
        self.kv_producer = spec.kv_producer(layer)
        self.shares_kv = self.kv_producer != layer  # a consumer: attends over the producer's keys and values
        # A producer keeps its last keys/values for the consumers that follow it in its group.
        keep_kv = any(spec.kv_producer(j) == layer for j in range(layer + 1, spec.num_layers))
        # The group's last consumer drops the producer's kept keys/values once it has used them.
        self.clears_kv = self.shares_kv and all(
            spec.kv_producer(j) != self.kv_producer for j in range(layer + 1, spec.num_layers)
        )
        moe = build_moe_ffn(d, spec.ffn)
        self.norm = RMSNorm(d)
        # A branch the layer does not have (hymba.branches) is None, with no beta and no norm. Creation order is the
        # two-branch layer's (attention, mixer, norms, betas), so its random draws and parameter order are unchanged.
        self.attn = self.mixer = self.attn_norm = self.ssm_norm = self.beta_attn = self.beta_ssm = None
        if has_attn:
            self.attn = CausalMultiHeadSelfAttention(
                d,
                attn.num_heads,
                inner_dim=inner,
                output_proj=not paper,
                kv_proj=not self.shares_kv,
                keep_kv=keep_kv,
                **spec.attention_options(layer),
            )
        if has_ssm:
            self.mixer = mamba_mixer(d, spec.ssm)
            if paper:
                self.mixer.out_proj = Identity()  # the one output projection below replaces it
        if not paper:
            self.attn_norm = RMSNorm(d) if has_attn else None
            self.ssm_norm = RMSNorm(d) if has_ssm else None
        if has_attn:
            self.beta_attn = nn.Parameter(torch.ones(inner))
        if has_ssm:
            self.beta_ssm = nn.Parameter(torch.ones(inner))
        self.out_proj = Linear(inner, d)
        self.ffn_norm = RMSNorm(d)
        self.ffn = moe if moe is not None else build_dense_ffn(d, spec.ffn)
        self.uses_positions = has_attn and attn.positions != "none"
        self.init_residual(spec, ("mixer", "ffn"))
        self._producer: list[HymbaLayer] = []  # set by connect(); a list so the producer is not a submodule

    def connect(self, layers: list[Block]) -> None:
        """Find this layer's K/V producer among the model's layers (cross-layer KV sharing)."""
        self._producer = [layers[self.kv_producer]] if self.shares_kv else []

    def make_state(self, batch_size: int, capacity: int) -> tuple[KVCache | None, MambaState | None]:
        kv = None if self.shares_kv or self.attn is None else self.attn.make_cache(batch_size, capacity)
        return kv, None if self.mixer is None else self.mixer.make_state(batch_size)

    def branch_shares(self) -> dict[str, float]:
        """:func:`branch_shares` of this layer's scales (and, under projected fusion, its norm gains)."""
        if self.attn is None or self.mixer is None:
            raise ValueError("branch shares need both branches; this layer was built with hymba.branches != 'both'")
        gains = (self.attn_norm.weight, self.ssm_norm.weight) if self.attn_norm is not None else (None, None)
        return branch_shares(self.beta_attn, self.beta_ssm, *gains)

    def diagnostics(self) -> dict[str, float]:
        return {} if self.attn is None or self.mixer is None else self.branch_shares()

    def _attention(self, h: Float[Tensor, "b T d"], kv: KVCache | None) -> Tensor:
        if not self.shares_kv:
            return self.attn(h, None, kv)
        if not self._producer:
            raise RuntimeError("a KV-sharing Hymba layer needs connect(layers) before use (LanguageModel does it)")
        producer = self._producer[0].attn
        if producer.last_kv is None:
            raise RuntimeError(f"layer {self.kv_producer} (the K/V producer) must run before this layer")
        out = self.attn(h, None, None, shared_kv=producer.last_kv)
        if self.clears_kv:
            producer.last_kv = None
        return out

    def fuse(
        self, h: Float[Tensor, "b T d"], state: tuple[KVCache | None, MambaState | None] | None
    ) -> Float[Tensor, "b T d"]:
        """The mixer branch: the layer's heads on the normalised input, each normalised and scaled, summed and halved
        (the average of two branches; a one-branch layer keeps the factor), projected."""
        kv, ssm_state = state if state is not None else (None, None)
        h = self.norm(h)
        terms = []  # beta * norm(branch output), (b, T, I) each
        if self.attn is not None:
            a = self._attention(h, kv)
            terms.append(self.beta_attn * (rms_normalize(a) if self.attn_norm is None else self.attn_norm(a)))
        if self.mixer is not None:
            s = self.mixer(h, state=ssm_state)
            terms.append(self.beta_ssm * (rms_normalize(s) if self.ssm_norm is None else self.ssm_norm(s)))
        return self.out_proj(0.5 * sum(terms))

    def branches(self, state: tuple[KVCache | None, MambaState | None] | None) -> list[Branch]:
        out = [Branch("mixer", lambda h: self.fuse(h, state))]
        if self.ffn is not None:
            out.append(Branch("ffn", lambda h: self.ffn(self.ffn_norm(h))))
        return out
