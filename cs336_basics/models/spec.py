"""The typed description of a language model: a layer plan plus one sub-spec per concept.

A :class:`ModelSpec` is everything :class:`~cs336_basics.models.language_model.LanguageModel` needs to build a model:

- ``plan``: one letter per layer, each naming a registered block type (``A`` attention, ``M`` Mamba, ``H`` Hymba
  parallel heads; see :mod:`~cs336_basics.models.block`). A Transformer is ``"A" * n``, Mamba ``"M" * n``, a hybrid
  any mix such as ``"AMAM"``, Hymba ``"H" * n``.
- the shell's own settings: vocabulary, width, context length, normalisation placement, tied embeddings, meta tokens;
- :class:`AttentionSpec`, :class:`SSMSpec`, :class:`FFNSpec` (dense or :class:`MoESpec`), :class:`ResidualSpec`
  (plain or mHC residual, optional fast-weight branch) and :class:`HymbaSpec` (how ``H`` layers fuse their heads and
  share K/V): each block reads the sub-specs it needs.

Every value is checked in :meth:`ModelSpec.validate`, without building anything, so a config can be rejected before
any data is prepared. The sub-specs are plain dataclasses so a JSON config maps onto them one section at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

NORMS = ("pre", "post", "none")
POSITIONS = ("rope", "learned", "none")
FFN_KINDS = ("swiglu", "silu", "identity", "none")
NORM_LAYERS = ("rmsnorm", "layernorm")
INITS = ("cs336", "gpt2")
RESIDUALS = ("standard", "mhc")
HYMBA_FUSIONS = ("paper", "projected")
HYMBA_BRANCHES = ("both", "attention", "ssm")


def hymba_default_window(context_length: int | None) -> int:
    """The sliding window ``window="auto"`` gives Hymba layers: half the context (at least one position).

    NVlabs' minimal Hymba reference slides 2048 of its 4096 positions (Hymba-1.5B: 1024); half the context keeps
    that ratio at this project's short contexts (64 at 128 positions, 32 at 64).
    """
    return max(1, (context_length or 0) // 2)


@dataclass
class AttentionSpec:
    """Causal multi-head attention in ``A`` and ``H`` blocks.

    ``window`` makes attention sliding-window (the meta tokens stay visible) on every attention layer except
    ``global_layers`` (layer indices; ``None`` means the first, middle and last layer, Hymba's schedule):

    - ``"auto"`` (default): each block type's own default: ``H`` (Hymba) layers follow the paper's schedule with
      :func:`hymba_default_window`, ``A`` layers are global;
    - an int: that window on every non-global attention layer;
    - ``None`` (``null`` in a config): every layer global (what every Hymba run before the paper schedule used).

    ``short_conv`` (``A`` blocks): kernel size of a causal depthwise convolution applied to the attention input before
    the q/k/v projections (0 = none). It hands attention each token's recent neighbours, the feature an SSM's
    convolution gives Hymba and a Mamba layer for free (H3 and Based put such a short convolution before their
    attention-like mixers); the recall study uses it to test that explanation.

    ``position_std``: initial std of the learned absolute position table (``positions="learned"``). The default 0.02
    is GPT-2's; Zoology starts positions and tokens at the same std, so that the position signal is not drowned.

    ``bias``: the Q/K/V and output projections have (zero-initialised) biases, as in GPT-2 and Zoology's ``MHA``.
    ``dropout``: probability of dropping an attention weight in training (Zoology's MQAR runs: 0.1).
    """

    num_heads: int = 4
    rope_theta: float = 10000.0
    positions: Literal["rope", "learned", "none"] = "rope"
    backend: Literal["naive", "torch_sdpa"] = "naive"
    window: int | Literal["auto"] | None = "auto"
    global_layers: list[int] | None = None
    short_conv: int = 0
    position_std: float = 0.02
    bias: bool = False
    dropout: float = 0.0


@dataclass
class SSMSpec:
    """The Mamba mixer of ``M`` and ``H`` blocks (see :mod:`~cs336_basics.models.mamba_block` for each switch).

    ``init="mamba_simple"`` initialises the projections as the reference implementation does (uniform in
    ``+-1/sqrt(fan_in)``); ``"cs336"`` uses the project's ``Linear`` init for them (the runs logged before the option).
    ``out_norm=True`` RMS-normalises the gated output before ``out_proj``, as Mamba-2 does (off: Mamba-1).
    """

    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None
    scan_backend: Literal["auto", "reference", "chunked", "triton"] = "auto"
    dt_limit: tuple[float, float] | None = None
    a_min_magnitude: float | None = None
    conv_norm: bool = False
    decay_limit: tuple[float, float] | None = None
    checkpoint_scan: bool = False
    init: Literal["mamba_simple", "cs336"] = "mamba_simple"
    out_norm: bool = False


@dataclass
class MoESpec:
    """Sparse mixture of SwiGLU experts replacing a dense FFN (see :mod:`~cs336_basics.models.moe`).

    ``balance_convention`` says what ``load_balance_weight`` multiplies: ``"switch"`` (Switch's loss, extended to
    top-k as Hugging Face's Mixtral ``load_balancing_loss_func``; ``k`` at uniform routing) or ``"per_assignment"``
    (``1/k`` of that; the convention of the published runs before it was named). ``router_init="switch"`` starts the
    router near uniform (Switch's truncated normal with std ``sqrt(router_init_scale / d_model)``); ``"cs336"`` is
    the project's ``Linear`` init.
    """

    num_experts: int = 8
    top_k: int = 2
    d_ff: int | None = None
    load_balance_weight: float = 0.01
    z_loss_weight: float = 1e-3
    balance_convention: Literal["switch", "per_assignment"] = "switch"
    router_init: Literal["switch", "cs336"] = "switch"
    router_init_scale: float = 0.1


@dataclass
class FFNSpec:
    """Each block's feed-forward network: dense ``swiglu`` / ``silu``, ``identity``, none, or an MoE (``moe``).

    ``identity`` adds the normalised stream itself, ``x + norm(x)``: what Zoology's Transformer block does when its
    state mixer is ``torch.nn.Identity`` (its MQAR runs), since that block returns ``norm2(residual)`` and the next
    block adds it to the residual. It has no weights beyond the norm's gain (and bias, with ``layernorm``).

    ``d_ff=None`` takes the width that keeps SwiGLU and SiLU parameter-matched
    (:func:`~cs336_basics.models.ffn.default_d_ff`); MoE experts use ``moe.d_ff`` or else this ``d_ff``.
    """

    kind: Literal["swiglu", "silu", "identity", "none"] = "swiglu"
    d_ff: int | None = None
    moe: MoESpec | None = None


@dataclass
class ResidualSpec:
    """How each block's branches are added to the residual stream.

    ``kind="standard"`` is ``x + f(x)``; ``"mhc"`` runs ``hc_expansion`` residual streams with Sinkhorn-constrained
    mixing (:mod:`~cs336_basics.models.hyper_connections`). ``fast_weights=True`` adds a Hebbian fast-weight branch to
    every block (:mod:`~cs336_basics.models.fast_weights`).

    mHC options: ``hc_dynamic`` adds the paper's input-dependent part of the pre, post and residual maps
    (zero-initialised projections behind gates starting at ``hc_gate_init``); ``False`` keeps them static.
    ``sinkhorn_iters`` Sinkhorn sweeps, then (with ``sinkhorn_tol``) Newton steps until every row and column of
    ``H_res`` sums to 1 within the tolerance; ``sinkhorn_tol=None`` is the paper's fixed ``sinkhorn_iters``.
    ``hc_lr_multiplier`` scales the learning rate of the static mixing logits (pre, post, residual) relative to the
    rest of the model (the dynamic projections and gates keep the base rate). Default 30: Adam moves a parameter by
    about the learning rate per step, so at the log's budget (150 steps, lr 3e-3 cosine, ~0.24 in total) a mixing
    logit starting at ``hc_residual_logit=6`` could not leave the identity; 30x gives ~7, the size of that logit,
    and moved the mean off-diagonal of ``H_res`` from 0.0025 to 0.043 in those 150 steps (issue 18). Set 1 for the
    plain rate.
    """

    kind: Literal["standard", "mhc"] = "standard"
    hc_expansion: int = 4
    sinkhorn_iters: int = 20
    hc_residual_logit: float = 6.0
    hc_dynamic: bool = True
    hc_gate_init: float = 0.01
    sinkhorn_tol: float | None = 1e-6
    hc_lr_multiplier: float = 30.0
    fast_weights: bool = False
    fast_weight_heads: int = 4


@dataclass
class HymbaSpec:
    """How ``H`` (Hymba) layers combine their attention and SSM heads (see :mod:`~cs336_basics.models.hymba`).

    ``fusion="paper"``: as published (NVlabs reference): the attention heads and the Mamba heads both work at the
    SSM's inner width, each output is RMS-normalised and scaled by its learned ``beta``, the two are averaged and one
    output projection maps the result back to ``d_model`` (no attention output projection, no Mamba ``out_proj``).
    ``fusion="projected"``: this project's earlier layout (attention at ``d_model`` with its own output projection,
    the Mamba mixer with its ``out_proj``, norms with gains, ``beta``, then an extra ``d_model x d_model``
    projection), kept to reproduce earlier runs. ``kv_sharing=True``: consecutive non-global layers share one set of
    keys and values (Hymba-1.5B's ``kv_reuse_group``): the later layer of each pair has no K/V projections and keeps
    no KV cache. ``branches``: ``"both"`` (the paper); ``"ssm"`` or ``"attention"`` trains the layer with the other
    branch's term removed from the fused sum (an ablation: the same layer as with that branch's ``beta`` held at zero).
    """

    fusion: Literal["paper", "projected"] = "paper"
    kv_sharing: bool = False
    branches: Literal["both", "attention", "ssm"] = "both"


@dataclass
class ModelSpec:
    """A language model: shell settings, the layer ``plan`` and the sub-specs its blocks read.

    ``context_length`` bounds the positions of attention blocks (``None`` for a plan without positional blocks, e.g.
    pure Mamba). ``norm`` places the RMSNorms of ``A`` blocks (``post`` and ``none`` drop the final norm);
    ``num_meta_tokens`` learned inputs are prepended to every sequence (Hymba) and dropped from the logits.

    GPT-2/Zoology switches (the defaults are this project's LLaMA-style model): ``norm_layer`` is the normalisation
    of ``A`` blocks and before the head (``"rmsnorm"``, or ``"layernorm"`` with gain and bias); ``init="gpt2"``
    re-initialises the embeddings, the head and every linear layer of the ``A`` blocks from N(0, 0.02), with the
    projections that write into the residual stream (attention output, FFN ``w2``) at ``0.02 / sqrt(2 num_layers)``,
    as GPT-2 and Zoology's ``_init_weights`` do (``"cs336"``: truncated normals with std ``sqrt(2 / (fan_in +
    fan_out))``, a tied token table at ``d_model**-0.5``); other block types keep their own init.
    ``embedding_dropout`` drops elements of the input embeddings (tokens plus positions) in training.
    """

    vocab_size: int
    d_model: int
    plan: str
    context_length: int | None = None
    norm: Literal["pre", "post", "none"] = "pre"
    tie_embeddings: bool = False
    num_meta_tokens: int = 0
    norm_layer: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    init: Literal["cs336", "gpt2"] = "cs336"
    embedding_dropout: float = 0.0
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    ssm: SSMSpec = field(default_factory=SSMSpec)
    ffn: FFNSpec = field(default_factory=FFNSpec)
    residual: ResidualSpec = field(default_factory=ResidualSpec)
    hymba: HymbaSpec = field(default_factory=HymbaSpec)

    @property
    def num_layers(self) -> int:
        return len(self.plan)

    def global_layers(self) -> list[int]:
        """Layers whose attention sees the whole context (the others use ``attention.window``)."""
        if self.attention.global_layers is not None:
            return list(self.attention.global_layers)
        n = self.num_layers
        return sorted({0, n // 2, n - 1})

    def attention_window(self, layer: int) -> int | None:
        """The sliding window of layer ``layer``'s attention, or None for global attention."""
        window = self.attention.window
        if window == "auto":
            window = hymba_default_window(self.context_length) if self.plan[layer] == "H" else None
        return None if layer in self.global_layers() else window

    def attention_options(self, layer: int) -> dict:
        """Keyword arguments of ``CausalMultiHeadSelfAttention`` that every block type's attention in layer ``layer``
        takes from the spec (positions, window, backend, bias, dropout...), so that no block can drop one."""
        attn = self.attention
        return {
            "positions": "rope" if attn.positions == "rope" else "none",  # learned positions are added by the shell
            "max_seq_len": (self.context_length or 0) + self.num_meta_tokens,
            "theta": attn.rope_theta,
            "backend": attn.backend,
            "window": self.attention_window(layer),
            "num_prefix": self.num_meta_tokens,
            "bias": attn.bias,
            "dropout": attn.dropout,
        }

    def kv_producer(self, layer: int) -> int:
        """The layer whose keys and values layer ``layer`` attends over (itself unless ``hymba.kv_sharing``).

        Sharing groups follow Hymba-1.5B: within each run of consecutive non-global layers, pairs; a run of odd
        length starts with a group of three; global layers and runs of length one keep their own K/V.
        """
        if not self.hymba.kv_sharing or layer in self.global_layers():
            return layer
        start = layer
        while start > 0 and start - 1 not in self.global_layers():
            start -= 1
        end = layer
        while end + 1 < self.num_layers and end + 1 not in self.global_layers():
            end += 1
        offset = layer - start
        if (end - start + 1) % 2 and end > start:  # odd run of 3 or more: the first group takes three layers
            if offset < 3:
                return start
            start, offset = start + 3, offset - 3
        return start + offset - offset % 2

    def validate(self) -> ModelSpec:
        """Raise ValueError with one line naming the bad field and the fix; return ``self`` when all is well."""
        from cs336_basics.models.block import validate_plan  # the registry lives with the blocks

        validate_plan(self.plan)
        if self.vocab_size < 1 or self.d_model < 1:
            raise ValueError(f"vocab_size and d_model must be >= 1, got {self.vocab_size}, {self.d_model}")
        _check_choice("norm", self.norm, NORMS)
        _check_choice("norm_layer", self.norm_layer, NORM_LAYERS)
        _check_choice("init", self.init, INITS)
        for name, p in (("embedding_dropout", self.embedding_dropout), ("attention.dropout", self.attention.dropout)):
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
                raise ValueError(f"{name} must be a probability in [0, 1) (0 = off), got {p!r}")
        if not isinstance(self.attention.bias, bool):
            raise ValueError(f"attention.bias must be true or false, got {self.attention.bias!r}")
        _check_choice("positions", self.attention.positions, POSITIONS)
        if not isinstance(self.attention.position_std, int | float) or not self.attention.position_std > 0:
            raise ValueError(
                f"attention.position_std must be a number > 0 (default 0.02), got {self.attention.position_std!r}"
            )
        if not isinstance(self.attention.short_conv, int) or self.attention.short_conv < 0:
            raise ValueError(
                f"attention.short_conv must be a kernel size >= 1, or 0 for none; got {self.attention.short_conv!r}"
            )
        if self.attention.short_conv and "A" not in self.plan:
            raise ValueError(
                f"attention.short_conv applies to A (attention) layers and plan {self.plan!r} has none; remove it "
                "(M and H layers convolve in their SSM branch: ssm.d_conv)"
            )
        _check_choice("ffn", self.ffn.kind, FFN_KINDS)
        _check_choice("residual", self.residual.kind, RESIDUALS)
        if self.context_length is not None and self.context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {self.context_length}")
        if self.num_meta_tokens < 0:
            raise ValueError(f"num_meta_tokens must be >= 0, got {self.num_meta_tokens}")
        attn = self.attention
        if any(letter in "AH" for letter in self.plan):
            if attn.num_heads < 1 or self.d_model % attn.num_heads:
                raise ValueError(f"d_model={self.d_model} must be divisible by num_heads={attn.num_heads}")
            if self.context_length is None:
                raise ValueError("a plan with attention layers needs context_length")
        if (
            attn.window != "auto"
            and attn.window is not None
            and (not isinstance(attn.window, int) or isinstance(attn.window, bool) or attn.window < 1)
        ):
            raise ValueError(
                f"window must be a positive number of positions, 'auto' or None (all global), got {attn.window!r}"
            )
        _check_choice("hymba.fusion", self.hymba.fusion, HYMBA_FUSIONS)
        _check_choice("hymba.branches", self.hymba.branches, HYMBA_BRANCHES)
        if self.hymba.kv_sharing and self.hymba.branches == "ssm":
            raise ValueError("hymba.kv_sharing shares attention K/V, but hymba.branches='ssm' has no attention")
        if self.hymba.kv_sharing and set(self.plan) != {"H"}:
            raise ValueError(f"hymba.kv_sharing shares K/V between Hymba layers; plan {self.plan!r} is not all 'H'")
        bad = [i for i in self.global_layers() if not 0 <= i < self.num_layers]
        if attn.global_layers is not None and bad:
            raise ValueError(f"global_layers {bad} out of range for {self.num_layers} layers")
        s = self.ssm
        if min(s.d_state, s.d_conv, s.expand) < 1:
            raise ValueError(f"d_state, d_conv, expand must be >= 1, got {s.d_state, s.d_conv, s.expand}")
        _check_choice("ssm.init", s.init, ("mamba_simple", "cs336"))
        for name in ("conv_norm", "out_norm", "checkpoint_scan"):
            if not isinstance(getattr(s, name), bool):
                raise ValueError(f"ssm.{name} must be true or false, got {getattr(s, name)!r}")
        if self.ffn.kind == "identity" and (self.ffn.moe is not None or self.ffn.d_ff is not None):
            raise ValueError("ffn kind 'identity' has no width or experts; drop ffn.d_ff and ffn.moe")
        if self.ffn.d_ff is not None and self.ffn.d_ff < 1:
            raise ValueError(f"d_ff must be >= 1, got {self.ffn.d_ff}")
        moe = self.ffn.moe
        if moe is not None:
            if moe.top_k not in (1, 2):
                raise ValueError(f"moe.top_k must be 1 or 2, got {moe.top_k}")
            if moe.num_experts < moe.top_k:
                raise ValueError(f"moe.num_experts ({moe.num_experts}) must be at least moe.top_k ({moe.top_k})")
            _check_choice("moe.balance_convention", moe.balance_convention, ("switch", "per_assignment"))
            _check_choice("moe.router_init", moe.router_init, ("switch", "cs336"))
            if moe.router_init_scale <= 0:
                raise ValueError(f"moe.router_init_scale must be > 0, got {moe.router_init_scale}")
        if self.residual.kind == "mhc":
            if self.residual.hc_expansion < 1:
                raise ValueError(f"hc_expansion must be >= 1, got {self.residual.hc_expansion}")
            r = self.residual
            if r.sinkhorn_iters < 0:
                raise ValueError(f"sinkhorn_iters must be >= 0, got {r.sinkhorn_iters}")
            if r.sinkhorn_tol is not None and not r.sinkhorn_tol > 0:
                raise ValueError(f"sinkhorn_tol must be > 0 (e.g. 1e-6) or null for fixed sweeps, got {r.sinkhorn_tol}")
            if not r.hc_lr_multiplier > 0:
                raise ValueError(f"hc_lr_multiplier must be > 0 (1 = the base rate), got {r.hc_lr_multiplier}")
            if self.norm == "post":
                raise ValueError("residual='mhc' wraps pre-norm branches; use norm='pre' (or 'none')")
        return self


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
