"""W&B settings follow the wandb environment variables; run ids are unique per run and stable across --resume;
``--print-config`` prints the resolved config; the training log reports model FLOP/s."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from assignment_experiments import tracking
from assignment_experiments.run_experiment import main
from assignment_experiments.tracking import wandb_run_id, wandb_settings
from tests.test_runner import tiny_config

WANDB_VARS = ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_DISABLED")


@pytest.fixture
def clean_wandb_env(monkeypatch):
    for name in WANDB_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_environment_variables_win_over_the_config(clean_wandb_env, tmp_path):
    assert wandb_settings("offline", "proj", tmp_path) == {
        "mode": "offline", "project": "proj", "entity": None, "dir": str(tmp_path)
    }  # fmt: skip
    clean_wandb_env.setenv("WANDB_MODE", "disabled")
    clean_wandb_env.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    clean_wandb_env.setenv("WANDB_PROJECT", "their-project")
    clean_wandb_env.setenv("WANDB_ENTITY", "their-team")
    assert wandb_settings("offline", "proj", tmp_path) == {
        "mode": "disabled", "project": "their-project", "entity": "their-team", "dir": str(tmp_path / "elsewhere")
    }  # fmt: skip
    clean_wandb_env.setenv("WANDB_MODE", "dryrun")  # wandb's older name for offline
    assert wandb_settings("online")["mode"] == "offline"


def test_run_ids_are_unique_per_run_and_stable_for_one_run(clean_wandb_env, tmp_path):
    first, second = tmp_path / "a" / "quickstart", tmp_path / "b" / "quickstart"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    id_first = wandb_run_id(first, "quickstart")
    assert id_first.startswith("quickstart-") and wandb_run_id(second, "quickstart") != id_first
    assert wandb_run_id(first, "quickstart") == id_first  # what --resume sees
    clean_wandb_env.setenv("WANDB_RUN_ID", "chosen")
    assert wandb_run_id(first, "quickstart") == "chosen"


def test_wandb_init_is_not_called_with_the_deprecated_reinit():
    assert "reinit" not in inspect.getsource(tracking._start_wandb)


def test_wandb_mode_disabled_in_the_environment_beats_an_offline_config(clean_wandb_env, tmp_path):
    clean_wandb_env.setenv("WANDB_MODE", "disabled")

    def must_not_start(*args, **kwargs):
        raise AssertionError("W&B was started although WANDB_MODE=disabled")

    clean_wandb_env.setattr(tracking, "_start_wandb", must_not_start)
    config = tiny_config(tmp_path, max_steps=2, eval_every=2, checkpoint_every=2)
    code = main(["--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--name", "r",
                 "--set", "logging.wandb=offline"])  # fmt: skip
    assert code == 0
    assert not (tmp_path / "runs" / "r" / "wandb").exists()


def test_wandb_dir_is_respected_and_resume_continues_the_same_wandb_run(clean_wandb_env, tmp_path):
    pytest.importorskip("wandb")
    clean_wandb_env.setenv("WANDB_DISABLE_CODE", "true")
    clean_wandb_env.setenv("WANDB_DIR", str(tmp_path / "wandb_files"))
    config = tiny_config(tmp_path, max_steps=2, eval_every=2, checkpoint_every=2)
    args = ["--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--name", "r",
            "--set", "logging.wandb=offline"]  # fmt: skip
    assert main(args) == 0
    run_id = (tmp_path / "runs" / "r" / "wandb_run_id").read_text().strip()
    assert not (tmp_path / "runs" / "r" / "wandb").exists()
    assert any(run_id in p.name for p in (tmp_path / "wandb_files" / "wandb").glob("offline-run-*"))
    assert main([*args, "--resume", "--set", "train.max_steps=4"]) == 0
    assert (tmp_path / "runs" / "r" / "wandb_run_id").read_text().strip() == run_id
    runs = [p for p in (tmp_path / "wandb_files" / "wandb").glob("offline-run-*") if run_id in p.name]
    assert len(runs) == 2  # two sessions of one W&B run id


def test_print_config_prints_the_resolved_config_and_writes_nothing(tmp_path, capsys):
    config = tiny_config(tmp_path)
    assert main(["--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"]["norm"] == "pre" and printed["model"]["vocab_size"] is None  # known once data is ready
    assert printed["data"]["data_dir"] is None  # a token-file run reads data.path, no corpus folder
    assert printed["optim"]["betas"] == [0.9, 0.95] and printed["logging"]["wandb"] == "disabled"
    assert printed["train"]["num_threads"] == 1 and printed["data"]["final_eval_max_tokens"] == 256
    assert not (tmp_path / "runs").exists()


def test_resolving_is_idempotent_and_the_resolved_config_loads(tmp_path):
    from assignment_experiments.config import config_from_dict, load_config
    from assignment_experiments.resolved_config import resolve_config

    once = resolve_config(load_config(tiny_config(tmp_path)), vocab_size=40)
    twice = resolve_config(config_from_dict(once.to_dict()), vocab_size=99)
    assert once.to_dict() == twice.to_dict() and once.model.vocab_size == 40


def test_train_records_carry_model_flops_per_second(tmp_path):
    config = tiny_config(tmp_path, max_steps=2, eval_every=2, checkpoint_every=2)
    assert main(["--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--name", "r"]) == 0
    records = [json.loads(line) for line in Path(tmp_path / "runs" / "r" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    for record in train:
        assert record["model_flops_per_s"] > 0 and "mfu" not in record  # CPU: no known peak, so no MFU
    assert [r["step"] for r in records if r["kind"] == "eval"][0] == 0


def test_auto_threads_leave_busy_cores_alone():
    from assignment_experiments.threads import auto_threads

    assert auto_threads(default=2, cores=2, load=0.1) == 2  # idle: torch's default
    assert auto_threads(default=2, cores=2, load=1.2) == 1  # one core busy
    assert auto_threads(default=2, cores=2, load=10.0) == 1  # oversubscribed: never below one
    assert auto_threads(default=16, cores=16, load=4.0) == 12
    assert auto_threads(default=4, cores=4, load=None) == 4  # no load average on this platform


def test_auto_threads_announce_an_oversubscribed_machine(monkeypatch):
    import os

    import torch

    from assignment_experiments.threads import set_threads

    threads = torch.get_num_threads()
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    lines = []
    try:
        assert set_threads(0, announce=lines.append) == 1
        assert lines and "oversubscribed" in lines[0] and "train.num_threads" in lines[0]
        assert set_threads(3, announce=lines.append) == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "model",
    [
        {"architecture": "transformer"},
        {"architecture": "mamba", "num_heads": None},
        {"architecture": "hybrid", "pattern": "AMAM", "num_layers": None},
        {"architecture": "hymba"},
        {"architecture": "transformer", "options": {"moe": {"num_experts": 4, "top_k": 1}}},
        {"architecture": "hybrid", "pattern": "AM", "num_layers": None, "options": {"residual": "mhc"}},
    ],
)
def test_the_resolved_config_builds_the_identical_model(model):
    import torch

    from assignment_experiments.config import config_from_dict
    from assignment_experiments.resolved_config import resolve_config
    from assignment_experiments.runner import make_model

    config = config_from_dict({"model": {"d_model": 32, "num_heads": 2, **model}})
    resolved = config_from_dict(resolve_config(config, vocab_size=300).to_dict())
    assert resolved.model.vocab_size == 300
    torch.manual_seed(0)
    original = make_model(config, 300).state_dict()
    torch.manual_seed(0)
    rebuilt = make_model(resolved, 300).state_dict()
    assert original.keys() == rebuilt.keys()
    assert all(torch.equal(original[key], rebuilt[key]) for key in original)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("ffn", ["swiglu", "silu"])
def test_training_flops_per_token_equals_models_flops_for_a_transformer(tie, ffn):
    from assignment_experiments.outputs import training_flops_per_token
    from cs336_basics.models.base import count_parameters
    from cs336_basics.models.factory import build_model
    from cs336_basics.models.flops import transformer_flops_per_token

    model = build_model("transformer", vocab_size=97, context_length=24, d_model=32, num_layers=3, num_heads=4,
                        d_ff=80, ffn=ffn, tie_embeddings=tie)  # fmt: skip
    counts = {**count_parameters(model), "active": count_parameters(model)["total"]}
    expected = transformer_flops_per_token(32, 3, 24, 97, d_ff=80, ffn=ffn)["training"]
    assert training_flops_per_token(model, 24, counts)[0] == expected


def test_training_flops_count_only_the_active_experts(tmp_path):
    from assignment_experiments.outputs import training_flops_per_token
    from cs336_basics.models.base import count_parameters
    from cs336_basics.models.factory import build_model
    from cs336_basics.models.moe import moe_parameter_counts

    kwargs = {"vocab_size": 50, "context_length": 16, "d_model": 32, "num_layers": 2, "num_heads": 4}
    dense = build_model("transformer", **kwargs)
    moe = build_model("transformer", **kwargs, moe={"num_experts": 4, "top_k": 1})
    counts = lambda m: {**count_parameters(m), "active": moe_parameter_counts(m)["active"]}  # noqa: E731
    dense_flops, moe_flops = (
        training_flops_per_token(dense, 16, counts(dense))[0],
        training_flops_per_token(moe, 16, counts(moe))[0],
    )
    router = 2 * 32 * 4 * 6  # two routers (d_model x experts), 6 FLOPs per entry
    assert moe_flops - router == pytest.approx(dense_flops, rel=0.05)  # one active expert ~ one dense FFN
