"""The study scripts open finished runs through run_loading (weights_only checkpoints) and produce their tables."""

from __future__ import annotations

import json

import pytest

from assignment_experiments.run_experiment import main as run_main
from assignment_experiments.studies import eval_length_generalization, hymba_branch_shares, moe_expert_load
from tests.test_runner import tiny_config


def _train(tmp_path, name, *overrides):
    config = tiny_config(tmp_path, max_steps=2, eval_every=2, checkpoint_every=2)
    args = ["--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--name", name]
    for override in overrides:
        args += ["--set", override]
    assert run_main(args) == 0
    return tmp_path / "runs" / name


@pytest.mark.slow  # three tiny training runs: ~15-50 s on the shared 2-core machine
def test_study_scripts_read_runs_through_run_loading(tmp_path, capsys, one_thread):
    learned = _train(tmp_path, "lengen", "model.positions=learned")
    out = tmp_path / "out"
    args = [str(learned), "--factor", "2", "--bucket", "8", "--max-tokens", "128", "--out-dir", str(out)]
    assert eval_length_generalization.main(args) == 0
    result = json.loads((out / "length_generalization.json").read_text())
    assert result["lengen"]["checkpoint_step"] == 2 and result["lengen"]["positions"] == "learned"

    moe = _train(tmp_path, "moe", 'model.options={"moe": {"num_experts": 4, "top_k": 1}}')
    assert moe_expert_load.main([str(moe), "--max-tokens", "128", "--out-dir", str(out)]) == 0
    load = json.loads((out / "expert_load.json").read_text())["moe"]
    assert load["num_experts"] == 4 and load["checkpoint_step"] == 2

    hymba = _train(tmp_path, "hymba", "model.architecture=hymba")
    capsys.readouterr()
    assert hymba_branch_shares.main([str(hymba)]) == 0
    assert "| hymba | step_0000002.pt | 0 |" in capsys.readouterr().out


def test_study_scripts_refuse_a_folder_without_checkpoints(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert hymba_branch_shares.main([str(tmp_path / "empty")]) == 2
    assert "no checkpoints" in capsys.readouterr().err
    with pytest.raises(Exception, match="config.json"):
        moe_expert_load.main([str(tmp_path / "empty"), "--out-dir", str(tmp_path / "out")])
