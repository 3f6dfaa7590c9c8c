"""The code paths a GPU user runs first, checked on CPU: bf16 autocast and ``torch.compile`` training steps for every
architecture, the fp16 GradScaler logic, the Triton scan inside a bf16 Mamba step, and the ``device.type == "cuda"``
branches that can be reached without a device.

Oracles: the same step in fp32 eager from the same initialisation and batch (bf16 within bf16 rounding, compiled
within float32 rounding), hand-made infinite gradients for the scaler, and the chunked scan for the Triton one.
``torch.compile`` uses the ``aot_eager`` backend in the default run (Dynamo capture plus AOTAutograd's joint graph,
where graph breaks and functionalisation problems show up); with the real ``inductor`` backend, which builds C++
kernels on CPU and costs 30-60 s per architecture here, it is marked slow. Tests marked ``gpu`` repeat the training
steps on CUDA (``pytest -m gpu``, step (a) of ``benchmarks/gpu_check.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():  # the Triton-scan test runs the kernels through the interpreter on CPU
    os.environ["TRITON_INTERPRET"] = "1"  # (before the kernels are imported, which decorates them)

from cs336_basics.models.factory import build_model  # noqa: E402
from cs336_basics.optim.adamw import AdamW  # noqa: E402
from cs336_basics.training.batches import TokenBatches  # noqa: E402
from cs336_basics.training.loop import LoopSettings, Trainer  # noqa: E402

VOCAB, T = 32, 8
ARCHITECTURES = {
    "transformer": dict(context_length=T, d_model=16, num_layers=1, num_heads=2),
    "mamba": dict(d_model=16, num_layers=1, d_state=4),
    "hybrid": dict(context_length=T, d_model=16, num_heads=2, pattern="AM", d_state=4),
    "hymba": dict(context_length=T, d_model=16, num_layers=1, num_heads=2, d_state=4),
}
SLOW = pytest.mark.slow
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_model(architecture: str, device: str = "cpu", **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(architecture, vocab_size=VOCAB, **{**ARCHITECTURES[architecture], **overrides}).to(device)


def make_trainer(model, device="cpu", precision="fp32", train_module=None, lr=1e-2, grad_clip=1.0) -> Trainer:
    tokens = (np.arange(400) * 7 % VOCAB).astype(np.uint16)
    batches = TokenBatches(tokens[:300], tokens[300:], T, device)
    settings = LoopSettings(max_steps=1, batch_size=4, eval_every=100, precision=precision, grad_clip=grad_clip)
    return Trainer(model, AdamW(model.parameters(), lr=lr), lambda step: lr, batches, settings, torch.device(device),
                   train_module=train_module)  # fmt: skip


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def logits_dtype_of_one_step(trainer: Trainer) -> torch.dtype:
    seen = []
    handle = trainer.model.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        trainer.metrics = trainer.train_step()
    finally:
        handle.remove()
    return seen[0]


# ----- bf16 autocast --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_bf16_autocast_step_tracks_the_fp32_step(architecture, device="cpu"):
    fp32 = make_trainer(make_model(architecture, device), device)
    bf16 = make_trainer(make_model(architecture, device), device, precision="bf16")
    assert logits_dtype_of_one_step(fp32) == torch.float32
    assert logits_dtype_of_one_step(bf16) == torch.bfloat16  # autocast reached the model's matmuls
    ref, got = fp32.metrics, bf16.metrics
    assert got["loss"] == pytest.approx(ref["loss"], rel=2e-2) and got["loss"] != ref["loss"]
    assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=0.1)
    for name, p in bf16.model.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all(), name  # master weights stay float32
    # the update (lr * ~sign(grad) in the first AdamW step) points the same way as the fp32 one
    before = weights(make_model(architecture, device))
    after_ref, after_bf16 = weights(fp32.model), weights(bf16.model)
    delta_ref = torch.cat([(after_ref[k] - before[k]).flatten() for k in before])
    delta_bf16 = torch.cat([(after_bf16[k] - before[k]).flatten() for k in before])
    assert torch.nn.functional.cosine_similarity(delta_ref, delta_bf16, dim=0) > 0.8


class CountingLaunches:
    """Stands in for a ``@triton.jit`` kernel: counts ``kernel[grid](...)`` launches and makes the real launch, so a
    test can tell that the Triton kernel ran, not some other backend that computes the same numbers."""

    def __init__(self, kernel) -> None:
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


def test_bf16_mamba_step_with_the_triton_scan_matches_the_chunked_scan(monkeypatch):
    # The GPU default: under autocast the block hands the Triton kernels bf16 u/delta/B/C/z and float32 A/D/bias.
    pytest.importorskip("triton")
    import kernels.selective_scan.triton_scan as triton_scan

    # Matching the chunked scan proves nothing if the chunked scan is what ran: count the dispatcher's calls into the
    # Triton entry point, and the launches of the forward and backward kernels (the backward has no Python entry of
    # its own: SelectiveScanTriton.backward launches selective_scan_bwd_kernel).
    entry_calls = []
    real_entry = triton_scan.selective_scan_triton

    def counting_entry(*args, **kwargs):
        entry_calls.append(1)
        return real_entry(*args, **kwargs)

    fwd = CountingLaunches(triton_scan.selective_scan_fwd_kernel)
    bwd = CountingLaunches(triton_scan.selective_scan_bwd_kernel)
    monkeypatch.setattr(triton_scan, "selective_scan_triton", counting_entry)
    monkeypatch.setattr(triton_scan, "selective_scan_fwd_kernel", fwd)
    monkeypatch.setattr(triton_scan, "selective_scan_bwd_kernel", bwd)

    chunked = make_trainer(make_model("mamba", scan_backend="chunked"), precision="bf16")
    triton = make_trainer(make_model("mamba", scan_backend="triton"), precision="bf16")
    original = triton_scan.DEFAULT_CHUNK
    triton_scan.DEFAULT_CHUNK = 4  # two chunks over T = 8: the checkpoint/recompute path runs; the interpreter is slow
    try:
        got = triton.train_step()
    finally:
        triton_scan.DEFAULT_CHUNK = original
    # one Mamba layer, one step: one scan forward and one backward, both through the Triton kernels
    assert (len(entry_calls), fwd.launches, bwd.launches) == (1, 1, 1)
    ref = chunked.train_step()
    assert (len(entry_calls), fwd.launches, bwd.launches) == (1, 1, 1)  # the chunked model never reached Triton
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-2)
    assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=5e-2)
    for (name, a), b in zip(triton.model.named_parameters(), chunked.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3, msg=name)  # one AdamW step of lr 1e-2 apart at most


# ----- torch.compile --------------------------------------------------------------------------------------------------
class CountingBackend:
    """A ``torch.compile`` backend that compiles with the named one (``aot_eager``, ``inductor``) and counts the calls
    into the graphs it returns: compiled and eager steps that agree prove nothing unless the compiled graphs ran.

    A backend is called once per graph it compiles, so counting there counts compilations; the count has to sit in
    the callable it returns. Every graph a forward runs adds one call (graph breaks split Mamba's forward into several,
    and a guard may recompile on the second step), so a training step that went through the compiled module adds at
    least one, and a step that bypassed it adds none.
    """

    def __init__(self, name: str) -> None:
        self.compile_with, self.calls = torch._dynamo.lookup_backend(name), 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        compiled = self.compile_with(gm, example_inputs)

        def run(*args):
            self.calls += 1
            return compiled(*args)

        # the calling convention is all the caller reads off a compiled graph; copying more (Dynamo's markers, as
        # functools.wraps would) could make it unwrap ``run`` and call the graph around the counter
        run._boxed_call = getattr(compiled, "_boxed_call", False)
        return run


def compiled_matches_eager(architecture: str, device: str, backend: str, precision: str = "fp32") -> None:
    try:
        eager = make_trainer(make_model(architecture, device), device, precision)
        model = make_model(architecture, device)
        counting = CountingBackend(backend)
        compiled = make_trainer(model, device, precision, train_module=torch.compile(model, backend=counting))
        for _ in range(2):  # the second step runs the cached graph with updated weights
            before = counting.calls
            ref, got = eager.train_step(), compiled.train_step()
            assert counting.calls > before, (architecture, backend)  # this step ran the compiled graphs, not the model
            tol = 1e-5 if precision == "fp32" else 1e-2
            assert got["loss"] == pytest.approx(ref["loss"], rel=tol), (architecture, backend)
            assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=10 * tol)
        for (name, a), b in zip(compiled.model.named_parameters(), eager.model.parameters(), strict=True):
            # fp32: the same ops, so the same weights. bf16: a near-zero gradient may round to the other sign, and the
            # first AdamW steps move every weight by about lr * sign(grad), so only a bound of a few lr holds
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4 if precision == "fp32" else 3e-2, msg=name)
    finally:
        torch.compiler.reset()  # a failed check must not leave compiled graphs behind for the next test


SLOW_TO_CAPTURE = {"hybrid", "hymba"}  # 10-20 s each here: made of the two block kinds the default run captures


@pytest.mark.parametrize(
    "architecture", [pytest.param(a, marks=[pytest.mark.slow] if a in SLOW_TO_CAPTURE else []) for a in ARCHITECTURES]
)
def test_compiled_training_step_matches_eager_for_every_architecture(architecture):
    compiled_matches_eager(architecture, "cpu", "aot_eager")


@pytest.mark.slow
@pytest.mark.skipif(not any(map(shutil.which, ("cc", "gcc", "clang"))), reason="inductor on CPU needs a C compiler")
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_inductor_compiled_bf16_step_matches_eager_for_every_architecture(architecture):
    compiled_matches_eager(architecture, "cpu", "inductor", precision="bf16")


CUDA_SCRIPT = """
import tests.test_gpu_paths_on_cpu as t
from tests.test_gpu_paths_on_cpu import ARCHITECTURES, compiled_matches_eager
for architecture in ARCHITECTURES:  # the compiled Triton scan inside Mamba, hybrid and Hymba
    t.test_bf16_autocast_step_tracks_the_fp32_step(architecture, device="cuda")
    print("bf16", architecture, "ok", flush=True)
