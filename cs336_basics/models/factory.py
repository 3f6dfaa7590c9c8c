"""One entry point that turns an architecture name and keyword arguments into a :class:`LanguageModel`.

- ``transformer`` -> ``TransformerLM``, ``mamba`` -> ``MambaLM``, ``hybrid`` -> ``HybridLM`` (layer pattern of A/M),
  ``hymba`` -> ``HymbaLM``.
- Model modules are imported lazily, so a model file that is missing or broken only fails when it is requested.
- Keyword arguments are checked against the class signature before construction, so a typo (or an option the
  architecture does not have, e.g. ``d_state`` for a Transformer) gives a one-line error naming the argument and the
  accepted ones, instead of a ``TypeError`` deep inside a constructor. MoE / hyper-connection options pass straight
  through to the classes that accept them; for ``transformer`` and ``mamba``, which take an ``ffn_factory`` rather
  than a config dict, ``moe={"num_experts": E, "top_k": k, ...}`` is turned into a factory of MoE feed-forwards.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from cs336_basics.models.base import LanguageModel

ARCHITECTURES: dict[str, tuple[str, str]] = {
    "transformer": ("cs336_basics.models.transformer", "TransformerLM"),
    "mamba": ("cs336_basics.models.mamba", "MambaLM"),
    "hybrid": ("cs336_basics.models.hybrid", "HybridLM"),
    "hymba": ("cs336_basics.models.hymba", "HymbaLM"),
}


def model_class(architecture: str) -> type[LanguageModel]:
    """The class implementing ``architecture`` (imported on demand)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}")
    module_name, class_name = ARCHITECTURES[architecture]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(f"architecture {architecture!r} needs {module_name}, which failed: {error}") from error
    return getattr(module, class_name)


def accepted_arguments(architecture: str) -> set[str] | None:
    """Keyword arguments the architecture's constructor accepts, or None when it takes ``**kwargs``."""
    parameters = inspect.signature(model_class(architecture).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return {name for name in parameters if name != "self"}


def _moe_factory(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Replace a ``moe`` config dict by an ``ffn_factory`` building one MoE feed-forward per layer."""
    from cs336_basics.models.moe import build_moe

    moe, d_model, d_ff = kwargs.pop("moe"), kwargs["d_model"], kwargs.get("d_ff")
    if moe is not None:
        build_moe(d_model, moe, d_ff)  # validate the dict now, with its own error message
        kwargs["ffn_factory"] = lambda layer: build_moe(d_model, moe, d_ff)
    return kwargs


def build_model(architecture: str, **kwargs: Any) -> LanguageModel:
    """Construct the language model named by ``architecture`` with ``kwargs`` passed to its constructor."""
    if architecture in ("transformer", "mamba") and "moe" in kwargs:
        kwargs = _moe_factory(dict(kwargs))
    accepted = accepted_arguments(architecture)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ValueError(f"{architecture} does not take argument(s) {unknown}; accepted: {sorted(accepted)}")
    return model_class(architecture)(**kwargs)
