"""``benchmarks/gpu_check.py``, the one-command GPU check, exercised on CPU so that it cannot rot.

``--smoke`` runs every step (pytest -m gpu, the Triton scan under the interpreter, the bf16 + torch.compile
Transformer step beside its torch-native twin, Mamba/hybrid with the Triton and reference scans, generation) at
tiny sizes; the default run does it with ``--inline`` (one process: the start-up of a process per step costs more
than the steps), and the slow run with a process per step, as on a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def run_script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)  # what the GPU machine does: plain python, the repository on PYTHONPATH
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def check_smoke_results(out: Path, steps: str = "abcde") -> dict:
    results = json.loads((out / "results.json").read_text())
    by_key = {s["key"]: s for s in results["steps"]}
    assert list(by_key) == list(steps)
    for key, s in by_key.items():
        assert s["status"] == "ok", (key, s.get("error"), s.get("notes"))
        assert s["rows"] and not [r for r in s["rows"] if "skipped" in r], (key, s["rows"])
    md = (out / "results.md").read_text()
    assert all(f"## ({key})" in md for key in steps)
    return by_key


def test_smoke_run_exercises_every_step_and_writes_both_reports(tmp_path):
    done = run_script("--out", str(tmp_path), "--smoke", "--inline")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = check_smoke_results(tmp_path)
    assert steps["a"]["rows"][0]["exit code"] == 0  # the gpu-marked tests were collected (and skip on CPU)
    scan = steps["b"]["rows"]
    assert {r["dtype"] for r in scan} == {"float32", "bfloat16"}
    assert all(r["triton ms"] > 0 for r in scan) and all("reference ms" in r for r in scan if r["dtype"] == "float32")
    models = {r["model"] for r in steps["c"]["rows"]}
    assert models == {"ours, torch_sdpa attention", "torch-native twin"}
    assert all(r["tokens / s"] > 0 and "MFU" in r for r in steps["c"]["rows"])
    assert all("triton vs reference" in r for r in steps["d"]["rows"]) and len(steps["d"]["rows"]) == 2
    assert {(r["model"].split(",")[0], r["batch"]) for r in steps["e"]["rows"]} == {
        ("transformer", 1), ("transformer", 16), ("mamba", 1), ("mamba", 16)
    }  # fmt: skip


def test_a_failing_step_is_recorded_and_the_next_one_still_runs(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)

    def broken(step):
        step.add({"what": "first row"})
        raise RuntimeError("boom")

    monkeypatch.setitem(gpu_check.RUNNERS, "a", broken)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    code = gpu_check.main(["--out", str(tmp_path), "--smoke", "--inline", "--steps", "ae"])
    results = {s["key"]: s for s in json.loads((tmp_path / "results.json").read_text())["steps"]}
    assert code == 1
    assert results["a"]["status"] == "failed" and results["a"]["error"] == "RuntimeError: boom"
    assert results["a"]["rows"] == [{"what": "first row"}]  # what it measured before failing is kept
    assert results["e"]["status"] == "ok" and len(results["e"]["rows"]) == 4
    assert "Error: `RuntimeError: boom`" in (tmp_path / "results.md").read_text()


def test_without_a_gpu_a_full_run_refuses_in_one_line_and_bad_steps_exit_2(tmp_path):
    done = run_script("--out", str(tmp_path), "--steps", "b")
    if "no CUDA device" not in done.stdout:
        pytest.skip("a CUDA device is visible")
    assert done.returncode == 2 and len(done.stdout.strip().splitlines()) == 1
    assert not (tmp_path / "results.json").exists()
    bad = run_script("--out", str(tmp_path), "--steps", "bz")
    assert bad.returncode == 2 and "--steps takes letters from abcde" in bad.stderr


@pytest.mark.slow
def test_smoke_run_with_a_process_per_step_as_on_a_gpu(tmp_path):
    done = run_script("--out", str(tmp_path), "--smoke", "--steps", "abe")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_smoke_results(tmp_path, "abe")
