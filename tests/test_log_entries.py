"""Every generated run entry of EXPERIMENT_LOG.md states only what its run did.

The entry text is parsed back: each number it states is compared with the run's ``config.json`` (read through
``config_from_dict``, so older flat configs count as the model they built), ``summary.json`` and ``metrics.jsonl``,
and a settings line may hold no number that no check accounts for. The description an entry quotes is checked
against the base config file it names (that text describes the base, and the entry says so)."""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import pytest

from assignment_experiments.config import config_from_dict
from cs336_basics.data.synthetic import AssociativeRecall

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "runs"
CONFIGS = ROOT / "assignment_experiments" / "configs"
BLOCK = re.compile(r"<!-- generated:run:(?P<name>[^>]+?) -->\n(?P<body>.*?)<!-- /generated:run:(?P=name) -->", re.S)
NUMBER = r"-?[\d,]*\.?\d+(?:e[+-]?\d+)?"


def _entries() -> dict[str, str]:
    return {m.group("name"): m.group("body") for m in BLOCK.finditer((ROOT / "EXPERIMENT_LOG.md").read_text())}


def _runs() -> list[str]:
    return sorted(p.parent.name for p in RUNS.glob("*/summary.json"))


def _field(body: str, label: str) -> str:
    match = re.search(rf"^- \*\*{re.escape(label)}(?:\*\*| \()(.*)$", body, re.M)
    assert match, f"entry has no '{label}' line"
    return match.group(1)


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _close(stated: str, actual: float, digits: int = 4) -> bool:
    """``stated`` is ``actual`` as printed to ``digits`` significant digits (or exactly, for integers)."""
    value = _num(stated)
    if not isinstance(actual, int | float):
        return False
    if actual == 0:
        return value == 0
    return abs(value - actual) <= 0.5 * 10 ** (math.floor(math.log10(abs(actual))) - digits + 1) * 1.0001


