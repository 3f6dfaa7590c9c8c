"""Compiled (not interpreted) Triton selective scan on CUDA vs the reference; deselected by default (``-m gpu``).

Runs in a subprocess without ``TRITON_INTERPRET``: the interpreter test module sets that variable for this whole
pytest process, and Triton fixes the mode when the kernels are decorated.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = """
import torch
from kernels.selective_scan import selective_scan
from tests.test_selective_scan import make_inputs, run_with_grads
from kernels.selective_scan.reference import selective_scan_reference
from kernels.selective_scan.triton_scan import selective_scan_triton
for L, dtype, tol in [(1, torch.float32, 1e-4), (129, torch.float32, 1e-4), (300, torch.bfloat16, 3e-2)]:
    x = {k: v.detach().to("cuda", dtype).requires_grad_() for k, v in make_inputs(b=2, d=70, n=16, L=L).items()}
    ref = run_with_grads(selective_scan_reference, x)
    got = run_with_grads(selective_scan_triton, x)
    torch.testing.assert_close(got[0].float(), ref[0].float(), rtol=tol, atol=tol)
    torch.testing.assert_close(got[1], ref[1].float(), rtol=tol, atol=tol)
    for name, want in ref[2].items():
        scale = want.abs().max().float().clamp_min(1.0)
        torch.testing.assert_close(got[2][name].float() / scale, want.float() / scale, rtol=tol, atol=tol, msg=name)
assert selective_scan(**x).dtype == torch.bfloat16
print("ok")
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_triton_matches_reference_on_cuda():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-4000:]
