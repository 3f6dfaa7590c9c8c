"""The block protocol and the plan registry: one letter of a layer plan -> one :class:`Block` class.

To add a block type, write one :class:`Block` subclass and register its letter::

    @register_block("F")
    class FeedForwardOnly(Block):
        def __init__(self, spec: ModelSpec, layer: int) -> None:
            super().__init__()
            self.norm = RMSNorm(spec.d_model)
            self.ffn = build_dense_ffn(spec.d_model, spec.ffn)
            self.init_residual(spec, ("ffn",))

        def branches(self, state):
            return [Branch("ffn", lambda h: self.ffn(self.norm(h)))]

A plan such as ``"AFAF"`` then builds, trains, decodes and reports through the one
:class:`~cs336_basics.models.language_model.LanguageModel` shell like every other block.

A block is a list of residual *branches* (``h -> f(h)``, each normalising its own input, e.g. attention then FFN).
The block owns how they are added to the residual stream (:meth:`Block.init_residual`): ``x + f(x)`` in turn, with an
optional post-norm after each; or, with mHC, one :class:`~cs336_basics.models.hyper_connections.HyperConnection` per
branch over ``n`` residual streams; an optional fast-weight branch comes last. It also owns its decoding state
(:meth:`Block.make_state`: a KV cache, a recurrent SSM state, both, or None) and may report scalars
(:meth:`Block.diagnostics`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from jaxtyping import Float
from torch import Tensor, nn

from cs336_basics.models.fast_weights import FastWeightBranch, FastWeightState
from cs336_basics.models.hyper_connections import HyperConnection
from cs336_basics.models.spec import ModelSpec

BLOCKS: dict[str, type[Block]] = {}


def register_block(letter: str) -> Callable[[type[Block]], type[Block]]:
    """Class decorator: make ``letter`` in a layer plan build this block type."""
    if not (isinstance(letter, str) and len(letter) == 1 and letter.isalpha() and letter.isupper()):
        raise ValueError(f"a block letter is one upper-case letter, got {letter!r}")

    def register(cls: type[Block]) -> type[Block]:
        if letter in BLOCKS and BLOCKS[letter] is not cls:
            raise ValueError(f"block letter {letter!r} is already taken by {BLOCKS[letter].__name__}")
        cls.letter = letter
        BLOCKS[letter] = cls
        return cls

    return register


def block_class(letter: str) -> type[Block]:
    """The block type registered for ``letter`` (the built-in ``A``, ``M``, ``H`` are imported on first use)."""
    import cs336_basics.models.hymba  # noqa: F401  (each module registers its letter on import)
    import cs336_basics.models.mamba  # noqa: F401
    import cs336_basics.models.transformer  # noqa: F401

    if letter not in BLOCKS:
        raise ValueError(f"no block type registered for {letter!r}; registered: {''.join(sorted(BLOCKS))}")
    return BLOCKS[letter]


def validate_plan(plan: str) -> str:
    """Return ``plan`` if every letter names a registered block; otherwise a ValueError naming the position."""
    block_class("A")  # load the built-in blocks
    known = "".join(sorted(BLOCKS))
    if not isinstance(plan, str) or not plan:
        raise ValueError(f"the layer plan must be a non-empty string of block letters ({known}), got {plan!r}")
    for position, letter in enumerate(plan):
        if letter not in BLOCKS:
            raise ValueError(
                f"layer plan {plan!r} has unknown block letter {letter!r} at position {position}; use one of {known} "
                "(A attention, M Mamba, H Hymba parallel heads)"
            )
    return plan


@dataclass
class Branch:
    """One residual branch: ``fn(h)`` is added to the stream, then ``post`` (a post-norm) is applied if given."""

    name: str
    fn: Callable[[Tensor], Tensor]
    post: Callable[[Tensor], Tensor] | None = None


@dataclass
class BlockState:
    """One layer's decoding state: the block's own (KV cache, SSM state, ...) and its fast-weight matrix, if any."""

    own: Any
    fast: FastWeightState | None = None


class Block(nn.Module):
    """One layer of a plan. Subclasses build their modules, call :meth:`init_residual`, and define :meth:`branches`."""

    letter: ClassVar[str] = "?"
    #: whether the block reads token positions (RoPE), which bounds the model's context length
    uses_positions: ClassVar[bool] = False
    #: first part of this block's diagnostics keys in the logs (``{group}/layer{i}/{key}``)
    diagnostics_group: ClassVar[str] = "block"

    hyper: nn.ModuleDict | None
    fast_weights: FastWeightBranch | None

    def init_residual(self, spec: ModelSpec, branch_names: tuple[str, ...]) -> None:
        """Create the residual machinery for ``branch_names`` (plus ``fast`` with fast weights): mHC or plain."""
        r = spec.residual
        self.fast_weights = FastWeightBranch(spec.d_model, r.fast_weight_heads) if r.fast_weights else None
        names = (*branch_names, "fast") if r.fast_weights else branch_names
        options = {
            "dim": spec.d_model, "dynamic": r.hc_dynamic, "gate_init": r.hc_gate_init, "sinkhorn_tol": r.sinkhorn_tol,
            "lr_multiplier": r.hc_lr_multiplier,
        }  # fmt: skip
        self.hyper = (
            nn.ModuleDict(
                {
                    n: HyperConnection(None, r.hc_expansion, r.sinkhorn_iters, r.hc_residual_logit, **options)
                    for n in names
                }
            )
            if r.kind == "mhc"
            else None
        )

    def branches(self, state: Any) -> list[Branch]:
        """This call's residual branches in order; ``state`` is the block's own decoding state or None."""
        raise NotImplementedError

    def make_state(self, batch_size: int, capacity: int) -> Any:
        """The block's own empty decoding state for ``capacity`` positions (None when it keeps none)."""
        return None

    def diagnostics(self) -> dict[str, float]:
        """Block-specific scalars for the logs (keys relative to the layer); none by default."""
        return {}

    def connect(self, layers: list[Block]) -> None:
        """Called by the shell once all layers exist (e.g. Hymba's cross-layer KV sharing); nothing by default."""

    def new_state(self, batch_size: int, capacity: int) -> BlockState:
        fast = self.fast_weights.make_state(batch_size) if self.fast_weights is not None else None
        return BlockState(self.make_state(batch_size, capacity), fast)

    def forward(
        self, x: Float[Tensor, "b T d"] | Float[Tensor, "b T n d"], state: BlockState | None = None
    ) -> Float[Tensor, "b T d"] | Float[Tensor, "b T n d"]:
        """Apply the branches to the residual stream ``x`` (``(b, T, n, d)`` streams under mHC)."""
        branches = self.branches(state.own if state is not None else None)
        if self.fast_weights is not None:
            fast, fast_state = self.fast_weights, state.fast if state is not None else None
            branches.append(Branch("fast", lambda h: fast(h, state=fast_state)))
        if self.hyper is not None:
            for branch in branches:
                x = self.hyper[branch.name].mix(x, branch.fn)
            return x
        for branch in branches:
            x = x + branch.fn(x)
            if branch.post is not None:
                x = branch.post(x)
        return x