def _at(tree: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


class Checker:
    """Consume the numbers of one line: each ``check`` removes what it matched, ``leftover`` lists what is left."""

    def __init__(self, line: str, run: str):
        self.line, self.run = line, run

    def check(self, pattern: str, expected) -> None:
        matches = list(re.finditer(pattern, self.line))
        for match in matches:
            got = expected(*match.groups())
            assert got is True, f"{self.run}: '{match.group(0)}' disagrees with the run's files ({got})"
        self.line = re.sub(pattern, " ", self.line)

    def leftover(self) -> list[str]:
        return re.findall(r"\d+", self.line)


@pytest.fixture(scope="module")
def entries():
    return _entries()


def test_every_run_folder_has_a_generated_entry(entries):
    missing = [name for name in _runs() if name not in entries]
    assert not missing, f"no generated entry for {missing}; regenerate with the report command in the log"


def test_every_run_entry_has_observations():
    """The report appends a placeholder under each new entry's Observations heading; the committed log replaces it
    with what the run shows (or where its study discusses it)."""
    from assignment_experiments.report import OBSERVATIONS_PLACEHOLDER

    text = (ROOT / "EXPERIMENT_LOG.md").read_text()
    unfilled = re.findall(r"^### (\S+)\n(?:(?!^### ).*\n)*?" + re.escape(OBSERVATIONS_PLACEHOLDER), text, re.M)
    assert not unfilled, f"entries without observations: {unfilled}; write them under '#### Observations'"


@pytest.mark.parametrize("name", _runs())
def test_every_number_a_run_entry_states_matches_the_run(name, entries):
    if name not in entries:
        pytest.skip("no entry (the test above names it)")
    body, run = entries[name], RUNS / name
    raw = json.loads((run / "config.json").read_text())
    config = config_from_dict(raw).to_dict()
    summary = json.loads((run / "summary.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    model, data, train, optim = config["model"], config["data"], config["train"], config["optim"]
    options = data["task_options"]
    synthetic = data["source"] == "synthetic"
    length = options.get("seq_len", model["context_length"]) if synthetic else model["context_length"]
    plan = model["pattern"] if model["architecture"] == "hybrid" else None
    layers = len(plan) if plan else model["num_layers"]

    # the settings line: every number in it is accounted for
    s = Checker(_field(body, "Settings as run:"), name)
    eq = lambda actual: lambda text: _close(text, actual, 6) or f"config says {actual}"  # noqa: E731  (:g form)
    s.check(r"pattern `(\w+)`", lambda text: text == plan or f"config pattern {plan}")
    s.check(r"(\d+) layers", eq(layers))
    s.check(r"d_model (\d+)", eq(model["d_model"]))
    s.check(r"expert d_ff (\d+)", eq((model["ffn"]["moe"] or {}).get("d_ff")))
    s.check(r"MoE (\d+) experts top-(\d+)", lambda e, k: [int(e), int(k)] == [
        model["ffn"]["moe"]["num_experts"], model["ffn"]["moe"]["top_k"]] or "config MoE differs")  # fmt: skip
    s.check(r"target_params ([\d,]+)", eq(model["target_params"]))
    s.check(r"d_ff (\d+)", eq(model["ffn"]["d_ff"]))
    s.check(r"d_state (\d+)", eq(model["ssm"]["d_state"]))
    s.check(r"d_conv (\d+)", eq(model["ssm"]["d_conv"]))
    s.check(r"short conv (\d+) before attention", eq(model["attention"].get("short_conv")))
    s.check(r"(\w+) init", lambda text: text == model.get("init", "cs336") or f"config init {model.get('init')}")
    s.check(rf"attention dropout ({NUMBER})", eq(model["attention"].get("dropout")))
    s.check(rf"embedding dropout ({NUMBER})", eq(model.get("embedding_dropout")))
    s.check(rf"betas ({NUMBER})/({NUMBER}),", lambda a, b: (_close(a, optim["betas"][0], 6) and _close(
        b, optim["betas"][1], 6)) or f"config betas {optim['betas']}")  # fmt: skip
    s.check(r"expansion (\d+)", eq(model["residual"]["hc_expansion"]))
    s.check(r"expand (\d+)", eq(model["ssm"]["expand"]))
    s.check(r"meta tokens (\d+)", eq(model["num_meta_tokens"]))
    s.check(r"fast weights (\d+) heads", eq(model["residual"]["fast_weight_heads"]))
    s.check(r"(\d+) heads", eq(model["attention"]["num_heads"]))
    s.check(r"(\d+) key-value pairs in a (\d+)-token sequence, vocab (\d+)", lambda p, n, v: (
        [int(p), int(n), int(v)] == [options["num_pairs"], options["seq_len"], options.get("vocab_size", 128)]
        or f"task options {options}"))  # fmt: skip
    s.check(r"task \w+: ((?:\w+ [\d,]+(?:, )?)+);", lambda listed: all(
        options.get(key) == _num(value) for key, value in re.findall(r"(\w+) ([\d,]+)", listed))
        or f"task options {options}")  # fmt: skip
    s.check(r"tokenizer vocab ([\d,]+)", eq(data["tokenizer_vocab_size"]))
    s.check(rf"reached the target ({NUMBER});", lambda value: _close(value, train.get("target_accuracy"), 6)
            or f"config target_accuracy {train.get('target_accuracy')}")  # fmt: skip
    s.check(r"max_steps ([\d,]+)", eq(train["max_steps"]))
    s.check(r"([\d,]+) steps", eq(summary["steps"]))
    s.check(r"batch (\d+) x (\d+) tokens", lambda b, n: [int(b), int(n)] == [train["batch_size"], length]
            or f"config batch {train['batch_size']}, sequence {length}")  # fmt: skip
    s.check(r"grad accumulation (\d+)", eq(train["grad_accum_steps"]))
    s.check(r"= ([\d,]+) tokens", eq(summary["tokens_seen"]))
    s.check(rf"lr ({NUMBER}) -> min_lr ({NUMBER})", lambda a, b: (_close(a, optim["lr"], 6) and _close(
        b, optim["min_lr"], 6)) or f"config lr {optim['lr']} -> {optim['min_lr']}")  # fmt: skip
    s.check(rf"weight decay ({NUMBER})", eq(optim["weight_decay"]))
    s.check(r"warmup ([\d,]+)", eq(optim["warmup_steps"]))
    s.check(r"decay ([\d,]+)", eq(optim["decay_steps"]))
    s.check(rf"grad clip ({NUMBER})", eq(optim["grad_clip"]))
    s.check(r"average of last (\d+)", eq(train["average_last_k"]))
    s.check(r"seed (\d+)", eq(train["seed"]))
    assert not s.leftover(), f"{name}: settings state numbers no check covers: {s.leftover()} in {s.line!r}"
    assert summary["tokens_seen"] == summary["steps"] * train["batch_size"] * train["grad_accum_steps"] * length

    # the results line: summary columns, the MQAR floor and the final training loss
    r = Checker(_field(body, "Results:"), name)
    last = [rec for rec in records if rec.get("kind") == "train" and rec.get("loss") is not None][-1]
    r.check(rf"final train loss ({NUMBER}) \(step ([\d,]+)\)", lambda loss, step: (
        _close(loss, last["loss"]) and _num(step) == last["step"]) or f"last train record {last}")  # fmt: skip
    if data["task"] == "mqar":
        task = AssociativeRecall(**options)
        floor, elimination = task.value_guess_floor(), task.elimination_floor()
        r.check(r"\(trivial floor (\d\.\d+)[;)]", lambda text: round(floor, 3) == float(text) or f"floor {floor}")
        r.check(
            r"elimination floor (\d\.\d+)\)",
            lambda text: (
                (elimination is not None and round(elimination, 3) == float(text)) or f"elimination floor {elimination}"
            ),
        )
        assert "trivial floor" in _field(body, "Results:")
        assert ("elimination floor" in _field(body, "Results:")) == (elimination is not None)  # exactly when leaky
    r.check(rf"\b([a-z_]+) ({NUMBER})\b", lambda key, text: (
        key in summary and _close(text, summary[key])) or f"summary {key} = {summary.get(key)}")  # fmt: skip
    assert not r.leftover(), f"{name}: results state numbers no check covers: {r.leftover()} in {r.line!r}"

    params = re.search(r"([\d,]+) parameters", _field(body, "Architecture:")).group(1)
    assert _num(params) == summary["num_params"]

    # "key: old -> new" lists: new is this run's value, old the base config's / the baseline run's
    def check_changes(line: str, other: dict) -> None:
        for key, old, new in re.findall(r"`([\w.]+)`: (.*?) -> (.*?)(?=; `|$)", line):
            assert ast.literal_eval(new) == _at(config, key), f"{name}: {key} is {_at(config, key)!r}, not {new}"
            assert ast.literal_eval(old) == _at(other, key), f"{name}: {key} was {_at(other, key)!r}, not {old}"

    baseline = summary.get("baseline")
    if baseline and (RUNS / baseline / "config.json").is_file():
        other = config_from_dict(json.loads((RUNS / baseline / "config.json").read_text())).to_dict()
        check_changes(_field(body, "Baseline:"), other)
    base = re.search(r"base config `configs/([\w.]+)`", body)
    if base:
        base_raw = json.loads((CONFIGS / base.group(1)).read_text())
        check_changes(_field(body, "Changed from the base config:"), config_from_dict(base_raw).to_dict())
        assert base_raw["description"] == raw["description"] and raw["description"] in body
        # the quoted description describes the base config: its setting phrases must match that file
        described = config_from_dict(base_raw).to_dict()
        for pairs, tokens in re.findall(r"(\d+) key-value pairs in a (\d+)-token", raw["description"]):
            assert [int(pairs), int(tokens)] == [described["data"]["task_options"][k] for k in ("num_pairs", "seq_len")]
        for steps, batch, context in re.findall(r"(\d+) steps of (\d+)x(\d+) tokens", raw["description"]):
            assert [int(steps), int(batch), int(context)] == [
                described["train"]["max_steps"],
                described["train"]["batch_size"],
                described["model"]["context_length"],
            ]
    else:
        assert "base config" not in body
