"""The library is written from scratch: no ``torch.nn`` layers, ``torch.nn.functional`` ops or ``torch.optim``
optimizers in ``cs336_basics/`` or ``kernels/``, except the base classes and helpers the README allows
(``nn.Module``, ``nn.Parameter``, containers, ``torch.nn.init``, the ``torch.optim.Optimizer`` base class) and the
opt-in fast backends a config selects by name (``OPT_IN_BACKENDS``).

The check reads the source with ``ast`` and resolves every name to the dotted path it was imported from, scope by
scope (a function's own import does not hide the module's), so ``from torch import nn; nn.Linear``,
``import torch.nn.functional as F; F.softmax``, ``from torch.nn import Linear``, ``getattr(torch.nn, "Linear")``,
``importlib.import_module("torch.nn.functional")`` and the bare namespace as a value (``n = torch.nn``) are all
caught, while a docstring that mentions ``torch.nn.Linear`` is not. So are the ``torch.*`` twins of functional ops
(every function ``torch`` shares with ``torch.nn.functional``, less elementwise maths such as ``torch.sigmoid``), the
raw-op routes ``torch._C._nn``, ``torch.ops.aten`` and ``torch._VF``, and ``.softmax()`` / ``.log_softmax()`` on a
tensor. What it cannot see: a torch module object that reaches the code some other way (an argument, an attribute
of another object, ``sys.modules``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [ROOT / "cs336_basics", ROOT / "kernels"]

# What library code may use from the guarded namespaces (a path, or a prefix ending in "."); the base classes also
# by the full path of the module that defines them.
ALLOWED = (
    "torch.nn.Module",
    "torch.nn.modules.module.Module",
    "torch.nn.Parameter",
    "torch.nn.parameter.Parameter",
    "torch.nn.ModuleList",
    "torch.nn.ModuleDict",
    "torch.nn.ParameterList",
    "torch.nn.ParameterDict",
    "torch.nn.Sequential",
    "torch.nn.init.",
    "torch.optim.Optimizer",
    "torch.optim.optimizer.Optimizer",
    "torch.nn.parallel.DistributedDataParallel",  # a training wrapper, not a layer: checkpoints unwrap it
)
# Opt-in fast backends: file (relative to the repository) -> the built-ins it may call when a config asks for them.
OPT_IN_BACKENDS = {
    "cs336_basics/nn/attention.py": {"torch.nn.functional.scaled_dot_product_attention"},  # attention.backend
}
# Namespaces of layers, functional ops and optimizers, and the raw-op routes around them.
GUARDED = ("torch.nn", "torch.optim", "torch._C._nn", "torch.ops.aten", "torch._VF")
# torch.* twins of torch.nn.functional ops: every function the two namespaces share, less the elementwise maths that
# is a tensor primitive rather than a layer (the library uses torch.sigmoid).
ELEMENTWISE = {"sigmoid", "tanh", "relu", "relu_", "threshold", "threshold_"}
FUNCTIONAL_TWINS = {
    f"torch.{name}"
    for name in dir(torch.nn.functional)
    if not name.startswith("_") and name not in ELEMENTWISE and callable(getattr(torch, name, None))
    and getattr(torch, name) is not torch.Tensor
} | {"torch.special.softmax", "torch.special.log_softmax", "torch.scaled_dot_product_attention"}  # fmt: skip
TENSOR_METHODS = {"softmax", "log_softmax"}  # ``x.softmax(-1)``: the method form of the same ops
TENSOR_METHOD_PATHS = {f"torch.Tensor.{name}" for name in TENSOR_METHODS}
IMPORTERS = ("importlib.import_module", "__import__")


def _imports_of_scope(scope: ast.AST) -> dict[str, str]:
    """Local name -> dotted path, for the imports of one scope (a module, class or function body; not the scopes
    nested in it). Relative imports map to a path starting with ".", which is never guarded."""
    aliases: dict[str, str] = {}
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import):
            for name in node.names:
                top = name.name.split(".")[0]
                aliases[name.asname or top] = name.name if name.asname else top
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for name in node.names:
                aliases[name.asname or name.name] = f"{module}.{name.name}"
        stack.extend(ast.iter_child_nodes(node))
    return aliases


def _dotted(expr: ast.AST, scopes: list[dict[str, str]]) -> str | None:
    """The dotted path an expression stands for, through the imports of the enclosing ``scopes`` (innermost last);
    None for anything not rooted in an import."""
    if isinstance(expr, ast.Name):
        return next((scope[expr.id] for scope in reversed(scopes) if expr.id in scope), None)
    if isinstance(expr, ast.Attribute):
        base = _dotted(expr.value, scopes)
        return f"{base}.{expr.attr}" if base else None
    if isinstance(expr, ast.Call):
        return _called_path(expr, scopes)
    return None


def _called_path(call: ast.Call, scopes: list[dict[str, str]]) -> str | None:
    """What ``getattr(x, "name")`` or ``import_module("a.b")`` evaluates to, when it can be read."""
    func = _dotted(call.func, scopes) or (call.func.id if isinstance(call.func, ast.Name) else None)
    arguments = [*call.args, *(k.value for k in call.keywords if k.arg in ("name", "obj"))]
    constant = next((a.value for a in arguments if isinstance(a, ast.Constant) and isinstance(a.value, str)), None)
    if func in IMPORTERS and constant is not None:
        return constant
    if func == "getattr" and len(call.args) >= 2 and isinstance(call.args[1], ast.Constant):
        base = _dotted(call.args[0], scopes)
        return f"{base}.{call.args[1].value}" if base else None
    return None


def forbidden_uses(source: str) -> list[tuple[int, str]]:
    """(line, dotted path) of every use of a guarded namespace outside ``ALLOWED`` in ``source``: an import of one of
    its members, an attribute chain that resolves into it (through the imports of the enclosing scopes), the bare
    namespace used as a value (``n = torch.nn``), ``getattr(namespace, "name")`` and ``import_module("torch.nn...")``,
    a ``torch.*`` twin of a functional op, and a ``.softmax()`` / ``.log_softmax()`` call on a tensor."""
    tree = ast.parse(source)
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}  # judged whole, at the end

    def guarded(path: str) -> bool:
        named = path in FUNCTIONAL_TWINS or path in TENSOR_METHOD_PATHS
        return named or any(path == g or path.startswith(g + ".") for g in GUARDED)

    def allowed(path: str) -> bool:
        return any(path.startswith(a) if a.endswith(".") else path == a or path.startswith(a + ".") for a in ALLOWED)

    uses: list[tuple[int, str]] = []

    def visit(node: ast.AST, scopes: list[dict[str, str]]) -> None:
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            scopes = [*scopes, _imports_of_scope(node)]
        paths: list[str | None] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            paths = [f"{node.module}.{name.name}" for name in node.names]  # ``from torch.nn import Linear``
            paths = [path for path in paths if path not in GUARDED]  # ``from torch import nn`` only names it
        elif isinstance(node, ast.Attribute | ast.Name) and id(node) not in inner:
            path = _dotted(node, scopes)
            base = node.value if isinstance(node, ast.Attribute) else None
            on_self = isinstance(base, ast.Name) and base.id in ("self", "cls")
            if path is None and base is not None and node.attr in TENSOR_METHODS and not on_self:
                path = f"torch.Tensor.{node.attr}"  # a method of a tensor, not of an imported module
            paths = [path]
        elif isinstance(node, ast.Call):
            paths = [_called_path(node, scopes)]  # ``getattr(nn, "Linear")``, ``import_module("torch.nn.functional")``
        for path in paths:
            if path and guarded(path) and not allowed(path):
                uses.append((node.lineno, path))
        for child in ast.iter_child_nodes(node):
            visit(child, scopes)

    visit(tree, [])
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


@pytest.mark.parametrize(
    "source,use",
    [
        (
            "import torch.nn.functional as F\ndef a(x):\n    return F.gelu(x)\n"
            "def b(x):\n    from cs336_basics.nn import functional as F\n    return F.softmax(x, -1)\n",
            "torch.nn.functional.gelu",
        ),  # a function's own import does not hide the module's
        ("import torch\nlayer = getattr(torch.nn, 'Linear')\n", "torch.nn.Linear"),
        ("from torch import nn\nnamespace = nn\n", "torch.nn"),  # the namespace as a value
        ("import torch\nopt = torch.optim\n", "torch.optim"),
        ("import importlib\nF = importlib.import_module(name='torch.nn.functional')\n", "torch.nn.functional"),
        ("import importlib\nL = importlib.import_module('torch').nn.Linear\n", "torch.nn.Linear"),
        ("import torch\ny = torch.special.softmax(x, -1)\n", "torch.special.softmax"),
        ("import torch\ny = torch.binary_cross_entropy_with_logits(x, t)\n", "torch.binary_cross_entropy_with_logits"),
        ("import torch\ny = torch.ops.aten._softmax(x, -1, False)\n", "torch.ops.aten._softmax"),
        ("import torch\ny = torch._VF.lstm\n", "torch._VF.lstm"),
        ("from torch import nn as N\nlayer = N.Embedding(3, 4)\n", "torch.nn.Embedding"),
    ],
)
def test_the_scanner_sees_through_scopes_aliases_getattr_and_raw_ops(source, use):
    assert use in [path for _, path in forbidden_uses(source)]


def test_the_scanner_lets_the_allowed_forms_pass():
    source = (
        "import torch\nfrom torch import nn\nfrom torch.optim.optimizer import Optimizer\n"
        "from . import functional\nfrom torch.nn.parameter import Parameter\n"
        "class M(nn.Module):\n    def forward(self, x):\n        return self.softmax(functional.softmax(x, -1))\n"
        "w = nn.Parameter(torch.zeros(2)); nn.init.zeros_(w); y = torch.sigmoid(w).exp()\n"
    )
    assert forbidden_uses(source) == []


def test_the_library_has_files_to_scan():
    assert len(library_files()) > 40


@pytest.mark.parametrize("path", library_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_library_code_uses_no_torch_nn_layers_ops_or_optimizers(path: Path):
    relative = path.relative_to(ROOT).as_posix()
    backends = OPT_IN_BACKENDS.get(relative, set())
    uses = [(line, use) for line, use in forbidden_uses(path.read_text()) if use not in backends]
    assert not uses, f"{relative} uses {', '.join(f'{use} (line {line})' for line, use in uses)}: write it from scratch"
