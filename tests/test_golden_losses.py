"""Golden final validation losses: the numbers a refactor of the models must not move.

Each case trains a tiny model of one architecture through the real runner (config -> data -> model -> trainer ->
final evaluation) for a few CPU steps on one thread, and compares ``final_val_loss`` in ``summary.json`` with the value
recorded before the model code was restructured. CPU training on one thread is bit-deterministic on one machine,
but not across CPU models: PyTorch's CPU kernels pick their SIMD code by the processor, and on an AMD EPYC the
recorded values came out 1-2 float32 ULPs away (2.4e-7 to 4.8e-7 at losses of 2.1-2.6). So the comparison allows
``ULPS`` float32 ULPs of the golden value (~2e-6 here). Any change in initialisation order or parameter layout still
moves the loss by orders of magnitude more (a different random draw: ~1e-2), and so does any real change of numerics
over these steps.

A deliberate change of numerics (a fixed inconsistency, a changed default) updates the value in its own commit that
names the change and the published results it affects.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assignment_experiments.run_experiment import main

SMALL = {"context_length": 16, "d_model": 16}
SSM = {"d_state": 4}
CASES: dict[str, dict] = {
    "transformer": {"architecture": "transformer", "num_layers": 2, "num_heads": 2},
    "transformer_tied_learned": {
        "architecture": "transformer", "num_layers": 2, "num_heads": 2, "tie_embeddings": True, "positions": "learned",
    },
    "mamba": {"architecture": "mamba", "num_layers": 2, **SSM},
    "mamba_tied": {"architecture": "mamba", "num_layers": 2, "tie_embeddings": True, **SSM},
    "hybrid_AMAM": {"architecture": "hybrid", "pattern": "AMAM", "num_heads": 2, **SSM},
    "hymba": {"architecture": "hymba", "num_layers": 2, "num_heads": 2, "options": {"num_meta_tokens": 2}, **SSM},
    "hymba_tied": {"architecture": "hymba", "num_layers": 2, "num_heads": 2, "tie_embeddings": True, **SSM},
    # Typed sections: today's defaults (paper fusion and schedule; the flat cases above load as earlier runs did).
    "hymba_paper": {
        "architecture": "hymba", "num_layers": 4, "num_meta_tokens": 2, "attention": {"num_heads": 2},
        "ssm": {"d_state": 4},
    },
    "hymba_paper_kv_sharing": {
        "architecture": "hymba", "num_layers": 4, "num_meta_tokens": 2,
        "attention": {"num_heads": 2, "global_layers": [0]}, "ssm": {"d_state": 4}, "hymba": {"kv_sharing": True},
    },
    "moe_transformer": {
        "architecture": "transformer", "num_layers": 2, "num_heads": 2, "options": {"moe": {"num_experts": 4}},
    },
    "moe_hybrid": {
        "architecture": "hybrid", "pattern": "AM", "num_heads": 2, "options": {"moe": {"num_experts": 4}}, **SSM,
    },
    "mhc_hybrid_paper": {
        "architecture": "hybrid", "pattern": "AM", "attention": {"num_heads": 2}, "ssm": {"d_state": 4},
        "residual": {"kind": "mhc", "hc_expansion": 2},
    },
    "mhc_hybrid": {
        "architecture": "hybrid", "pattern": "AM", "num_heads": 2, "options": {"residual": "mhc", "hc_expansion": 2},
        **SSM,
    },
}  # fmt: skip

ULPS = 8  # the float32 ULPs a loss may differ by across CPU models (module docstring)
GOLDEN: dict[str, float] = {
    "hybrid_AMAM": 2.4545772075653076,
    "hymba": 2.230339527130127,
    "hymba_paper": 2.1366708278656006,
    "hymba_paper_kv_sharing": 2.2117323875427246,
    "hymba_tied": 2.1778383255004883,
    "mamba": 3.528024673461914,
    "mamba_tied": 3.4586942195892334,
    "mhc_hybrid": 2.866729736328125,
    "mhc_hybrid_paper": 2.7743446826934814,
    "moe_hybrid": 2.5264766216278076,
    "moe_transformer": 2.624911308288574,
    "transformer": 2.5530521869659424,
    "transformer_tied_learned": 2.867638111114502,
}


def _config(tmp_path: Path, model: dict) -> Path:
    tokens = tmp_path / "tokens.npy"
    period = np.random.default_rng(0).integers(0, 40, size=23)
    np.save(tokens, np.tile(period, 60).astype(np.uint16))
    config = {
        "description": "golden-loss case",
        "model": {**SMALL, **model},
        "data": {"source": "tokens", "path": str(tokens), "final_eval_max_tokens": 256},
        "optim": {"lr": 1e-2, "warmup_steps": 2, "min_lr": 1e-3},
        "train": {"max_steps": 6, "batch_size": 4, "eval_every": 6, "eval_batches": 2, "checkpoint_every": 6,
                  "num_threads": 1, "sample_prompts": []},
        "logging": {"log_every": 3, "progress_bar": False, "wandb": "disabled"},
    }  # fmt: skip
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(config))
    return path


def final_val_loss(tmp_path: Path, model: dict) -> float:
    config = _config(tmp_path, model)
    assert main(["--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--name", "golden"]) == 0
    return json.loads((tmp_path / "runs" / "golden" / "summary.json").read_text())["final_val_loss"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_final_validation_loss_matches_the_recorded_golden_value(case, tmp_path):
    loss = final_val_loss(tmp_path, CASES[case])
    ulps = abs(loss - GOLDEN[case]) / float(np.spacing(np.float32(GOLDEN[case])))
    assert ulps <= ULPS, f"{case}: final_val_loss {loss!r} != golden {GOLDEN[case]!r} ({ulps:.0f} float32 ULPs)"
