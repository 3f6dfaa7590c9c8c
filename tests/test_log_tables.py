"""The hand-written study tables of EXPERIMENT_LOG.md (and of the study write-ups) agree with the runs they name.

Every markdown table above the log's generated "## Results table", and in ``results/studies/*/README.md``, is read; a row whose first cell names a run folder under
``results/runs/`` (``lr_0.01``, ``ablate_baseline_s1 (seed 1)``, or a pattern ``AMMMMMMA (seed 1)`` of the
``pattern_*`` runs) has each cell of a known column compared with that run's ``summary.json``, at the precision the
cell is printed with. Run it alone with ``uv run pytest tests/test_log_tables.py -q``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "runs"

# column header -> summary.json key
COLUMNS = {
    "final val loss": "final_val_loss",
    "final val loss (runner, 128)": "final_val_loss",
    "final val ppl": "final_val_perplexity",
    "best eval loss": "best_val_loss",
    "params": "num_params",
    "params total": "num_params",
    "params active / token": "num_params_active",
    "runtime (s)": "runtime_s",
    "tokens/s": "tokens_per_s",
    "steps": "steps",
    "tokens": "tokens_seen",
    "averaged (last 3 ckpts)": "averaged_val_loss",
}


DOCUMENTS = ["EXPERIMENT_LOG.md", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("results/studies/*/README.md"))]


def _hand_written_tables(document: str = "EXPERIMENT_LOG.md") -> list[list[list[str]]]:
    text = (ROOT / document).read_text().split("\n## Results table", 1)[0]
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def _run_named(cell: str) -> str | None:
    words = re.sub(r"[*`]", "", cell).split()
    if not words:
        return None
    seed = "_s1" if "(seed 1" in cell and not words[0].endswith("_s1") else ""
    for name in (words[0] + seed, f"pattern_{words[0]}{seed}"):
        if (RUNS / name / "summary.json").is_file():
            return name
    return None


def _stated(cell: str) -> tuple[float, int] | None:
    """The first number of a cell and its count of decimals (``**1.436** (ppl 4.21)`` -> (1.436, 3))."""
    match = re.search(r"-?\d[\d,]*(?:\.(\d+))?", re.sub(r"[*`]", "", cell))
    if not match:
        return None
    return float(match.group(0).replace(",", "")), len(match.group(1) or "")


def mismatches(document: str = "EXPERIMENT_LOG.md") -> tuple[list[str], int]:
    """Cells of ``document`` that disagree with their run's summary, and how many cells were compared."""
    found, checked = [], 0
    for table in _hand_written_tables(document):
        header = table[0]
        for row in table[2:]:
            name = _run_named(row[0]) if row else None
            if name is None or len(row) != len(header):
                continue
            summary = json.loads((RUNS / name / "summary.json").read_text())
            for column, cell in zip(header, row, strict=True):
                key = COLUMNS.get(column)
                stated = _stated(cell) if key else None
                if stated is None or summary.get(key) is None:
                    continue
                value, decimals = stated
                checked += 1
                if abs(value - summary[key]) > 0.5 * 10**-decimals + 1e-9:
                    found.append(f"{document}: {name}: '{column}' says {cell}, summary.json {key} = {summary[key]!r}")
    return found, checked


def test_the_log_tables_are_checked_at_all():
    assert mismatches()[1] > 200, "few cells checked: did the tables' layout change?"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_hand_written_study_tables_match_the_summaries_of_the_runs_they_name(document):
    found, _ = mismatches(document)
    assert not found, "\n".join(found)


if __name__ == "__main__":
    for document in DOCUMENTS:
        found, checked = mismatches(document)
        print(f"{document}: {checked} cells checked", *found, sep="\n  ")
