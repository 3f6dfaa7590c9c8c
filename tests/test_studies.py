"""The study scripts that re-score finished runs, end to end on tiny runs trained through the runner."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from assignment_experiments.errors import ConfigError
from assignment_experiments.run_experiment import main as run_experiment
from assignment_experiments.studies import eval_length_generalization, moe_expert_load
from cs336_basics.data.windows import eval_window_starts
from tests.test_runner import tiny_config

RESULTS_RUNS = Path(__file__).resolve().parents[1] / "results" / "runs"


def train(tmp_path, name: str, *overrides: str):
    config = tiny_config(tmp_path, max_steps=2, eval_every=2, checkpoint_every=2)
    sets = [item for o in overrides for item in ("--set", o)]
    assert run_experiment(["--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--name", name, *sets]) == 0
    return tmp_path / "runs" / name


def test_length_study_at_1x_rescores_the_runs_own_final_validation_windows(tmp_path):
    run = train(tmp_path, "learned", "model.positions=learned")
    out = tmp_path / "out"
    args = [str(run), "--factor", "2", "--bucket", "8", "--max-tokens", "256", "--batch", "3", "--out-dir", str(out)]
    assert eval_length_generalization.main(args) == 0
    result = json.loads((out / "length_generalization.json").read_text())["learned"]
    summary = json.loads((run / "summary.json").read_text())
    # final_eval_max_tokens is 256 too: at 1x the study scores exactly the trainer's final windows with its weights
    assert result["1x"]["mean_loss"] == pytest.approx(summary["final_val_loss"], rel=1e-5)
    assert result["train_length"] == 16 and result["2x"]["length"] == 32 and len(result["2x"]["per_position"]) == 32


def test_moe_study_weights_the_expert_load_by_the_validation_tokens(tmp_path):
    run = train(tmp_path, "moe", "model.d_ff=32", 'model.options={"moe": {"num_experts": 4, "top_k": 1}}')
    out = tmp_path / "out"
    assert moe_expert_load.main([str(run), "--max-tokens", "40", "--batch", "2", "--out-dir", str(out)]) == 0
    result = json.loads((out / "expert_load.json").read_text())["moe"]
    # the validation split is the last 5% of tiny_config's 1,380 tokens: 69, i.e. 4 windows of 16; the cap keeps 2
    assert result["tokens"] == 2 * 16 == 16 * len(eval_window_starts(69, 16, max_tokens=40))
    for layer in result["layers"].values():
        assert sum(layer["load"]) == pytest.approx(1.0) and len(layer["load"]) == 4


def _fake_mqar_run(root, name: str, width: int, accuracies: list[float], lr: float | None = None, **model):
    run = root / name
    run.mkdir(parents=True)
    options = {"vocab_size": 256, "num_pairs": 8, "seq_len": 64}
    config = {"model": {"architecture": "transformer", "d_model": width, "context_length": 64, **model},
              "data": {"source": "synthetic", "task": "mqar", "task_options": options}}  # fmt: skip
    if lr is not None:
        config["optim"] = {"lr": lr}
    (run / "config.json").write_text(json.dumps(config))
    summary = {"architecture": config["model"]["architecture"], "final_val_accuracy": accuracies[-1],
               "target_reached_step": 100 * len(accuracies) if accuracies[-1] >= 0.99 else None}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    evals = [{"kind": "eval", "step": 100 * (i + 1), "val_accuracy": a} for i, a in enumerate(accuracies)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [{"kind": "train", "step": 1}, *evals]))
    return run


def test_accuracy_grid_pools_seeds_and_curves_read_every_evaluation(tmp_path):
    from assignment_experiments.studies import plot_accuracy

    runs = [_fake_mqar_run(tmp_path, "a", 64, [0.1, 0.5]), _fake_mqar_run(tmp_path, "b", 64, [0.2, 0.7]),
            _fake_mqar_run(tmp_path, "c", 128, [0.9])]  # fmt: skip
    grid = plot_accuracy.markdown_grid(plot_accuracy.load_points(runs))
    assert "| transformer | 0.600 +- 0.141 (n=2) | 0.900 |" in grid  # mean and sample std of 0.5 and 0.7
    hymba = _fake_mqar_run(tmp_path, "h", 64, [0.3], architecture="hymba")  # a cell with no runs says so in both tables
    points = plot_accuracy.load_points([*runs, hymba])
    assert "| hymba | 0.300 | not run |" in plot_accuracy.markdown_grid(points)
    assert "| hymba | - | not run |" in plot_accuracy.markdown_steps_grid(points)
    curves = plot_accuracy.load_curves(runs)
    assert [(name, steps, acc) for name, steps, acc, _ in curves][0] == ("a", [100, 200], [0.1, 0.5])
    floors = curves[0][3]  # at 8 pairs, vocab 256, answers in the input (the task's default)
    assert floors["value-guessing floor"] == pytest.approx(0.1289, abs=1e-4)
    assert floors["elimination floor"] == pytest.approx(sum(1 / n for n in range(1, 9)) / 8, abs=0.01)
    assert plot_accuracy.main([*map(str, runs), "--vs-step", "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0
    # by variant: the two 64-wide transformer runs (seeds) share one colour and one legend entry; the 128-wide one
    # differs in a setting and the hymba run in its architecture, so each has its own
    everything = [*runs, hymba]
    variants = plot_accuracy.run_variants(everything)
    labels = plot_accuracy.plot_curves(plot_accuracy.load_curves(everything), tmp_path / "v.png", "t", variants)
    assert labels == ["transformer, model.d_model 64 (2 runs)", "transformer, model.d_model 128 (1 run)",
                      "hymba (1 run)"]  # fmt: skip
    longer = _fake_mqar_run(tmp_path, "h_4k", 64, [0.9], architecture="hymba")  # hymba again, with twice the steps
    for run, steps in ((hymba, 2000), (longer, 4000)):
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "train": {"max_steps": steps}}))
    variants = plot_accuracy.run_variants([*everything, longer])
    assert variants["h"] == "hymba, 2,000 steps" and variants["h_4k"] == "hymba, 4,000 steps"
    assert variants["a"] == "transformer, model.d_model 64"  # the transformers differ in width only
    faster = _fake_mqar_run(tmp_path, "a_fast", 64, [0.5], lr=1e-2)  # a rate where the others have the default
    variants = plot_accuracy.run_variants([*runs[:2], faster])
    assert variants["a_fast"] == "transformer, lr 0.01" and variants["a"] == "transformer, lr 0.001"  # the default
    assert (
        plot_accuracy.main([*map(str, everything), "--vs-step", "--by-variant", "--out", str(tmp_path / "v.png")]) == 0
    )


def test_by_variant_splits_runs_whose_rate_or_budget_a_resume_changed(tmp_path, capsys):
    from assignment_experiments.studies import plot_accuracy

    def run(name: str, max_steps: int, lr: float, changes: list | str | None = None) -> Path:
        path = _fake_mqar_run(tmp_path, name, 64, [0.8], architecture="hymba", lr=lr)
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "train": {"max_steps": max_steps}}))
        if changes is not None:
            text = changes if isinstance(changes, str) else json.dumps(changes)
            (path / "config_changes.json").write_text(text)
        return path

    # a 2,000-step run extended to 4,000 on resume is neither: labelled with its change, apart from the 4,000-step run
    longer = run("h_4k", 4000, 1e-3)
    steps = {"key": "train.max_steps", "change": "2000 -> 4000", "step": 2000, "lr_before": 2e-4, "lr_after": 1e-3}
    extended = run("h_ext", 4000, 1e-3, [steps])
    assert plot_accuracy.run_variants([longer, extended]) == {
        "h_4k": "hymba, 4,000 steps",
        "h_ext": "hymba, 4,000 steps (train.max_steps 2000 -> 4000 at step 2,000)",
    }
    # a rate lowered on resume (--allow-change optim.lr=...) likewise; the budget is the same, so it adds no suffix
    lowered = run("h_lr", 4000, 1e-3, [{"key": "optim.lr", "change": "0.01 -> 0.001", "step": 700}])
    assert plot_accuracy.run_variants([longer, lowered]) == {
        "h_4k": "hymba, lr 0.001",
        "h_lr": "hymba, lr 0.001 (optim.lr 0.01 -> 0.001 at step 700)",
    }
    # a change to a setting that does not split by value (a floor lowered with --allow-change) splits by the change
    floor = run("h_floor", 4000, 1e-3, [{"key": "optim.min_lr", "change": "0.0002 -> 0.0001", "step": 700}])
    assert plot_accuracy.run_variants([longer, floor]) == {
        "h_4k": "hymba, optim.min_lr 0.0001",  # the default, throughout
        "h_floor": "hymba, optim.min_lr 0.0002 -> 0.0001 at step 700",
    }
    # any other setting two runs of one variant differ in is named, so they are not drawn as seeds of one setting
    config = json.loads((floor / "config.json").read_text())
    (floor / "config.json").write_text(json.dumps({**config, "train": {**config["train"], "batch_size": 512}}))
    (floor / "config_changes.json").unlink()
    assert plot_accuracy.run_variants([longer, floor])["h_floor"] == "hymba, train.batch_size 512"
    # a damaged record is a one-line error and exit code 2, not a wrong label or a traceback
    out = tmp_path / "ext.png"
    for damaged in ("[{}]", '[{"key": ["x"], "change": "a", "step": 1}]', "{", '[{"key": "optim.lr", "change": "a"}]'):
        (extended / "config_changes.json").write_text(damaged)
        assert plot_accuracy.main([str(longer), str(extended), "--vs-step", "--by-variant", "--out", str(out)]) == 2
        assert "config_changes.json is unreadable" in capsys.readouterr().err and not out.exists()


def test_accuracy_grid_pools_only_runs_that_differ_in_their_seed(tmp_path, capsys):
    from assignment_experiments.studies import plot_accuracy
    from assignment_experiments.studies.seed_pooling import MixedSettingsError

    def seed(name: str, seed: int, accuracy: float, changes: list | None = None, **train) -> Path:
        path = _fake_mqar_run(tmp_path, name, 64, [accuracy], lr=1e-3)
        config = json.loads((path / "config.json").read_text())
        train = {"max_steps": 2000, "seed": seed, "num_threads": 1 + seed, **train}
        (path / "config.json").write_text(json.dumps({**config, "train": train}))
        if changes is not None:
            (path / "config_changes.json").write_text(json.dumps(changes))
        return path

    # seeds on different thread counts, devices, checkpoint and sampling settings, with other prose and a float
    # computed rather than written: one setting, pooled
    seeds = [seed("a", 0, 0.5), seed("a_s1", 1, 0.7, device="cpu", checkpoint_every=7, sample_prompts=["x"])]
    config = json.loads((seeds[1] / "config.json").read_text())
    config.update(description="seed 1", logging={"log_every": 3}, optim={"lr": 1e-3, "min_lr": 3e-3 / 10})
    (seeds[1] / "config.json").write_text(json.dumps(config))
    config = json.loads((seeds[0] / "config.json").read_text())
    (seeds[0] / "config.json").write_text(json.dumps({**config, "optim": {"lr": 1e-3, "min_lr": 3e-4}}))
    assert 3e-3 / 10 != 3e-4
    assert plot_accuracy.best_cells(plot_accuracy.load_points(seeds))[("transformer", 64, 64)] == (1e-3, [0.5, 0.7])
    out = tmp_path / "w.png"
    # a run with twice the steps at the same rate is not a third seed: a one-line error names the setting and the runs
    longer = seed("a_4k", 2, 0.9, max_steps=4000)
    assert plot_accuracy.main([*map(str, seeds), str(longer), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "differ in train.max_steps (a: 2000, a_4k: 4000)" in error and "--exclude" in error and not out.exists()
    assert plot_accuracy.main([*map(str, seeds), str(longer), "--exclude", "*_4k", "--out", str(out)]) == 0
    # nor is a run whose budget a resume extended to the same final value
    steps = {"key": "train.max_steps", "change": "1000 -> 2000", "step": 1000}
    extended = seed("a_ext", 2, 0.9, changes=[steps])
    with pytest.raises(MixedSettingsError, match="made on --resume .*1000 -> 2000 at step 1,000"):
        plot_accuracy.best_cells(plot_accuracy.load_points([*seeds, extended]))
    # nor one at another batch size; with several differences, the error names the budget first
    with pytest.raises(MixedSettingsError, match="train.batch_size"):
        plot_accuracy.best_cells(plot_accuracy.load_points([*seeds, seed("a_b8", 2, 0.9, batch_size=8)]))
    both = seed("a_both", 2, 0.9, batch_size=8, max_steps=10, eval_every=3)
    with pytest.raises(MixedSettingsError, match=r"differ in train.max_steps \(a: 2000, a_both: 10\); also "):
        plot_accuracy.best_cells(plot_accuracy.load_points([*seeds, both]))
    # a damaged config.json or summary.json is named, in the grid and in the learning curves
    for name in ("config.json", "summary.json"):
        intact = (both / name).read_text()
        (both / name).write_text("{")
        for mode in ([], ["--vs-step", "--by-variant"]):
            assert plot_accuracy.main([*map(str, seeds), str(both), *mode, "--out", str(out)]) == 2
            assert f"a_both/{name} is not valid JSON" in capsys.readouterr().err, (name, mode)
        (both / name).write_text(intact)


def test_accuracy_plot_leaves_out_excluded_runs(tmp_path, capsys):
    from assignment_experiments.studies import plot_accuracy

    runs = [_fake_mqar_run(tmp_path, "a", 64, [0.5]), _fake_mqar_run(tmp_path, "a_trace", 64, [0.9]),
            _fake_mqar_run(tmp_path, "b_long", 64, [0.7])]  # fmt: skip
    args = [*map(str, runs), "--out", str(tmp_path / "w.png"), "--exclude", "*_trace", "--exclude", "*_long"]
    assert plot_accuracy.main(args) == 0
    assert "| transformer | 0.500 |" in capsys.readouterr().out  # only run a; with the others: 0.700 +- 0.200 (n=3)
    assert plot_accuracy.main([*args[:-4], "--exclude", "*"]) == 2  # nothing left is the usual one-line error


def test_accuracy_grid_takes_each_cells_best_learning_rate_and_names_variants(tmp_path):
    from assignment_experiments.studies import plot_accuracy

    runs = [_fake_mqar_run(tmp_path, f"{name}_s{seed}", 64, [acc], lr=lr)
            for name, lr, seed, acc in [("lo", 1e-3, 0, 0.3), ("lo", 1e-3, 1, 0.9), ("hi", 1e-2, 0, 0.7),
                                        ("hi", 1e-2, 1, 0.7)]]  # fmt: skip
    runs.append(_fake_mqar_run(tmp_path, "conv", 64, [1.0], lr=1e-2, attention={"short_conv": 4}))
    runs.append(_fake_mqar_run(tmp_path, "noconv", 64, [0.2], lr=1e-2, architecture="hymba", ssm={"d_conv": 1}))
    points = plot_accuracy.load_points(runs)
    assert {p["arch"] for p in points} == {"transformer", "transformer +conv4", "hymba (ssm conv 1)"}
    ssm_only = {"architecture": "hymba", "hymba": {"branches": "ssm"}}
    one_branch = [_fake_mqar_run(tmp_path, "ssm", 64, [0.9], **ssm_only, num_meta_tokens=4),
                  _fake_mqar_run(tmp_path, "ssm_nometa", 64, [0.9], **ssm_only),
                  _fake_mqar_run(tmp_path, "meta", 64, [0.9], architecture="mamba", num_meta_tokens=4),
                  _fake_mqar_run(tmp_path, "on", 64, [0.9], architecture="mamba", ssm={"out_norm": True})]  # fmt: skip
    assert [p["arch"] for p in plot_accuracy.load_points(one_branch)] == [
        "hymba (ssm branch only)", "hymba (ssm branch only, no meta tokens)", "mamba +4 meta tokens",
        "mamba +out norm"
    ]  # fmt: skip
    assert [p["floor"] for p in points] == [pytest.approx(0.1289, abs=1e-4)] * len(runs)
    grid = plot_accuracy.markdown_grid(points)
    # lr 1e-2 (mean 0.7) beats lr 1e-3 (mean 0.6 despite its 0.9 seed): Zoology's best-rate cell, with the rate named
    assert "| transformer | 0.700 +- 0.000 (n=2, lr 0.01) |" in grid
    assert "| transformer +conv4 | 1.000 at lr 0.01 |" in grid
    steps = plot_accuracy.markdown_steps_grid(points)
    assert "| transformer +conv4 | 100 |" in steps and "| transformer | - / - |" in steps
    assert plot_accuracy.main([*map(str, runs), "--out", str(tmp_path / "w.png")]) == 0
    assert (tmp_path / "w.png").stat().st_size > 0
    # runs that stop at the target: the rate that reaches it on every seed, fastest, wins over a last-decimal edge
    slow = [_fake_mqar_run(tmp_path, f"slow_s{i}", 128, [0.5, 0.6, 0.995], lr=1e-2) for i in range(2)]
    fast = [_fake_mqar_run(tmp_path, f"fast_s{i}", 128, [0.5, 0.991], lr=1e-3) for i in range(2)]
    missed = [
        _fake_mqar_run(tmp_path, f"miss_s{i}", 128, [0.5, 0.6, 0.7, acc], lr=3e-3) for i, acc in [(0, 0.99), (1, 0.98)]
    ]
    cells = plot_accuracy.best_cells(plot_accuracy.load_points(slow + fast + missed), field="reached_step")
    assert cells[("transformer", 64, 128)] == (1e-3, [200, 200])


def test_mqar_suite_generator_writes_a_loadable_grid(tmp_path):
    from pathlib import Path

    from assignment_experiments.run_suite import load_suite
    from assignment_experiments.studies import make_mqar_suite

    out = tmp_path / "suites" / "grid.json"
    args = ["--archs", "transformer", "hymba", "mamba", "--widths", "64", "128", "--lengths", "64:4", "128:8",
            "--lrs", "1e-3", "--seeds", "0", "1", "--set", "train.max_steps=500", "--out", str(out)]  # fmt: skip
    assert make_mqar_suite.main(args) == 0
    runs = dict(load_suite(Path(out), []))
    assert len(runs) == 3 * 2 * 2 * 2  # archs x widths x lengths x seeds
    hymba = runs["mqarz_hymba_d128_L128_lr0.001_s1"]
    assert (hymba.model.architecture, hymba.model.d_model, hymba.model.context_length) == ("hymba", 128, 128)
    assert hymba.data.task_options["num_pairs"] == 8 and hymba.train.seed == 1 and hymba.train.max_steps == 500
    options = hymba.data.task_options  # the faithful task of the base config, at this length
    assert (options["seq_len"], options["query_placement"], options["reveal_answers"]) == (128, "power_law", False)
    assert hymba.optim.min_lr == 0.0 and "width 128, 8 key-value pairs in 128 tokens" in hymba.description
    transformer, mamba = runs["mqarz_transformer_d64_L64_lr0.001"], runs["mqarz_mamba_d64_L64_lr0.001"]
    recipe = (transformer.model.init, transformer.model.norm_layer, transformer.model.ffn.kind, transformer.optim.betas)
    assert recipe == ("gpt2", "layernorm", "identity", [0.9, 0.999])  # Zoology's recipe, from the base config
    assert mamba.model.ffn.kind == "none"  # Zoology's MambaBlock has no state mixer
    with pytest.raises(SystemExit):
        make_mqar_suite.main(["--lengths", "8:4", "--out", str(out)])  # 4 pairs and 4 queries need 15+ tokens


GPU_SUITE_FLAGS = ["--set", "train.device=cuda", "--set", "train.batch_size=512", "--set", "train.max_steps=12500",
                   "--set", "train.checkpoint_every=2500", "--set", "train.eval_every=250"]  # fmt: skip


GPU_SUITES = [("mqar_zoology_gpu.json", []), ("mqar_zoology_gpu_ssm.json", ["--archs", "mamba_outnorm", "hymba_ssm"])]


@pytest.mark.parametrize(("suite", "archs"), GPU_SUITES)
def test_shipped_gpu_mqar_suites_are_the_generators_output(tmp_path, suite, archs):
    """The GPU grids are written by make_mqar_suite with the flags in its docstring: a hand edit to a suite, or a
    change to the generator that the shipped suites do not follow, would make the grid differ from what it says."""
    from assignment_experiments.studies import make_mqar_suite

    shipped_path = Path(make_mqar_suite.CONFIGS) / "suites" / suite
    out = tmp_path / suite
    assert make_mqar_suite.main([*archs, *GPU_SUITE_FLAGS, "--out", str(out)]) == 0
    written, shipped = json.loads(out.read_text()), json.loads(shipped_path.read_text())
    for grid, where in [(written, out), (shipped, shipped_path)]:  # "base" is relative to the suite's folder
        assert (where.parent / grid.pop("base")).resolve() == make_mqar_suite.CONFIGS / "mqar_zoology.json"
    assert written == shipped


def test_ssm_variants_in_the_mqar_generator_change_only_the_ssm(tmp_path):
    from assignment_experiments.run_suite import load_suite
    from assignment_experiments.studies import make_mqar_suite

    out = tmp_path / "grid.json"
    archs = ["mamba", "mamba_outnorm", "hymba", "hymba_ssm"]
    assert make_mqar_suite.main(["--archs", *archs, "--widths", "64", "--lengths", "64:4", "--lrs", "1e-3",
                                 "--out", str(out)]) == 0  # fmt: skip
    runs = {name.split("_d64")[0].removeprefix("mqarz_"): config.to_dict() for name, config in load_suite(out, [])}
    for plain, variant, key, value in [("mamba", "mamba_outnorm", "out_norm", True),
                                       ("hymba", "hymba_ssm", None, None)]:  # fmt: skip
        a, b = runs[plain], runs[variant]
        assert a["data"] == b["data"] and a["optim"] == b["optim"] and a["train"] == b["train"]
        if key is not None:
            assert (a["model"]["ssm"][key], b["model"]["ssm"][key]) == (False, value)
        else:
            assert (a["model"]["hymba"]["branches"], b["model"]["hymba"]["branches"]) == ("both", "ssm")
        b_model = {k: v for k, v in b["model"].items() if k not in ("ssm", "hymba")}
        assert b_model == {k: v for k, v in a["model"].items() if k not in ("ssm", "hymba")}, variant


def test_scaling_plot_pools_seed_suffixes_and_computes_training_flops(tmp_path):
    from assignment_experiments.studies import plot_scaling

    def fake(name: str, arch: str, loss: float, params: int, tokens: int = 1000):
        run = tmp_path / name
        run.mkdir()
        summary = {"architecture": arch, "final_val_loss": loss, "num_params_non_embedding": params,
                   "tokens_seen": tokens, "model_flops_per_token": 6.0 * params, "runtime_s": 10.0}  # fmt: skip
        (run / "summary.json").write_text(json.dumps(summary))
        return run

    runs = [fake("t_small", "transformer", 2.0, 100), fake("t_small_s1", "transformer", 2.2, 100),
            fake("t_big", "transformer", 1.5, 1000), fake("m_small", "mamba", 1.9, 100)]  # fmt: skip
    rows = {r["group"]: r for r in plot_scaling.pooled([plot_scaling.run_point(r) for r in runs], ["params", "flops"])}
    assert set(rows) == {"t_small", "t_big", "m_small"} and rows["t_small"]["n"] == 2
    assert rows["t_small"]["loss"] == pytest.approx(2.1) and rows["t_small"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert rows["t_big"]["flops"] == 6.0 * 1000 * 1000  # flops per token x tokens seen
    table = plot_scaling.markdown(list(rows.values()), ["params"])
    assert "| transformer | `t_small` | 100 | 2.100 ± 0.141 | 2 |" in table
    assert "| transformer | `t_big` | 1e+03 | 1.500 | 1 |" in table  # one seed: no spread is claimed
    assert plot_scaling.main([*map(str, runs), "--x", "params", "flops", "time", "--out", str(tmp_path / "s.png")]) == 0


def test_lr_plot_panels_by_size_and_tokens_pools_seeds_and_says_when_the_best_rate_is_at_an_edge(tmp_path, capsys):
    from assignment_experiments.studies import plot_lr

    def fake(name: str, arch: str, lr: float, loss: float, params: int, tokens: int = 1000, config: bool = True):
        run = tmp_path / name
        run.mkdir()
        summary = {"architecture": arch, "final_val_loss": loss, "num_params_non_embedding": params,
                   "tokens_seen": tokens, "model_flops_per_token": 6.0 * params, "runtime_s": 1.0}  # fmt: skip
        (run / "summary.json").write_text(json.dumps(summary))
        if config:
            (run / "config.json").write_text(json.dumps({"optim": {"lr": lr}}))
        return run

    runs = [
        fake("t_S_lr1", "transformer", 1e-3, 2.0, 100), fake("t_S_lr3", "transformer", 3e-3, 1.8, 100),
        fake("t_S_lr3_s1", "transformer", 3e-3, 1.9, 100), fake("t_S_lr10", "transformer", 1e-2, 1.95, 100),
        fake("m_S_lr1", "mamba", 1e-3, 1.7, 130), fake("m_S_lr3", "mamba", 3e-3, 1.75, 130),
        fake("t_L_lr1", "transformer", 1e-3, 1.2, 1000, tokens=5000),
        fake("t_L_same_tokens", "transformer", 1e-3, 1.5, 1000),  # 10x the size at the small runs' tokens
    ]  # fmt: skip
    points = [plot_lr.lr_point(r) for r in runs]
    groups = plot_lr.panels(points, size_ratio=1.5)
    assert [sorted(p["run"] for p in g) for g in groups] == [
        ["m_S_lr1", "m_S_lr3", "t_S_lr1", "t_S_lr10", "t_S_lr3", "t_S_lr3_s1"],  # 100 and 130 params: one panel
        ["t_L_same_tokens"],  # 10x larger: its own panel, although it saw the same tokens
        ["t_L_lr1"],  # same size, other tokens: its own panel
    ]
    lines = plot_lr.curves(groups[0])
    assert [r["n"] for r in lines["transformer"]] == [1, 2, 1]  # the two runs at 3e-3 are pooled
    assert lines["transformer"][1]["loss"] == pytest.approx(1.85)
    assert lines["transformer"][1]["std"] == pytest.approx(0.0707, abs=1e-4)
    assert plot_lr.best(lines["transformer"])[1] == "inside"
    assert plot_lr.best(lines["mamba"]) == (lines["mamba"][0], "lowest")  # the best may lie below the rates tried
    assert plot_lr.best(plot_lr.curves(groups[1])["transformer"])[1] == "only rate"

    assert plot_lr.main([*map(str, runs), fake("no_config", "mamba", 0, 1.0, 100, config=False).as_posix(),
                         "--out", str(tmp_path / "lr.png")]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert (tmp_path / "lr.png").stat().st_size > 0
    assert "skipping" in captured.err and "no_config" in captured.err
    assert "| transformer | 0.001: 2.000, 0.003: 1.850 ± 0.071 (2), 0.01: 1.950 | 0.003 | inside |" in captured.out
    with pytest.raises(SystemExit):
        plot_lr.main([str(runs[0]), "--size-ratio", "0.5", "--out", str(tmp_path / "x.png")])


def test_scaling_and_lr_plots_name_moe_and_mhc_variants_and_place_an_moe_by_its_active_parameters(tmp_path, capsys):
    """An MoE Transformer is labelled as such (not as the dense Transformer), sits at its active parameters on the
    ``active`` axis, and shares the learning-rate panel of the dense model with its compute per token; an mHC hybrid
    is labelled apart from the plain one."""
    from assignment_experiments.studies import plot_lr, plot_scaling

    def fake(name: str, arch: str, lr: float, loss: float, model: dict, total: int, active: int, pattern=None):
        run = tmp_path / name
        run.mkdir()
        summary = {"architecture": arch, "pattern": pattern, "final_val_loss": loss, "num_params": total + 500,
                   "num_params_non_embedding": total, "num_params_active": active + 500, "tokens_seen": 1000,
                   "model_flops_per_token": 6.0 * active, "runtime_s": 1.0}  # 500 embedding parameters  # fmt: skip
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "config.json").write_text(json.dumps({"model": {"architecture": arch, **model}, "optim": {"lr": lr}}))
        return run

    moe = {"ffn": {"moe": {"num_experts": 8, "top_k": 2, "d_ff": 192}}}
    runs = [
        fake("dense_lr3", "transformer", 3e-3, 1.5, {}, 1000, 1000),
        fake("dense_lr10", "transformer", 1e-2, 1.4, {}, 1000, 1000),
        fake("moe_lr3", "transformer", 3e-3, 1.45, moe, 2800, 1010),  # 2.8x the parameters, the same per token
        fake("moe_lr10", "transformer", 1e-2, 1.42, moe, 2800, 1010),
        fake("amam", "hybrid", 1e-2, 1.3, {"pattern": "AMAM"}, 1100, 1100, pattern="AMAM"),
        fake("amam_mhc", "hybrid", 1e-2, 1.32, {"pattern": "AMAM", "residual": {"kind": "mhc"}}, 1200, 1200, "AMAM"),
    ]
    points = {p["run"]: p for p in (plot_scaling.run_point(r) for r in runs)}
    assert points["moe_lr3"]["label"] == "transformer +MoE 8x top-2" and points["dense_lr3"]["label"] == "transformer"
    assert points["amam_mhc"]["label"] == "hybrid AMAM +mHC" and points["amam"]["label"] == "hybrid AMAM"
    assert (points["moe_lr3"]["params"], points["moe_lr3"]["active"]) == (2800, 1010)
    assert points["dense_lr3"]["active"] == points["dense_lr3"]["params"] == 1000
    groups = plot_lr.panels([plot_lr.lr_point(r) for r in runs], size_ratio=1.5)
    assert len(groups) == 1  # by active parameters the MoE is the dense model's size (by total, 2.8x larger)
    assert plot_lr.panel_title(groups[0]).startswith("~0.001M active non-embedding params")
    assert set(plot_lr.curves(groups[0])) == {"transformer", "transformer +MoE 8x top-2", "hybrid AMAM",
                                              "hybrid AMAM +mHC"}  # fmt: skip
    dense_only = plot_lr.panels([plot_lr.lr_point(r) for r in runs if not r.name.startswith("moe")], size_ratio=1.5)
    assert "active" not in plot_lr.panel_title(dense_only[0])  # the word is for panels that hold an MoE
    assert plot_scaling.main([*map(str, runs), "--x", "active", "params", "--out", str(tmp_path / "s.png")]) == 0
    assert "| transformer +MoE 8x top-2 | `moe_lr10` | 1.01e+03 | 2.8e+03 | 1.420 | 1 |" in capsys.readouterr().out


def test_mqar_by_query_shows_the_elimination_pattern_of_an_elimination_predictor():
    """Oracle: a predictor that never matches keys (a random value not yet shown after the pairs) scores
    1/4, 1/3, 1/2, 1 on the four queries of the revealed task; a recall predictor scores 1 on each."""
    from assignment_experiments.studies.mqar_by_query import accuracy_by_query, elimination_pattern
    from cs336_basics.data.synthetic import AssociativeRecall

    task = AssociativeRecall(vocab_size=8192, num_pairs=4, seq_len=64, query_placement="random")
    inputs, targets, mask = task.validation_set(3000, seed=5)
    rng = torch.Generator().manual_seed(0)
    eliminate, recall = torch.zeros_like(targets), torch.zeros_like(targets)
    for b in range(len(inputs)):
        row = inputs[b].tolist()
        bound = {row[i]: row[i + 1] for i in range(0, 8, 2)}
        for t in torch.nonzero(mask[b]).flatten().tolist():
            shown = row[8 : t + 1]  # a value two pairs share can be shown already: then guess among all
            candidates = sorted({v for v in bound.values() if v not in shown} or set(bound.values()))
            eliminate[b, t] = candidates[int(torch.randint(len(candidates), (1,), generator=rng))]
            recall[b, t] = bound[row[t]]
    assert accuracy_by_query(eliminate, targets, mask) == pytest.approx(elimination_pattern(4, 4), abs=0.03)
    assert accuracy_by_query(recall, targets, mask) == [1.0] * 4
    uneven = mask.clone()
    uneven[0, torch.nonzero(mask[0])[0]] = False
    with pytest.raises(ValueError, match="same, non-zero number"):
        accuracy_by_query(recall, targets, uneven)


def test_shuffling_pairs_keeps_recall_and_breaks_the_power_law_position_shortcut():
    """Oracle: a recall predictor keeps 1.0 on shuffled pairs; answering the k-th query with pair k's value, a cue
    that Zoology's draw order leaves (0.29 here, above the 0.25 floor), falls to the floor once they are shuffled."""
    from assignment_experiments.studies.mqar_by_query import shuffle_pairs
    from cs336_basics.data.synthetic import AssociativeRecall

    task = AssociativeRecall(
        vocab_size=8192, num_pairs=4, seq_len=64, query_placement="power_law", reveal_answers=False
    )
    inputs, targets, mask = task.validation_set(8000, seed=7)
    shuffled = shuffle_pairs(inputs, 4, torch.Generator().manual_seed(0))
    assert torch.equal(shuffled[:, 8:], inputs[:, 8:]) and not torch.equal(shuffled[:, :8], inputs[:, :8])
    answers = targets[mask].view(-1, 4)  # in sequence order
    for x, expected in ((inputs, 0.287), (shuffled, 0.25)):
        positional = (x[:, 1:8:2] == answers).float().mean().item()
        assert positional == pytest.approx(expected, abs=0.015)
        bound = [{int(r[i]): int(r[i + 1]) for i in range(0, 8, 2)} for r in x]
        queried = x[mask].view(-1, 4)
        recall = torch.tensor([[bound[b][int(k)] for k in queried[b]] for b in range(len(x))])
        assert torch.equal(recall, answers)


