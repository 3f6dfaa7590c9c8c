"""A new user's path through a trained run: train a tiny run, sample from it, evaluate it (equal to summary.json),
copy the folder somewhere else and sample again; plus the pieces that make a run folder self-contained."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from assignment_experiments import evaluate, sample
from assignment_experiments.run_experiment import main as run_main
from assignment_experiments.run_loading import RunFolderError, find_checkpoint, load_run, load_run_tokenizer


def tiny_text_config(tmp_path: Path, **train) -> Path:
    config = {
        "description": "walkthrough",
        "model": {"architecture": "transformer", "context_length": 32, "d_model": 32, "num_layers": 1, "num_heads": 2},
        "data": {"source": "stories", "tokenizer": "bpe", "tokenizer_vocab_size": 300, "num_bytes": 60000,
                 "val_fraction": 0.1, "cache_dir": str(tmp_path / "cache"), "final_eval_max_tokens": 2048},
        "optim": {"lr": 1e-2, "warmup_steps": 2},
        "train": {"max_steps": 10, "batch_size": 4, "eval_every": 5, "eval_batches": 2, "checkpoint_every": 5,
                  "keep_checkpoints": 3, "num_threads": 1, "sample_max_new_tokens": 12, **train},
        "logging": {"log_every": 5, "progress_bar": False},
    }  # fmt: skip
    path = tmp_path / "tiny_text.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("walkthrough")
    threads = torch.get_num_threads()
    try:
        assert run_main(["--config", str(tiny_text_config(tmp)), "--runs-dir", str(tmp / "runs"), "--name", "w"]) == 0
    finally:
        torch.set_num_threads(threads)
    return tmp / "runs" / "w"


def test_walkthrough_train_sample_evaluate_copy_and_sample_again(trained_run, tmp_path, capsys, one_thread):
    summary = json.loads((trained_run / "summary.json").read_text())
    capsys.readouterr()

    assert sample.main([str(trained_run), "--prompt", "Once upon a time", "--max-new-tokens", "8", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert "Once upon a time" in first and "tokens/s" in first

    assert evaluate.main([str(trained_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == summary["steps"]
    assert abs(result["loss"] - summary["final_val_loss"]) <= 1e-6
    assert math.isclose(result["perplexity"], summary["final_val_perplexity"], rel_tol=1e-5)

    copy = tmp_path / "elsewhere" / "my_run"
    shutil.copytree(trained_run, copy)
    assert sample.main([str(copy), "--prompt", "Once upon a time", "--max-new-tokens", "8", "--seed", "3"]) == 0
    again = capsys.readouterr().out
    strip = lambda text: text.split("\n", 1)[1].rsplit("[", 1)[0]  # drop the header line and the timing
    assert strip(again) == strip(first)  # same weights, tokenizer and seed: the same continuation


def test_streamed_text_is_the_decoded_continuation(trained_run, one_thread):
    import io

    run = load_run(trained_run)
    out = io.StringIO()
    texts = sample.sample_run(run, ["The little dog"], 10, temperature=0.0, top_p=1.0, seed=0, out=out)
    assert f"The little dog{texts[0]}\n[" in out.getvalue()


def test_run_folder_holds_its_tokenizer_with_checksums_in_the_summary(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    info = summary["tokenizer"]
    assert info["kind"] == "bpe" and set(info["files"]) == {"vocab.json", "merges.txt"}
    tokenizer = load_run_tokenizer(trained_run)
    assert tokenizer.decode(tokenizer.encode("Once upon a time")) == "Once upon a time"
    assert tokenizer.vocab_size == summary["vocab_size"] == 300


def test_a_damaged_tokenizer_file_is_refused_by_name(trained_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    merges = copy / "tokenizer" / "merges.txt"
    merges.write_text(merges.read_text()[:-20])
    with pytest.raises(RunFolderError, match="merges.txt"):
        load_run_tokenizer(copy)
    assert sample.main([str(copy)]) == 2
    assert "merges.txt" in capsys.readouterr().err


def test_config_json_is_resolved_and_loads_back(trained_run):
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"]["vocab_size"] == 300
    assert config["model"]["norm"] == "pre"  # the model's default, written out
    assert config["data"]["tokenizer_vocab_size"] == 300 and config["optim"]["betas"] == [0.9, 0.95]
    assert config["data"]["data_dir"] == "data"


def test_checkpoint_choice_latest_best_and_step(trained_run, tmp_path, capsys):
    assert find_checkpoint(trained_run, "latest").name == "step_0000010.pt"
    assert find_checkpoint(trained_run, "5").name == "step_0000005.pt"
    assert find_checkpoint(trained_run, "best").name in {"step_0000005.pt", "step_0000010.pt"}
    with pytest.raises(RunFolderError, match="latest, best or one of the steps"):
        find_checkpoint(trained_run, "7")
    assert evaluate.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_evaluate_scores_another_text_file_with_the_runs_tokenizer(trained_run, tmp_path, capsys, one_thread):
    text = tmp_path / "other.txt"
    text.write_text("Once upon a time, there was a little dog. The dog liked to play.<|endoftext|>" * 20)
    assert evaluate.main([str(trained_run), "--path", str(text), "--source", "text", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert math.isfinite(result["loss"]) and result["tokens"] > 0


def test_metrics_start_with_the_loss_at_initialisation(trained_run):
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    first_eval = next(r for r in records if r["kind"] == "eval")
    assert first_eval["step"] == 0
    assert abs(first_eval["val_loss"] - math.log(300)) < 0.6  # about ln V at initialisation
    train = [r for r in records if r["kind"] == "train"]
    assert all(r["model_flops_per_s"] > 0 for r in train)


def test_environment_records_the_git_commit_and_dirty_flag(trained_run):
    env = json.loads((trained_run / "environment.json").read_text())
    assert "git_commit" in env and "git_dirty" in env
    if env["git_commit"] is not None:
        assert len(env["git_commit"]) == 40 and isinstance(env["git_dirty"], bool)


@pytest.mark.slow  # one more tiny training run (~5-20 s on the shared machine)
def test_evaluate_a_synthetic_task_run_gives_the_summarys_loss_and_accuracy(tmp_path, capsys, one_thread):
    from tests.test_runner import tiny_config

    config = tiny_config(tmp_path, max_steps=2, eval_every=2, checkpoint_every=2, sample_prompts=[])
    task = '{"vocab_size": 32, "num_pairs": 4, "seq_len": 16}'
    code = run_main(["--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--name", "mqar",
                     "--set", "data.source=synthetic", "--set", "data.task=mqar", "--set", f"data.task_options={task}",
                     "--set", "data.path=null", "--set", "data.final_eval_max_tokens=2048"])  # fmt: skip
    assert code == 0
    run = tmp_path / "runs" / "mqar"
    summary = json.loads((run / "summary.json").read_text())
    assert not (run / "tokenizer").exists()  # no text, no tokenizer; evaluate still works
    capsys.readouterr()
    assert evaluate.main([str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert abs(result["loss"] - summary["final_val_loss"]) <= 1e-6
    assert result["accuracy"] == summary["final_val_accuracy"]
    assert sample.main([str(run)]) == 2  # nothing to decode: one line, exit 2
    assert "no tokenizer" in capsys.readouterr().err
