"""Every command line says how to call it (``python -m ...``) and has help text for every option; ``--help`` never
does any work (``tests.make_fixtures --help`` does not rewrite the tracked fixtures)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "assignment_experiments.run_experiment", "assignment_experiments.run_suite", "assignment_experiments.report",
    "assignment_experiments.sample", "assignment_experiments.evaluate",
    "assignment_experiments.studies.eval_length_generalization", "assignment_experiments.studies.moe_expert_load",
    "assignment_experiments.studies.hymba_branch_shares", "assignment_experiments.studies.plot_accuracy",
    "assignment_experiments.studies.make_mqar_suite", "assignment_experiments.studies.plot_scaling",
    "assignment_experiments.studies.plot_lr", "assignment_experiments.studies.seed_gaps",
    "assignment_experiments.studies.mqar_by_query", "assignment_experiments.studies.mqar_attention",
    "assignment_experiments.studies.train_vit_cifar", "cs336_basics.data.download", "cs336_basics.tokenizer.train",
    "cs336_basics.tokenizer.encode_file", "tests.make_fixtures",
]  # fmt: skip
ENTRY_POINT = re.compile(r'^if __name__ == "__main__":', re.M)
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if ENTRY_POINT.search(p.read_text()))
WRITES_RESULTS = ["bench_mamba_vs_transformer", "bench_moe", "bench_optim", "bench_parallel_suite", "bench_stories",
                  "bench_threads", "bench_transformer", "bench_compile", "bench_mamba_step", "bench_selective_scan",
                  "bench_tokenizer", "soak_resume", "bench_hymba_kv_sharing", "bench_scored_head"]  # fmt: skip


def test_every_command_line_is_covered():
    """A new entry point (a module with a ``__main__`` block) joins the help checks below, or this test names it."""
    found = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for folder in ("assignment_experiments", "cs336_basics", "tests")
        for p in (ROOT / folder).rglob("*.py")
        if ENTRY_POINT.search(p.read_text())
    }
    found.discard("tests.test_log_tables")  # a test module that can also print its table; not a user command
    assert found == set(MODULES)
    assert set(WRITES_RESULTS) <= set(BENCHMARKS) and len(BENCHMARKS) >= 15


@pytest.fixture
def recorded_actions(monkeypatch):
    """Every argparse option defined while the fixture is active, with its help text."""
    actions: list[argparse.Action] = []
    original = argparse._ActionsContainer.add_argument

    def add_argument(self, *args, **kwargs):
        action = original(self, *args, **kwargs)
        actions.append(action)
        return action

    monkeypatch.setattr(argparse._ActionsContainer, "add_argument", add_argument)
    return actions


def _help_of(main, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _undocumented(actions: list[argparse.Action]) -> list[str]:
    return [
        "/".join(a.option_strings) or a.dest
        for a in actions
        if not a.help and a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
    ]


@pytest.mark.parametrize("module_name", MODULES)
def test_usage_line_says_python_dash_m_and_every_option_has_help(module_name, recorded_actions, capsys):
    module = importlib.import_module(module_name)
    main = module.main
    text = _help_of(main, capsys)
    assert text.startswith(f"usage: python -m {module_name}")
    assert recorded_actions and not _undocumented(recorded_actions)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_usage_and_help(name, recorded_actions, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [f"benchmarks/{name}.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python benchmarks/{name}.py")
    assert ("--write" in text) == (name in WRITES_RESULTS)  # the ones that rewrite a results table do it on request
    assert not _undocumented(recorded_actions)


def test_make_fixtures_help_does_not_touch_the_fixtures(capsys):
    from tests import make_fixtures

    fixtures = sorted((ROOT / "tests" / "fixtures").rglob("*"))
    before = {p: p.stat().st_mtime_ns for p in fixtures if p.is_file()}
    text = _help_of(make_fixtures.main, capsys)
    assert "--write" in text
    assert {p: p.stat().st_mtime_ns for p in before} == before