def _mqar_set(num: int = 40, seed: int = 3):
    from cs336_basics.data.synthetic import AssociativeRecall

    task = AssociativeRecall(vocab_size=64, num_pairs=4, seq_len=32, query_placement="power_law", reveal_answers=False)
    return task.validation_set(num, seed=seed)


def _train_mqar(tmp_path, *overrides: str):
    """A tiny run on the faithful MQAR task of ``_mqar_set`` (the same task options)."""
    task = '{"vocab_size": 64, "num_pairs": 4, "seq_len": 32, "query_placement": "power_law", "reveal_answers": false}'
    sets = ["data.source=synthetic", "data.task=mqar", f"data.task_options={task}", "data.path=null"]
    return train(tmp_path, "mqar", *sets, "model.context_length=32", *overrides)


def test_zeroing_a_hymba_branch_scale_removes_that_branch_and_a_glob_that_matches_nothing_is_an_error(tmp_path, capsys):
    """The knockout's oracle: with every ``beta_attn`` at zero the logits no longer depend on the attention weights
    (and with ``beta_ssm`` at zero not on the SSM's), while the intact model's do."""
    from assignment_experiments.studies import mqar_by_query
    from cs336_basics.models.factory import hymba_lm

    inputs, _, _ = _mqar_set(4)
    sizes = {"vocab_size": 64, "context_length": 32, "d_model": 16, "num_layers": 2, "num_heads": 2, "d_ff": 32}

    def depends_on(branch: str, zero: list[str]) -> bool:
        torch.manual_seed(0)
        model = hymba_lm(**sizes, d_state=4, scan_backend="chunked", num_meta_tokens=2).eval()
        mqar_by_query.zero_parameters(model, zero, tmp_path)
        with torch.no_grad():
            before = model(inputs)
            for name, parameter in model.named_parameters():
                if f".{branch}." in name:
                    parameter.add_(torch.randn_like(parameter))
            return not torch.equal(before, model(inputs))

    assert depends_on("attn", []) and depends_on("mixer", [])
    assert not depends_on("attn", ["layers.*.beta_attn"]) and depends_on("mixer", ["layers.*.beta_attn"])
    assert not depends_on("mixer", ["layers.*.beta_ssm"]) and depends_on("attn", ["layers.*.beta_ssm"])
    with pytest.raises(ConfigError, match="--zero 'layers.*.beta_atn' matches no parameter"):
        depends_on("attn", ["layers.*.beta_atn"])
    run = _train_mqar(tmp_path, "model.num_layers=2")
    out = tmp_path / "knockout.md"
    assert mqar_by_query.main([str(run), "--sequences", "8", "--zero", "layers.1.*", "--out", str(out)]) == 0
    assert "layers.1.* set to zero" in out.read_text() and "--zero 'layers.1.*'" in out.read_text()
    assert mqar_by_query.main([str(run), "--sequences", "8", "--zero", "nothing.*"]) == 2
    assert "matches no parameter" in capsys.readouterr().err