compiled_matches_eager("mamba", "cuda", "inductor", precision="bf16")  # Triton kernels inside a compiled graph
print("inductor mamba ok", flush=True)
"""


@pytest.mark.gpu
@CUDA
def test_bf16_and_compiled_steps_on_cuda():
    # In a fresh process: an interpreter test module collected beside this one sets TRITON_INTERPRET for the whole
    # pytest process, and Triton fixes the mode when the kernels are first imported.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", CUDA_SCRIPT], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count(" ok") == len(ARCHITECTURES) + 1


@pytest.mark.parametrize(
    "architectures",
    [
        pytest.param(("transformer",), id="transformer"),
        pytest.param(tuple(ARCHITECTURES), id="all", marks=pytest.mark.slow),
    ],
)
def test_runner_train_compile_true_trains_the_compiled_module(architectures, tmp_path, monkeypatch):
    # train.compile=true through the experiment runner: the loop must step through the compiled wrapper while the
    # checkpoints hold the plain model's keys. aot_eager stands in for inductor (same capture, no C++ build).
    import json

    from assignment_experiments.run_experiment import main

    calls = []
    real_compile = torch.compile
    counting = CountingBackend("aot_eager")

    def aot_eager_compile(module, **kwargs):
        calls.append(type(module).__name__)
        return real_compile(module, backend=counting)

    # a final loss and plain checkpoint keys come just as well from a loop that trains the bare model: count, step by
    # step, the calls into the compiled graphs (evaluations run outside train_step and are not counted)
    graph_calls_per_step = []
    real_train_step = Trainer.train_step

    def counted_train_step(self):
        before = counting.calls
        metrics = real_train_step(self)
        graph_calls_per_step.append(counting.calls - before)
        return metrics

    monkeypatch.setattr(torch, "compile", aot_eager_compile)
    monkeypatch.setattr(Trainer, "train_step", counted_train_step)
    tokens = tmp_path / "tokens.npy"
    np.save(tokens, (np.arange(600) * 7 % VOCAB).astype(np.uint16))
    for architecture in architectures:
        sizes = ARCHITECTURES[architecture]
        model = {"architecture": architecture, **{"context_length": T, "num_heads": 2, "num_layers": 1}, **sizes}
        config = {
            "description": "compile check", "model": model,
            "data": {"source": "tokens", "path": str(tokens), "final_eval_max_tokens": 64},
            "optim": {"lr": 1e-2, "warmup_steps": 1, "min_lr": 1e-3},
            "train": {"max_steps": 2, "batch_size": 2, "eval_every": 2, "eval_batches": 1, "num_threads": 1,
                      "compile": True, "precision": "bf16"},
            "logging": {"log_every": 1, "progress_bar": False},
        }  # fmt: skip
        if architecture == "hybrid":
            model.pop("num_layers")
        path = tmp_path / f"{architecture}.json"
        path.write_text(json.dumps(config))
        graph_calls_per_step.clear()
        try:
            assert main(["--config", str(path), "--runs-dir", str(tmp_path / "runs"), "--name", architecture]) == 0
        finally:
            torch.compiler.reset()  # also when the run fails: no compiled graphs left for the next test
        assert len(graph_calls_per_step) == 2 and min(graph_calls_per_step) >= 1, (architecture, graph_calls_per_step)
        run = tmp_path / "runs" / architecture
        summary = json.loads((run / "summary.json").read_text())
        assert np.isfinite(summary["final_val_loss"]), architecture
        saved = torch.load(sorted((run / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
        assert not any(k.startswith("_orig_mod") for k in saved), architecture
    assert len(calls) == len(architectures)


# ----- fp16 and the GradScaler ----------------------------------------------------------------------------------------
def test_fp16_grad_scaler_skips_an_overflowing_step_and_backs_off_then_steps_normally():
    model = make_model("transformer")
    trainer = make_trainer(model, precision="fp16", grad_clip=0.0)
    assert trainer.scaler is not None and trainer.scaler.is_enabled()
    scale = trainer.scaler.get_scale()
    before = weights(model)
    hooks = [p.register_hook(lambda g: torch.full_like(g, float("inf"))) for p in model.parameters()]
    trainer.train_step()  # finite loss, infinite gradients: the scaler skips the update instead of raising
    for hook in hooks:
        hook.remove()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert trainer.scaler.get_scale() == scale * trainer.scaler.get_backoff_factor()
    metrics = trainer.train_step()
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert trainer.scaler.get_scale() == scale * trainer.scaler.get_backoff_factor()  # growth waits for its interval


def test_fp16_step_unscales_gradients_before_clipping_and_tracks_fp32():
    fp32 = make_trainer(make_model("transformer"))
    fp16 = make_trainer(make_model("transformer"), precision="fp16")
    ref, got = fp32.train_step(), fp16.train_step()
    assert fp16.scaler.get_scale() > 1000  # the loss really was scaled up for backward
    assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=5e-2)  # so the norm was taken after unscaling
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-2)


def test_the_grad_scaler_state_survives_a_checkpoint(tmp_path):
    trainer = make_trainer(make_model("transformer"), precision="fp16")
    trainer.checkpoint_dir = tmp_path
    trainer.train_step()
    trainer.scaler.update(1234.0)
    path = trainer.save()
    resumed = make_trainer(make_model("transformer"), precision="fp16")
    resumed.resume(path)
    assert resumed.scaler.get_scale() == 1234.0


# ----- device.type == "cuda" branches reachable without a device ------------------------------------------------------
def test_cuda_tensors_resolve_the_auto_scan_backend_to_triton_and_cpu_ones_to_chunked():
    from kernels.selective_scan import resolve_backend

    pytest.importorskip("triton")
    assert resolve_backend(torch.device("cuda"), "auto") == "triton"
    assert resolve_backend("cuda:1", "auto") == "triton"
    assert resolve_backend("cpu", "auto") == "chunked"


def test_runner_refuses_cuda_and_fp16_without_a_device_in_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    import json

    from assignment_experiments.run_experiment import main

    tokens = tmp_path / "tokens.npy"
    np.save(tokens, (np.arange(600) * 7 % VOCAB).astype(np.uint16))
    config = {
        "description": "device check", "model": {"architecture": "transformer", **ARCHITECTURES["transformer"]},
        "data": {"source": "tokens", "path": str(tokens)}, "optim": {"lr": 1e-2, "warmup_steps": 2, "min_lr": 1e-3},
        "train": {"max_steps": 8, "batch_size": 2},
    }  # fmt: skip
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    for setting, message in (("train.device=cuda", "no CUDA device is visible"), ("train.precision=fp16", "fp16")):
        args = ["--config", str(path), "--runs-dir", str(tmp_path / "runs"), "--name", "x", "--set", setting]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs" / "x").exists()
