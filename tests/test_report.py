"""Report generation from run directories: sorted table, CSV, comparison plot, and an experiment log whose
generated blocks are refreshed while the observations a person wrote survive; suites skip finished runs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from assignment_experiments import report
from assignment_experiments.report import build_report, config_diff, update_log


def fake_run(runs: Path, name: str, ppl: float, baseline: str | None = None, lr: float = 1e-3) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    config = {"description": f"hypothesis of {name}", "baseline": baseline, "optim": {"lr": lr, "min_lr": 1e-4}}
    summary = {
        "name": name, "description": config["description"], "baseline": baseline, "architecture": "transformer",
        "pattern": None, "num_params": 1000, "num_params_non_embedding": 800, "best_val_loss": 2.0,
        "final_val_loss": math.log(ppl), "final_val_perplexity": ppl, "runtime_s": 10.0, "tokens_per_s": 100.0,
        "steps_per_s": 1.0, "peak_memory_mb": 50.0, "steps": 10, "tokens_seen": 1000,
    }  # fmt: skip
    (run / "config.json").write_text(json.dumps(config))
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "environment.json").write_text(json.dumps({"platform": "test-os", "cpu_count": 2, "torch": "x"}))
    records = [{"kind": "eval", "step": s, "elapsed_s": s / 2, "val_loss": 3.0 - s / 10} for s in (5, 10)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_table_and_csv_are_sorted_by_final_validation_perplexity(tmp_path):
    runs = tmp_path / "runs"
    dirs = [fake_run(runs, "b", 9.0), fake_run(runs, "a", 12.0), fake_run(runs, "c", 7.5)]
    table = build_report(dirs, tmp_path / "out", log_path=None)
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == ["c", "b", "a"]
    with (tmp_path / "out" / "results.csv").open() as handle:
        records = list(csv.DictReader(handle))
    assert [r["name"] for r in records] == ["c", "b", "a"]
    assert set(report.COLUMNS) == set(records[0])
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 0


def test_log_entries_hold_hypothesis_config_diff_results_and_environment(tmp_path):
    runs = tmp_path / "runs"
    dirs = [fake_run(runs, "base", 9.0), fake_run(runs, "fast", 8.0, baseline="base", lr=3e-3)]
    log = tmp_path / "EXPERIMENT_LOG.md"
    build_report(dirs, tmp_path / "out", log)
    text = log.read_text()
    assert "\n### fast\n" in text and "\n### base\n" in text
    assert text.count("## Run entries") == 1 and text.index("## Run entries") < text.index("### base")
    assert "hypothesis of fast" in text
    assert "`optim.lr`: 0.001 -> 0.003" in text
    assert "final_val_perplexity 8" in text
    assert "test-os, 2 CPUs" in text
    assert "loss_curves.png" in text


def test_log_entry_date_is_the_runs_finish_time_not_the_file_time(tmp_path):
    runs = tmp_path / "runs"
    dated, undated = fake_run(runs, "dated", 9.0), fake_run(runs, "undated", 8.0)
    summary = json.loads((dated / "summary.json").read_text())
    (dated / "summary.json").write_text(json.dumps({**summary, "finished_at": "2026-01-02 03:04 UTC"}))
    log = tmp_path / "EXPERIMENT_LOG.md"
    build_report([dated, undated], tmp_path / "out", log)
    text = log.read_text()
    assert "- **Date:** 2026-01-02 03:04 UTC\n" in text  # copied run directories keep their real date
    assert text.count("(file time)") == 1  # runs from before the field existed say where their date comes from


def test_updating_the_log_keeps_observations_and_replaces_generated_blocks(tmp_path):
    runs = tmp_path / "runs"
    log = tmp_path / "EXPERIMENT_LOG.md"
    dirs = [fake_run(runs, "base", 9.0)]
    build_report(dirs, tmp_path / "out", log)
    written = log.read_text().replace("_(write what you see and what it means here)_", "The loss fell smoothly.")
    log.write_text(written + "\nA closing note by hand.\n")
    (runs / "base" / "summary.json").write_text(
        json.dumps({**json.loads((runs / "base" / "summary.json").read_text()), "final_val_perplexity": 6.25})
    )
    dirs.append(fake_run(runs, "second", 7.0, baseline="base"))
    build_report(dirs, tmp_path / "out", log)
    text = log.read_text()
    assert "The loss fell smoothly." in text and "A closing note by hand." in text
    assert "final_val_perplexity 6.25" in text and "final_val_perplexity 9" not in text
    assert text.count("### base") == 1 and text.count("### second") == 1 and text.count("## Run entries") == 1
    assert text.count("<!-- generated:summary -->") == 1


def test_update_log_leaves_text_outside_markers_byte_identical():
    text = "# Log\n\nmy notes\n<!-- generated:summary -->\nold\n<!-- /generated:summary -->\nmore notes\n"
    updated = update_log(text, {"summary": "new\n"})
    assert updated == text.replace("old\n", "new\n")


def test_config_diff_lists_only_changed_keys_and_ignores_the_description():
    mine = {"description": "x", "optim": {"lr": 3e-3, "eps": 1e-8}, "model": {"options": {"moe": {"top_k": 1}}}}
    theirs = {"description": "y", "optim": {"lr": 1e-3, "eps": 1e-8}, "model": {"options": {}}}
    moe = "{'num_experts': 8, 'top_k': 1, 'd_ff': None, 'load_balance_weight': 0.01, 'z_loss_weight': 0.001, "
    moe += "'balance_convention': 'switch', 'router_init': 'switch', 'router_init_scale': 0.1}"
    assert config_diff(mine, theirs) == [f"`model.ffn.moe`: None -> {moe}", "`optim.lr`: 0.001 -> 0.003"]


def test_config_diff_sees_no_change_between_the_old_flat_and_the_sectioned_form_of_one_model():
    old = {"model": {"architecture": "transformer", "num_heads": 8, "d_state": None, "options": {"d_ff": 256}}}
    new = {"model": {"architecture": "transformer", "attention": {"num_heads": 8}, "ffn": {"d_ff": 256}}}
    assert config_diff(old, new) == []
    assert config_diff(old, {**new, "model": {**new["model"], "d_model": 64}}) == ["`model.d_model`: 64 -> 128"]


def test_report_without_finished_runs_exits_2(tmp_path, capsys):
    assert report.main(["--runs-dir", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_suite_skips_finished_runs_and_rejects_a_bad_run_before_starting(tmp_path, monkeypatch):
    from assignment_experiments import run_suite, runner

    base = tmp_path / "base.json"
    base.write_text(json.dumps({"model": {"d_model": 16, "num_heads": 2}, "train": {"max_steps": 100}}))
    suite = tmp_path / "suite.json"
    runs_list = [{"name": "done", "set": {"optim.lr": 0.01}}, {"name": "todo", "set": {"optim.lr": 0.001}}]
    suite.write_text(json.dumps({"base": "base.json", "runs": runs_list}))
    runs = tmp_path / "runs"
    fake_run(runs, "done", 5.0)
    started = []
    monkeypatch.setattr(runner, "run_experiment", lambda config, name, runs_dir, resume: started.append(name))
    assert run_suite.run_suite(suite, runs, []) == {"done": "skipped", "todo": "done"}
    assert started == ["todo"]

    runs_list.append({"name": "bad", "set": {"model.d_model": 15}})
    suite.write_text(json.dumps({"base": "base.json", "runs": runs_list}))
    started.clear()
    with pytest.raises(run_suite.ConfigError, match="model.d_model=15 is not divisible.*suite run 'bad'"):
        run_suite.run_suite(suite, runs, [])
    assert started == []


ROOT = Path(__file__).resolve().parents[1]


def _table_names(log_text: str) -> list[str]:
    body = log_text.split("<!-- generated:summary -->", 1)[1].split("<!-- /generated:summary -->", 1)[0]
    return [line.split("|")[1].strip() for line in body.splitlines() if line.startswith("| ")][1:]


def test_the_readme_report_command_on_a_clone_leaves_the_committed_log_intact(tmp_path, monkeypatch, capsys):
    committed = (ROOT / "EXPERIMENT_LOG.md").read_text()
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "EXPERIMENT_LOG.md").write_text(committed)
    fake_run(clone / "runs", "my_new_run", 3.0)
    monkeypatch.chdir(clone)
    assert report.main([]) == 0  # `uv run python -m assignment_experiments.report`, as the README writes it
    assert (clone / "EXPERIMENT_LOG.md").read_text() == committed
    assert (clone / "runs" / "report" / "results.md").is_file()
    assert (clone / "runs" / "report" / "comparison.png").is_file()


def test_log_update_merges_by_run_name_and_keeps_rows_of_runs_it_did_not_scan(tmp_path, monkeypatch):
    committed = (ROOT / "EXPERIMENT_LOG.md").read_text()
    before = _table_names(committed)
    assert len(before) > 100  # the committed study table
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "EXPERIMENT_LOG.md").write_text(committed)
    fake_run(clone / "runs", "my_new_run", 3.0)
    fake_run(clone / "runs", before[0], 1.5)  # a rerun of a logged run replaces that row only
    monkeypatch.chdir(clone)
    assert report.main(["--log", "EXPERIMENT_LOG.md"]) == 0
    text = (clone / "EXPERIMENT_LOG.md").read_text()
    after = _table_names(text)
    assert sorted(after) == sorted([*before, "my_new_run"])
    rerun_row = next(line for line in text.splitlines() if line.startswith(f"| {before[0]} |"))
    assert "| 1.5 |" in rerun_row
    head = committed.split("<!-- generated:summary -->", 1)[0]
    assert text.startswith(head)  # hand-written text before the generated table is untouched
    assert text.count("### my_new_run") == 1


def test_a_torn_summary_is_named_and_skipped(tmp_path, capsys):
    runs = tmp_path / "runs"
    fake_run(runs, "good", 5.0)
    torn = fake_run(runs, "torn", 6.0)
    (torn / "summary.json").write_text((torn / "summary.json").read_text()[:40])
    assert report.main(["--runs-dir", str(runs)]) == 0
    captured = capsys.readouterr()
    assert "torn" in captured.err and "summary.json" in captured.err and "skipping" in captured.err
    assert "| good |" in captured.out and "| torn |" not in captured.out


def test_an_interrupted_log_write_leaves_the_old_log_whole(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    log = tmp_path / "LOG.md"
    log.write_text("# my log\n\nprecious notes\n")
    fake_run(runs, "a", 5.0)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", fail)
    with pytest.raises(OSError):
        build_report([runs / "a"], tmp_path / "out", log)
    assert log.read_text() == "# my log\n\nprecious notes\n"
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_an_entry_states_the_runs_own_settings_not_its_inherited_description(tmp_path):
    base = json.loads((ROOT / "assignment_experiments" / "configs" / "mqar_transformer.json").read_text())
    run = fake_run(tmp_path / "runs", "recall", 5.0)
    config = json.loads(json.dumps(base))
    config["data"]["task_options"].update(num_pairs=8, seq_len=64)
    config["model"]["context_length"] = 64
    config["train"]["max_steps"] = 200
    (run / "config.json").write_text(json.dumps(config))
    summary = json.loads((run / "summary.json").read_text())
    summary.update(description=base["description"], steps=200, tokens_seen=200 * 32 * 64, final_val_accuracy=0.5)
    (run / "summary.json").write_text(json.dumps(summary))
    records = [{"kind": "train", "step": s, "loss": 4.0 - s / 100} for s in (100, 200)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    entry = report.run_entry(report.load_run(run), {}, tmp_path)
    assert "16 key-value pairs in a 128-token sequence" in base["description"]  # the base's words, quoted as such
    assert "base config `configs/mqar_transformer.json`" in entry
    assert "`data.task_options.num_pairs`: 16 -> 8" in entry and "`train.max_steps`: 400 -> 200" in entry
    settings = next(line for line in entry.splitlines() if line.startswith("- **Settings as run:**"))
    assert "8 key-value pairs in a 64-token sequence, vocab 256" in settings
    assert "200 steps of batch 32 x 64 tokens = 409,600 tokens" in settings and "AdamW lr 0.003" in settings
    assert "2 layers, d_model 64, 4 heads" in settings
    assert "final_val_accuracy 0.5 (trivial floor 0.129; " in entry  # 8 values drawn from 128: E[1/distinct]
    assert "answers in the input, elimination floor 0.34" in entry  # ~ (1/8 + 1/7 + ... + 1) / 8 = 0.340
    assert "answers in the input" in settings  # the task's default form
    assert "final train loss 2 (step 200)" in entry


def test_settings_name_a_one_branch_hymba_and_the_ssm_output_norm():
    """An SSM-only Hymba states no attention settings (it has none); Mamba's output norm is stated."""
    from assignment_experiments.config import ExperimentConfig

    model = ExperimentConfig().to_dict()["model"] | {"ffn": {"kind": "none", "d_ff": None, "moe": None}}
    hymba = json.loads(json.dumps(model)) | {"architecture": "hymba", "num_layers": 2}
    hymba["hymba"]["branches"] = "ssm"
    settings = report.model_settings(hymba)
    assert "Hymba layers with the ssm branch only" in settings and "heads" not in settings and "d_state" in settings
    hymba["hymba"]["branches"] = "both"
    assert "heads" in report.model_settings(hymba) and "branch only" not in report.model_settings(hymba)
    mamba = json.loads(json.dumps(model)) | {"architecture": "mamba", "num_layers": 2}
    assert "output norm" not in report.model_settings(mamba)
    mamba["ssm"]["out_norm"] = True
    assert "SSM output norm" in report.model_settings(mamba)


def test_an_entry_names_the_settings_a_resume_changed_and_survives_a_damaged_record(tmp_path):
    run = fake_run(tmp_path / "runs", "resumed", 5.0)
    assert "changed on resume" not in report.run_entry(report.load_run(run), {}, tmp_path)
    changes = [{"step": 500, "key": "optim.lr", "change": "0.01 -> 0.001"},
               {"step": 2000, "key": "train.max_steps", "change": "2000 -> 4000"}]  # fmt: skip
    (run / "config_changes.json").write_text(json.dumps(changes))
    entry = report.run_entry(report.load_run(run), {}, tmp_path)
    assert "optim.lr 0.01 -> 0.001 at step 500, train.max_steps 2000 -> 4000 at step 2,000" in entry
    (run / "config_changes.json").write_text("[{")
    assert "config_changes.json is unreadable" in report.run_entry(report.load_run(run), {}, tmp_path)