def test_mqar_attention_scores_a_hand_built_circuit_one_and_uniform_attention_its_chance():
    """Oracles written out position by position: a previous-token head plus a retrieval head score (1, 1) with all
    of the query's weight on values, even beside a uniform head; uniform causal attention scores 1/(visible
    positions) on each and puts P/(visible positions) on the values, here after a 2-token prefix (Hymba's meta
    tokens), so that the probe must shift every position by it."""
    from assignment_experiments.studies.mqar_attention import circuit_scores

    inputs, _, mask = _mqar_set()
    B, T, prefix = inputs.shape[0], inputs.shape[1], 2
    uniform = torch.ones(T + prefix, T + prefix).tril()
    uniform = (uniform / uniform.sum(dim=-1, keepdim=True)).expand(B, 1, -1, -1)
    circuit = torch.zeros(B, 1, T + prefix, T + prefix)
    previous_chance, retrieval_chance, mass_chance = [], [], []
    for b in range(B):
        row = inputs[b].tolist()
        key_at = {row[i]: i for i in range(0, 8, 2)}
        for j in range(4):
            circuit[b, 0, prefix + 2 * j + 1, prefix + 2 * j] = 1.0
            previous_chance.append(1 / (prefix + 2 * j + 2))
        for t in torch.nonzero(mask[b]).flatten().tolist():
            circuit[b, 0, prefix + t, prefix + key_at[row[t]] + 1] = 1.0
            retrieval_chance.append(1 / (prefix + t + 1))
            mass_chance.append(4 / (prefix + t + 1))
    assert circuit_scores(torch.cat([uniform, circuit], dim=1), inputs, mask, 4) == (1.0, 1.0, 1.0)
    previous, retrieval, mass = circuit_scores(uniform, inputs, mask, 4)
    assert previous == pytest.approx(sum(previous_chance) / len(previous_chance), rel=1e-5)
    assert retrieval == pytest.approx(sum(retrieval_chance) / len(retrieval_chance), rel=1e-5)
    assert mass == pytest.approx(sum(mass_chance) / len(mass_chance), rel=1e-5)
    # the value mass is the retrieving head's: a head spread evenly over the values (mass 1, retrieval 1/4) beside one
    # that reads half the right value and half its own position (mass 1/2, retrieval 1/2) reports (1/2, 1/2)
    even, half = uniform.clone(), uniform.clone()
    for b in range(B):
        row = inputs[b].tolist()
        for t in torch.nonzero(mask[b]).flatten().tolist():
            even[b, 0, prefix + t] = 0.0
            even[b, 0, prefix + t, prefix + 1 : prefix + 8 : 2] = 0.25
            half[b, 0, prefix + t] = 0.0
            half[b, 0, prefix + t, prefix + row.index(row[t]) + 1] = 0.5
            half[b, 0, prefix + t, prefix + t] = 0.5
    assert circuit_scores(torch.cat([even, half], dim=1), inputs, mask, 4)[1:] == (0.5, 0.5)


