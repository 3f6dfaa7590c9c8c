"""The library is written from scratch: no ``torch.nn`` layers, ``torch.nn.functional`` ops or ``torch.optim``
optimizers in ``cs336_basics/`` or ``kernels/``, except the base classes and helpers the README allows
(``nn.Module``, ``nn.Parameter``, containers, ``torch.nn.init``, the ``torch.optim.Optimizer`` base class) and the
opt-in fast backends a config selects by name (``OPT_IN_BACKENDS``).

The check reads the source with ``ast`` and resolves every name to the dotted path it was imported from, so
``from torch import nn; nn.Linear``, ``import torch.nn.functional as F; F.softmax`` and
``from torch.nn import Linear`` are all caught, while a docstring that mentions ``torch.nn.Linear`` is not. The
``torch.*`` twins of the functional ops the library writes itself (``torch.softmax``, ``torch.layer_norm``,
``torch.conv1d``, ..., ``torch._C._nn``), the tensor methods ``.softmax()`` / ``.log_softmax()`` and an
``importlib.import_module("torch.nn...")`` count as uses too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [ROOT / "cs336_basics", ROOT / "kernels"]

# What library code may use from the torch.nn and torch.optim namespaces (a path, or a prefix ending in ".").
ALLOWED = (
    "torch.nn.Module",
    "torch.nn.Parameter",
    "torch.nn.ModuleList",
    "torch.nn.ModuleDict",
    "torch.nn.ParameterList",
    "torch.nn.ParameterDict",
    "torch.nn.Sequential",
    "torch.nn.init.",
    "torch.optim.Optimizer",
    "torch.nn.parallel.DistributedDataParallel",  # a training wrapper, not a layer: checkpoints unwrap it
)
# Opt-in fast backends: file (relative to the repository) -> the built-ins it may call when a config asks for them.
OPT_IN_BACKENDS = {
    "cs336_basics/nn/attention.py": {"torch.nn.functional.scaled_dot_product_attention"},  # attention.backend
}
GUARDED = ("torch.nn", "torch.optim", "torch._C._nn")
# torch.* twins of torch.nn.functional ops that the library implements itself (elementwise maths such as
# torch.sigmoid, torch.exp or torch.logsumexp is not on the list: those are tensor primitives, not layers).
FUNCTIONAL_TWINS = {
    f"torch.{name}"
    for name in ("softmax", "log_softmax", "layer_norm", "rms_norm", "group_norm", "batch_norm", "instance_norm",
                 "conv1d", "conv2d", "conv_transpose1d", "embedding", "embedding_bag", "dropout", "alpha_dropout",
                 "feature_dropout", "bilinear", "scaled_dot_product_attention")
}  # fmt: skip
TENSOR_METHODS = {"softmax", "log_softmax"}  # ``x.softmax(-1)``: the method form of the same ops
TENSOR_METHOD_PATHS = {f"torch.Tensor.{name}" for name in TENSOR_METHODS}


def forbidden_uses(source: str) -> list[tuple[int, str]]:
    """(line, dotted path) of every use of ``torch.nn`` / ``torch.optim`` outside ``ALLOWED`` in ``source``."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> dotted path it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                if name.asname:
                    aliases[name.asname] = name.name
                else:
                    top = name.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for name in node.names:
                aliases[name.asname or name.name] = f"{node.module}.{name.name}"

    def dotted(node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def guarded(path: str) -> bool:
        named = path in FUNCTIONAL_TWINS or path in TENSOR_METHOD_PATHS
        return named or any(path == g or path.startswith(g + ".") for g in GUARDED)

    def allowed(path: str) -> bool:
        return any(path.startswith(a) if a.endswith(".") else path == a or path.startswith(a + ".") for a in ALLOWED)

    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}  # ``nn`` of ``nn.init``
    uses: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            paths = [f"{node.module}.{name.name}" for name in node.names]  # ``from torch.nn import Linear`` is a use
        elif isinstance(node, ast.Attribute) and id(node) not in inner:
            path = dotted(node)  # the whole chain: ``nn.init.zeros_`` is one use, not two
            if path is None and node.attr in TENSOR_METHODS:  # on a tensor, not on an imported module
                path = f"torch.Tensor.{node.attr}"
            paths = [path]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = dotted(node.func) or (node.func.id if isinstance(node.func, ast.Name) else None)
            if called not in ("importlib.import_module", "__import__"):
                continue
            paths = [str(node.args[0].value)]
        else:
            continue
        uses += [(node.lineno, path) for path in paths
                 if path and guarded(path) and path not in GUARDED and not allowed(path)]  # fmt: skip
    return sorted(set(uses))


def library_files() -> list[Path]:
    return sorted(p for root in LIBRARY for p in root.rglob("*.py"))


def test_the_scanner_catches_every_import_form():
    source = (
        "import torch\nfrom torch import nn, optim\nimport torch.nn.functional as F\nfrom torch.nn import Linear\n"
        "a = nn.Linear(2, 2)\nb = F.softmax(x, -1)\nc = torch.nn.LayerNorm(3)\nd = optim.Adam(p)\n"
        "e = torch.optim.lr_scheduler.StepLR\n"
        "f = torch.softmax(x, -1)\ng = x.log_softmax(-1)\nh = torch._C._nn.linear(x, w)\n"
        "import importlib\ni = importlib.import_module('torch.nn.functional')\n"
        "from cs336_basics.nn import functional\nj = functional.softmax(x, -1)\nk = torch.sigmoid(x).exp()\n"
        "ok = (nn.Module, nn.Parameter, nn.ModuleList, nn.init.zeros_, torch.optim.Optimizer)\n"
        '"""torch.nn.Linear in a docstring is not a use"""\n'
    )
    found = forbidden_uses(source)
    assert [path for _, path in found] == [
        "torch.nn.Linear",  # the from-import (line 4)
        "torch.nn.Linear",  # nn.Linear(2, 2)
        "torch.nn.functional.softmax",
        "torch.nn.LayerNorm",
        "torch.optim.Adam",
        "torch.optim.lr_scheduler.StepLR",
        "torch.softmax",
        "torch.Tensor.log_softmax",
        "torch._C._nn.linear",
        "torch.nn.functional",
    ]
    assert [line for line, _ in found] == [4, 5, 6, 7, 8, 9, 10, 11, 12, 14]


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_code_uses_no_torch_nn_layers_ops_or_optimizers(path: Path):
    relative = str(path.relative_to(ROOT))
    backends = OPT_IN_BACKENDS.get(relative, set())
    uses = [(line, use) for line, use in forbidden_uses(path.read_text()) if use not in backends]
    assert not uses, f"{relative} uses {', '.join(f'{use} (line {line})' for line, use in uses)}: write it from scratch"
