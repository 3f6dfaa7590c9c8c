"""Ahead-of-time compilation of the selective-scan Triton kernels for sm_80 and sm_90, on a machine with no GPU.

Each check runs ``python -m kernels.selective_scan.triton_aot`` in a subprocess without ``TRITON_INTERPRET`` (the
interpreter tests set it for this whole pytest process, and interpreted kernels cannot be compiled) and with an
empty Triton cache, so Triton's whole pipeline and its bundled ptxas really run. The default run compiles the
kernels as a Mamba block launches them (every switch of a training step, aligned sizes, d_state 16) for both
targets and both input dtypes, plus one corner per kernel; the full matrix (every switch combination, every integer
specialisation, every launchable block shape up to d_state 256) is marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
pytestmark = pytest.mark.skipif(not PTXAS.is_file(), reason="this Triton build bundles no ptxas")


def compile_set(name: str, tmp_path: Path, jobs: int = 2) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton >= 3.9 warns when unset; 1 is what launches use
    out = tmp_path / "aot.json"
    command = [sys.executable, "-m", "kernels.selective_scan.triton_aot", "--set", name, "--jobs", str(jobs)]
    done = subprocess.run([*command, "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.exists(), done.stderr[-4000:]
    results = json.loads(out.read_text())["results"]
    failed = [r["variant"]["label"] + ": " + (r["error"] or "") for r in results if r["error"]]
    assert not failed, "\n".join(failed)
    assert done.returncode == 0, done.stdout[-4000:]  # non-zero when a variant would not fit its target
    return results


def check_fits_target(r: dict) -> None:
    v, usage = r["variant"], r["usage"]
    assert r["cubin_bytes"] > 4096, v["label"]
    assert r["ptx_target"].startswith(f"sm_{v['arch']}"), (v["label"], r["ptx_target"])
    limit = {80: 163 * 1024, 90: 227 * 1024}[v["arch"]]
    assert 0 <= r["shared"] <= limit, v["label"]
    if usage:  # the bundled cuobjdump read the cubin
        assert 0 < usage["reg"] <= 255, v["label"]


def test_the_model_launches_compile_for_sm80_and_sm90_in_fp32_and_bf16_without_spills(tmp_path):
    results = compile_set("default", tmp_path)
    for r in results:
        check_fits_target(r)
    model = [r for r in results if r["variant"]["ints"] == "aligned"]
    covered = {(r["variant"]["kernel"], r["variant"]["arch"], r["variant"]["dtype"]) for r in model}
    assert covered == {(k, a, d) for k in ("fwd", "bwd") for a in (80, 90) for d in ("fp32", "bf16")}
    for r in model:
        flags = r["variant"]["flags"]
        assert all(flags[name] for name in ("HAS_D", "HAS_Z", "HAS_BIAS", "SOFTPLUS")), r["variant"]["label"]
        assert r["variant"]["block_d"] == 32 and r["variant"]["block_n"] == 16
        if r["usage"]:  # registers spilled to local memory would make the scan memory-bound on its own traffic
            assert r["usage"].get("local", 0) == 0 and r["usage"].get("stack", 0) == 0, r
    # bf16 inputs change the loads and the y store: a different binary from the fp32 one
    by_key = {(r["variant"]["kernel"], r["variant"]["arch"], r["variant"]["dtype"]): r["cubin_bytes"] for r in model}
    assert by_key[("fwd", 90, "bf16")] != by_key[("fwd", 90, "fp32")]
    corners = [r for r in results if r["variant"]["ints"] == "ones"]
    assert {r["variant"]["kernel"] for r in corners} == {"fwd", "bwd"}


@pytest.mark.slow
def test_every_launchable_variant_compiles_for_sm80_and_sm90(tmp_path):
    results = compile_set("full", tmp_path)
    for r in results:
        check_fits_target(r)
    flags_seen = {(r["variant"]["kernel"], tuple(sorted(r["variant"]["flags"].items()))) for r in results}
    assert sum(k == "fwd" for k, _ in flags_seen) == 16 and sum(k == "bwd" for k, _ in flags_seen) == 32