def test_mqar_attention_probe_reads_each_attention_layer_of_a_trained_run(tmp_path, capsys):
    from assignment_experiments.studies import mqar_attention

    run = _train_mqar(tmp_path, "model.num_layers=2")
    out = tmp_path / "probe.md"
    plot = tmp_path / "circuit.png"
    args = [str(run), "--sequences", "40", "--seed", "3", "--out", str(out), "--plot", str(plot)]
    assert mqar_attention.main(args) == 0
    assert plot.stat().st_size > 0 and "(1 of 1 runs have two attention layers)" in capsys.readouterr().out
    rows = [line for line in out.read_text().splitlines() if line.startswith("| `mqar`")]
    assert [row.split(" | ")[3] for row in rows] == ["`layers.0.attn`", "`layers.1.attn`"]
    _, _, mask = _mqar_set()
    chance = (1.0 / (torch.nonzero(mask)[:, 1].double() + 1)).mean().item()  # queries see positions 0..t
    assert all(row.split(" | ")[-1] == f"{chance:.3f} |" for row in rows)
    assert all(0.0 <= float(row.split(" | ")[i]) <= 1.0 for row in rows for i in (4, 5, 6))
    text_run = train(tmp_path, "text")
    assert mqar_attention.main([str(text_run)]) == 2
    assert "is not an MQAR run" in capsys.readouterr().err


