"""Config loading: types, overrides, and one actionable line (exit code 2, nothing written) for every bad config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from assignment_experiments.config import ConfigError, ExperimentConfig, apply_overrides, config_from_dict, load_config
from assignment_experiments.run_experiment import main

CONFIG_DIR = Path(__file__).resolve().parents[1] / "assignment_experiments" / "configs"


@pytest.fixture
def base_config(tmp_path: Path) -> dict:
    tokens = tmp_path / "tokens.npy"
    np.save(tokens, np.arange(400, dtype=np.uint16) % 50)
    return {
        "description": "test",
        "model": {"architecture": "transformer", "context_length": 16, "d_model": 16, "num_layers": 1, "num_heads": 2},
        "data": {"source": "tokens", "path": str(tokens)},
        "optim": {"warmup_steps": 1},
        "train": {"max_steps": 2, "batch_size": 2, "eval_every": 1, "eval_batches": 1, "checkpoint_every": 0},
        "logging": {"progress_bar": False},
    }


def write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


BAD_CONFIGS = [
    ({"model": {"d_model": 100, "num_heads": 3}}, "model.d_model=100 is not divisible by model.attention.num_heads=3"),
    ({"model": {"colour": "red"}}, "unknown key model.colour"),
    ({"trian": {}}, "unknown key trian"),
    ({"model": {"d_model": "big"}}, "model.d_model='big' has the wrong type"),
    ({"train": {"compile": "yes"}}, "train.compile='yes' has the wrong type"),
    ({"model": {"norm": "layer"}}, "model.norm='layer' is not allowed"),
    ({"model": {"architecture": "hybrid", "pattern": "AMX"}}, "'AMX' has unknown block letter 'X' at position 2"),
    ({"model": {"architecture": "hybrid"}}, "model.pattern is required"),
    ({"model": {"vocab_size": 70000}}, "model.vocab_size=70000 is too large for data.token_dtype='uint16'"),
    ({"data": {"path": "/nonexistent/tokens.npy"}}, "data.path=/nonexistent/tokens.npy does not exist"),
    ({"data": {"source": "synthetic"}}, "data.task is required"),
    ({"train": {"batch_size": 0}}, "train.batch_size=0 must be positive"),
    ({"optim": {"lr": 1e-3, "min_lr": 1e-2}}, "optim.min_lr=0.01 must lie in [0, optim.lr=0.001]"),
    ({"optim": {"schedule": "wsd"}}, "optim.decay_steps=0 with optim.schedule='wsd'"),
    ({"optim": {"betas": [0.9]}}, "optim.betas=[0.9] must be two numbers"),
    ({"optim": {"warmup_steps": 10}}, "exceeds train.max_steps=2"),
    ({"train": {"average_last_k": 3}}, "train.average_last_k=3 exceeds train.keep_checkpoints=2"),
    ({"model": {"options": {"num_experts": 4}}}, "config error: unknown key model.num_experts"),
    ({"model": {"ffn": {"moe": {"top_k": 3}}}}, "config error: model: moe.top_k must be 1 or 2, got 3"),
    ({"data": {"final_eval_max_tokens": 0}}, "data.final_eval_max_tokens=0 must be positive"),
    ({"data": {"stride": 8}}, "data.stride is only used with data.window_mode='sequential'"),
    ({"data": {"window_mode": "sequential", "stride": 1.5}}, "data.stride=1.5 must be a token count >= 1"),
    ({"data": {"window_mode": "sequential", "stride": 0}}, "data.stride=0 must be a token count >= 1"),
]


def merge(base: dict, change: dict) -> dict:
    merged = json.loads(json.dumps(base))
    for section, values in change.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values
    return merged


@pytest.mark.parametrize(("change", "message"), BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_config_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, base_config, change, message):
    path = write(tmp_path, merge(base_config, change))
    runs = tmp_path / "runs"
    code = main(["--config", str(path), "--runs-dir", str(runs), "--name", "bad"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert err.startswith("config error:") and "\n" not in err and "Traceback" not in err
    assert not runs.exists()


def test_set_override_with_a_wrong_type_is_a_config_error(tmp_path, capsys, base_config):
    path = write(tmp_path, base_config)
    code = main(["--config", str(path), "--runs-dir", str(tmp_path / "runs"), "--set", "train.max_steps=lots"])
    assert code == 2
    assert "train.max_steps='lots' has the wrong type" in capsys.readouterr().err


def test_set_overrides_are_parsed_as_json_and_type_checked(tmp_path, base_config):
    config = load_config(
        write(tmp_path, base_config),
        ["optim.lr=3e-4", "optim.betas=[0.8, 0.9]", "model.tie_embeddings=true", "model.attention.rope_theta=500"],
    )
    assert config.optim.lr == 3e-4
    assert config.optim.betas == [0.8, 0.9]
    assert config.model.tie_embeddings is True
    assert config.model.attention.rope_theta == 500.0


def test_flat_model_keys_of_older_configs_load_into_their_sections(tmp_path, base_config):
    """config.json of earlier runs (and --set with the old flat names) keep working: each key moves to its section."""
    legacy = merge(base_config, {"model": {
        "architecture": "hybrid", "pattern": "AM", "num_layers": None, "num_heads": 2, "d_ff": 64, "d_state": 8,
        "rope_theta": None, "norm": None, "options": {"residual": "mhc", "hc_expansion": 2, "moe": {"num_experts": 2}},
    }})  # fmt: skip
    config = load_config(write(tmp_path, legacy), ["model.d_conv=3"])
    m = config.model
    assert (m.attention.num_heads, m.attention.rope_theta, m.norm) == (2, 10000.0, "pre")
    assert (m.ssm.d_state, m.ssm.d_conv, m.ffn.d_ff, m.ffn.kind, m.ffn.moe.num_experts) == (8, 3, 64, "swiglu", 2)
    assert (m.residual.kind, m.residual.hc_expansion) == ("mhc", 2)
    mamba = load_config(write(tmp_path, merge(base_config, {"model": {"architecture": "mamba", "d_ff": 64}})))
    assert mamba.model.ffn.kind == "none"  # an old Mamba config's d_ff never added an FFN, and still does not


def test_integers_are_accepted_where_floats_are_expected(base_config):
    config = config_from_dict(merge(base_config, {"optim": {"lr": 1, "min_lr": 0}}))
    assert isinstance(config.optim.lr, float) and config.optim.lr == 1.0


def test_override_without_equals_sign_names_the_fix():
    with pytest.raises(ConfigError, match="write --set section.key=value"):
        apply_overrides({}, ["optim.lr"])


def test_missing_config_file_is_a_config_error(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_round_trip_through_to_dict_gives_the_same_config(base_config):
    config = config_from_dict(base_config)
    assert config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    assert isinstance(load_config(path), ExperimentConfig)


SUITES = sorted((CONFIG_DIR / "suites").glob("*.json"))


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_every_shipped_suite_run_validates_and_builds_its_model(path):
    from assignment_experiments.run_suite import load_suite
    from assignment_experiments.runner import make_model

    for name, config in load_suite(path, []):
        vocab = config.data.task_options.get("vocab_size", 1024)
        with torch.device("meta"):  # shapes and argument checks only: no memory, no initialisation cost
            model = make_model(config, vocab)
        assert model.vocab_size == vocab, name


def test_fractional_stride_is_a_share_of_the_context_and_integer_stride_is_tokens(base_config):
    from assignment_experiments.data_sources import prepare_data

    for stride, tokens in [(0.5, 8), (1.0, 16), (5, 5)]:
        config = config_from_dict(merge(base_config, {"data": {"window_mode": "sequential", "stride": stride}}))
        batches = prepare_data(config.data, config.model.context_length, "cpu").batches
        starts = batches._sequential(2)._order
        assert starts[1] - starts[0] == tokens, stride


def test_final_evaluation_covers_the_whole_validation_split_unless_capped(base_config):
    assert config_from_dict(base_config).data.final_eval_max_tokens is None
    assert load_config(CONFIG_DIR / "tinystories_baseline.json").data.final_eval_max_tokens is None


def test_missing_corpus_file_is_a_config_error_exit_2(tmp_path, capsys, base_config):
    change = {"data": {"source": "tinystories", "path": None, "data_dir": str(tmp_path / "none"), "tokenizer": "bytes"}}
    code = main(["--config", str(write(tmp_path, merge(base_config, change))), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("config error: data:") and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_file_not_found_during_training_is_not_reported_as_a_config_error(tmp_path, monkeypatch, base_config):
    from cs336_basics.training.loop import Trainer

    def lost_file(self):
        raise FileNotFoundError("checkpoints directory vanished mid-run")

    monkeypatch.setattr(Trainer, "fit", lost_file)
    with pytest.raises(FileNotFoundError, match="vanished mid-run"):
        main(["--config", str(write(tmp_path, base_config)), "--runs-dir", str(tmp_path / "runs")])


def test_config_imports_validation_and_not_the_other_way_round():
    """No import cycle: validation and the error type load without the config module (checked in a fresh process)."""
    code = (
        "import sys, assignment_experiments.config_validation, assignment_experiments.errors; "
        "print('assignment_experiments.config' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_model_section_the_plan_never_reads_is_named_in_a_warning(base_config):
    from assignment_experiments.config_validation import UnusedSettingWarning

    with pytest.warns(UnusedSettingWarning, match="model.ssm is set, but a transformer with plan 'A' has no layer"):
        config_from_dict(merge(base_config, {"model": {"ssm": {"d_state": 8}}}))


def test_the_section_of_a_hymba_branch_that_is_not_built_is_named_in_a_warning(base_config):
    from assignment_experiments.config_validation import UnusedSettingWarning

    hymba = {"architecture": "hymba", "hymba": {"branches": "ssm"}, "attention": {"num_heads": 2}}
    with pytest.warns(UnusedSettingWarning, match="model.attention is set, .* and hymba.branches='ssm' has no layer"):
        config = config_from_dict(merge(base_config, {"model": hymba}))
    assert config.model.spec(64).hymba.branches == "ssm"


def test_every_seed_run_is_its_seed_0_run_but_for_the_seed():
    """A run named ``X_s<k>`` in any suite must be run ``X`` (in any suite) with only the seed, the description and the
    baseline it is compared with changed, so that seeds pool as repeats of one setting (a copied entry that lost its
    base config would not)."""
    from assignment_experiments.run_suite import load_suite

    configs = {name: config.to_dict() for path in SUITES for name, config in load_suite(path, [])}
    checked = 0
    for name, config in configs.items():
        stem, _, seed = name.rpartition("_s")
        if not (seed.isdigit() and stem in configs):
            continue
        base = configs[stem]
        assert config["train"]["seed"] != base["train"]["seed"], name
        differing = sorted(
            f"{section}.{key}"
            for section in config
            if isinstance(config[section], dict)
            for key in config[section].keys() | base[section].keys()
            if config[section].get(key) != base[section].get(key)
        )
        assert set(differing) <= {"train.seed"} and all(
            config[k] == base[k]
            for k in config
            if not isinstance(config[k], dict) and k not in ("description", "baseline")
        ), (name, differing)
        checked += 1
    assert checked >= 20  # the seed suites of the studies