def test_mqar_attention_traces_every_kept_checkpoint(tmp_path, capsys):
    from assignment_experiments.studies import mqar_attention

    run = _train_mqar(tmp_path, "train.max_steps=4", "train.keep_checkpoints=5")
    out, trace = tmp_path / "probe.md", tmp_path / "trace.png"
    args = [str(run), "--checkpoint", "all", "--sequences", "8", "--out", str(out), "--trace", str(trace)]
    assert mqar_attention.main(args) == 0
    steps = [line.split(" | ")[1] for line in out.read_text().splitlines() if line.startswith("| `mqar`")]
    layers = len(steps) // 2
    assert steps == ["2"] * layers + ["4"] * layers and layers >= 1  # every checkpoint, oldest first
    assert "--checkpoint all --sequences 8 --seed 99" in out.read_text() and trace.stat().st_size > 0
    assert mqar_attention.main([str(run), "--trace", str(trace)]) == 2
    assert "add --checkpoint all" in capsys.readouterr().err


def test_mqar_attention_probe_streams_hymba_with_meta_tokens_windows_and_shared_keys():
    """Hymba with 2 meta tokens, sliding windows of 3 and cross-layer KV sharing: every attention layer is probed
    (the consumers through the producer's keys), running 7 sequences at a time gives what one chunk gives, and the
    chance in a windowed layer is 0 for a value outside the window (oracle written out per query)."""
    from assignment_experiments.studies.mqar_attention import probe_model
    from cs336_basics.models.factory import hymba_lm

    inputs, _, mask = _mqar_set(20)
    sizes = {"vocab_size": 64, "context_length": 32, "d_model": 16, "num_layers": 4, "num_heads": 2, "d_ff": 32}
    hymba = {"d_state": 4, "scan_backend": "chunked", "num_meta_tokens": 2, "window": 3, "global_layers": [0]}
    model = hymba_lm(**sizes, **hymba, kv_sharing=True).eval()
    scores, predictions = probe_model(model, inputs, mask, 4, chunk=64)
    streamed, again = probe_model(model, inputs, mask, 4, chunk=7)
    assert [s.layer for s in scores] == [f"layers.{i}.attn" for i in range(4)] and torch.equal(predictions, again)
    for one, other in zip(scores, streamed, strict=True):
        assert one.layer == other.layer and one.retrieval_chance == other.retrieval_chance
        for field in ("previous_token", "retrieval", "value_mass"):
            assert getattr(one, field) == pytest.approx(getattr(other, field), rel=1e-5, abs=1e-7)
    windowed = []
    for b in range(len(inputs)):
        row = inputs[b].tolist()
        for t in torch.nonzero(mask[b]).flatten().tolist():
            value = row.index(row[t]) + 1  # the first occurrence of the query's key is its pair's key
            windowed.append((1 / (2 + 3)) if t - value < 3 else 0.0)  # 2 meta tokens + the window's 3 positions
    assert scores[0].retrieval_chance > scores[1].retrieval_chance  # layer 0 is global
    assert scores[1].retrieval_chance == pytest.approx(sum(windowed) / len(windowed), rel=1e-9)


def _fake_summary_run(root, name: str, **summary):
    run = root / name
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"name": name, **summary}))
    return run


def test_seed_gaps_pools_seeds_by_name_and_applies_the_noise_rule(tmp_path, capsys):
    from assignment_experiments.studies import seed_gaps

    runs = [_fake_summary_run(tmp_path, name, final_val_accuracy=acc) for name, acc in [
        ("plain", 0.4), ("plain_s1", 0.0), ("plain_s2", 0.2),  # mean 0.2, sample std 0.2
        ("normed", 0.9), ("normed_s1", 0.95), ("normed_s2", 1.0),  # mean 0.95, std 0.05
        ("close", 0.3), ("close_s1", 0.5),  # mean 0.4, std 0.141: two seeds
        ("single", 0.99),
    ]]  # fmt: skip
    metric, settings = seed_gaps.load_settings(runs)
    assert metric == "final_val_accuracy" and settings["plain"].runs == ["plain", "plain_s1", "plain_s2"]
    by_pair = {(g.a.name, g.b.name): g for g in seed_gaps.gaps(settings, versus="plain")}
    real = by_pair["plain", "normed"]  # pooled std sqrt((2 * 0.04 + 2 * 0.0025) / 4) = 0.14577
    assert real.difference == pytest.approx(0.75) and real.twice_pooled_std == pytest.approx(2 * math.sqrt(0.02125))
    assert real.verdict == "real"
    close = by_pair["plain", "close"]  # gap 0.2, pooled std sqrt((2 * 0.04 + 1 * 0.02) / 3) = 0.1826: within noise
    assert close.twice_pooled_std == pytest.approx(2 * math.sqrt(0.1 / 3)) and close.verdict == "within noise"
    single = by_pair["plain", "single"]  # gap 0.79 > 2 x 0.2 (plain's spread alone), but one seed: provisional
    assert single.twice_pooled_std == pytest.approx(0.4) and single.verdict == "provisional"
    lone = seed_gaps.compare(settings["single"], settings["single"])
    assert lone.twice_pooled_std is None and lone.verdict == "provisional"
    assert seed_gaps.main([str(r) for r in runs] + ["--vs", "plain", "--out", str(tmp_path / "gaps.md")]) == 0
    table = capsys.readouterr().out
    assert "| normed | plain | +0.750 | 0.292 | real |" in table and table == (tmp_path / "gaps.md").read_text()
    assert (
        "| plain | 3 | 0.400 / 0.000 / 0.200 | 0.200 ± 0.200 |" in table and "| single | 1 | 0.990 | 0.990 |" in table
    )


def test_seed_gaps_rejects_mixed_metrics_duplicate_seeds_and_unknown_baselines(tmp_path, capsys):
    from assignment_experiments.studies import seed_gaps

    acc = _fake_summary_run(tmp_path, "a", final_val_accuracy=0.5, final_val_loss=1.0)
    loss = _fake_summary_run(tmp_path, "b", final_val_loss=2.0)
    copy = _fake_summary_run(tmp_path / "elsewhere", "a", final_val_accuracy=0.6)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{")
    cases = [
        ([acc, loss], "different metrics"),
        ([acc, copy], "seed 0 appears twice"),
        ([acc, "--vs", "c"], "--vs 'c' is none of"),
        ([acc, tmp_path / "none"], "no summary"),
        ([broken], "not valid JSON"),
        ([loss, "--metric", "final_val_accuracy"], "no finite"),
    ]
    for argv, message in cases:
        assert seed_gaps.main([str(a) for a in argv]) == 2
        assert message in capsys.readouterr().err
    _, settings = seed_gaps.load_settings([acc, loss], metric="final_val_loss")  # one named metric: both have it
    assert [s.mean for s in settings.values()] == [1.0, 2.0]


def test_every_seed_pooling_script_refuses_runs_that_differ_in_more_than_their_seed(tmp_path, capsys):
    """seed_gaps, plot_scaling and plot_lr pool X, X_s1, ... (or one model's runs at one rate); a run with another
    step budget, or whose budget a resume extended, is not a seed: each script exits 2 naming the setting."""
    from assignment_experiments.studies import plot_lr, plot_scaling, seed_gaps

    def run(name: str, seed: int, loss: float, max_steps: int = 2000, changes: list | None = None) -> Path:
        sizes = {"num_params_non_embedding": 100, "tokens_seen": 1000, "model_flops_per_token": 600.0}
        path = _fake_summary_run(tmp_path, name, architecture="transformer", final_val_loss=loss, **sizes)
        config = {"model": {"architecture": "transformer", "d_model": 16}, "optim": {"lr": 1e-3},
                  "train": {"max_steps": max_steps, "seed": seed}}  # fmt: skip
        (path / "config.json").write_text(json.dumps(config))
        if changes is not None:
            (path / "config_changes.json").write_text(json.dumps(changes))
        return path

    seeds = [run("t", 0, 2.0), run("t_s1", 1, 2.2)]
    longer = run("t_s2", 2, 1.5, max_steps=4000)
    extended = run("u_s2", 2, 1.5, changes=[{"key": "train.max_steps", "change": "1000 -> 2000", "step": 1000}])
    (tmp_path / "u").symlink_to(tmp_path / "t")
    scripts = [
        (seed_gaps.main, []),
        (plot_scaling.main, ["--out", str(tmp_path / "s.png")]),
        (plot_lr.main, ["--out", str(tmp_path / "lr.png")]),
    ]
    for main, extra in scripts:
        assert main([*map(str, seeds), *extra]) == 0
        capsys.readouterr()
        for path in tmp_path.glob("*.png"):
            path.unlink()
        assert main([*map(str, seeds), str(longer), *extra]) == 2
        assert "differ in train.max_steps (t: 2000, t_s2: 4000)" in capsys.readouterr().err, main
        assert not list(tmp_path.glob("*.png")), main  # refused before anything is drawn
    assert seed_gaps.main([*map(str, seeds), str(longer), "--out", str(tmp_path / "gaps.md")]) == 2
    assert not (tmp_path / "gaps.md").exists()
    # a damaged or foreign config.json, and a pooled run without one: named in one line, not a traceback
    for text, message in (("{", "t_s2/config.json is not valid JSON"), ("[]", "t_s2/config.json is not a run config"),
                          ('{"train": {"max_step": 1}}', "unknown key train.max_step")):  # fmt: skip
        (longer / "config.json").write_text(text)
        for main, extra in scripts:
            assert main([*map(str, seeds), str(longer), *extra]) == 2
            assert message in capsys.readouterr().err, (main, text)
    (longer / "config.json").unlink()
    for main, extra in scripts[:2]:  # (plot_lr skips a run without a config: it has no learning rate)
        assert main([*map(str, seeds), str(longer), *extra]) == 2
        assert "cannot be checked as seeds of one setting: t_s2 has no config.json" in capsys.readouterr().err
    for main, extra in scripts[:2]:  # pooled by name: u and u_s2
        assert main([str(tmp_path / "u"), str(extended), *extra]) == 2
        error = capsys.readouterr().err
        assert "differ in the changes made on --resume (u: none, u_s2: train.max_steps 1000 -> 2000" in error


def test_seed_gaps_reproduces_the_logs_width_128_gaps():
    """Study 11's numbers: against Mamba at width 128 (five seeds), Hymba's SSM branch alone (three seeds) is 0.89
    above with twice the pooled std at 0.32, and Mamba with the output norm (five seeds) 0.68 above against 0.62."""
    from assignment_experiments.studies import seed_gaps

    stems = ["mqarzr_mamba_d128_drop_b999", "mqarzr_hymba_ssm_d128_drop_b999", "mqarzr_mamba_outnorm_d128_drop_b999"]
    runs = [run for stem in stems for run in sorted(RESULTS_RUNS.glob(f"{stem}*"))]
    _, settings = seed_gaps.load_settings(runs)
    assert [len(settings[stem].values) for stem in stems] == [5, 3, 5]
    ssm, normed = seed_gaps.gaps(settings, versus="mqarzr_mamba_d128_drop_b999")
    assert (round(ssm.difference, 2), round(ssm.twice_pooled_std, 2), ssm.verdict) == (0.89, 0.32, "real")
    assert (round(normed.difference, 2), round(normed.twice_pooled_std, 2), normed.verdict) == (0.68, 0.62, "real")


def test_fisher_exact_matches_hand_computed_tables():
    """Fisher's tea-tasting table (3 of 4 right each way: p = 34/70) and a perfect split of 4 and 4 (p = 2/70),
    from the hypergeometric counts C(4,k) C(4,4-k) / C(8,4) = 1, 16, 36, 16, 1 (/70)."""
    from assignment_experiments.studies.seed_gaps import fisher_exact

    assert fisher_exact(3, 4, 1, 4) == pytest.approx(34 / 70)
    assert fisher_exact(4, 4, 0, 4) == pytest.approx(2 / 70) == fisher_exact(0, 4, 4, 4)
    assert fisher_exact(2, 4, 2, 4) == pytest.approx(1.0)
    assert fisher_exact(3, 3, 0, 3) == pytest.approx(2 / 20)  # C(3,3) C(3,0) / C(6,3) = 1/20, both tails
    assert fisher_exact(0, 5, 0, 5) == 1.0  # no hits at all: nothing to tell apart


def test_seed_gaps_counts_seeds_above_a_threshold(tmp_path, capsys):
    from assignment_experiments.studies import seed_gaps

    runs = [_fake_summary_run(tmp_path, name, final_val_accuracy=acc) for name, acc in [
        ("plain", 0.43), ("plain_s1", 0.0), ("plain_s2", 0.0),
        ("normed", 0.9), ("normed_s1", 0.96), ("normed_s2", 0.07),
    ]]  # fmt: skip
    assert seed_gaps.main([str(r) for r in runs] + ["--vs", "plain", "--above", "0.5"]) == 0
    table = capsys.readouterr().out
    assert "| mean ± std | seeds above 0.5 |" in table and "| 0 of 3 |" in table and "| 2 of 3 |" in table
    # 2 hits among 6 seeds: C(3,k) C(3,2-k) / C(6,2) = 3, 9, 3 (/15) for k = 0, 1, 2; p = (3 + 3) / 15
    assert table.splitlines()[-1].endswith("| within noise | 0.400 |")


def test_a_long_figure_title_is_wrapped_to_the_figure_and_drawn_inside_it(tmp_path):
    """A title wider than the figure was cut off at both edges of the PNG; save_figure wraps it to the width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from assignment_experiments.studies.figures import save_figure

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1], [0, 1])
    title = "Study 11: " + "a very long description of what this plot compares " * 3
    captured = {}
    original = fig.savefig

    def savefig(*args, **kwargs):  # the layout is final when the figure is written: measure the title there
        renderer = fig.canvas.get_renderer()
        captured["box"] = fig._suptitle.get_window_extent(renderer)
        captured["width"] = fig.bbox.width
        captured["text"] = fig._suptitle.get_text()
        original(*args, **kwargs)

    fig.savefig = savefig
    save_figure(fig, tmp_path / "plot.png", title)
    assert (tmp_path / "plot.png").is_file() and "\n" in captured["text"]
    assert captured["text"].replace("\n", " ") == title.strip()
    assert 0 <= captured["box"].x0 and captured["box"].x1 <= captured["width"]
