"""MQAR accuracy of trained runs split by the query's place in the sequence (first, second, ... query).

    uv run python -m assignment_experiments.studies.mqar_by_query runs/mqarz_transformer_d64_b512 \
        --out results/studies/mqar_zoology/by_query_original.md

Recall scores the same on every query. A model that answers by elimination (the value no earlier query has shown,
possible only when the task writes each answer into the input: ``reveal_answers=True``) scores ``E[1/(P - j)]`` on
the ``j``-th of ``P`` queries instead: 1/4, 1/3, 1/2, 1 at 4 pairs. The table puts that pattern beside the runs
whose answers are in the input. It needs each run's checkpoint (``checkpoints/``), which run folders keep locally
but the repository does not; the evaluation set is a fresh one (``--seed``), not the run's own.

``--zero GLOB`` (repeatable) sets the parameters whose names match to zero before evaluating: a knockout that says
which part of a model does the recall. ``--zero 'layers.*.beta_attn'`` removes Hymba's attention branch from every
layer (its output is ``out_proj((beta_attn * attn + beta_ssm * ssm) / 2)``), ``'layers.*.beta_ssm'`` its SSM branch.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from assignment_experiments.errors import ConfigError


def accuracy_by_query(predictions: torch.Tensor, targets: torch.Tensor, answer_mask: torch.Tensor) -> list[float]:
    """Accuracy of the ``j``-th answer position of each row, for ``j = 0 .. Q-1``; every row has ``Q`` answers.

    ``predictions``, ``targets``, ``answer_mask``: ``(B, T)``.
    """
    queries = query_positions(answer_mask).shape[1]
    correct = (predictions == targets)[answer_mask].view(len(targets), queries)  # (B, Q), in sequence order
    return correct.float().mean(dim=0).tolist()


def query_positions(answer_mask: torch.Tensor) -> torch.Tensor:
    """``(B, Q)`` positions of each row's answers (its queries), in order; every row needs the same ``Q > 0``."""
    counts = answer_mask.sum(dim=1)
    if not bool((counts == counts[0]).all()) or int(counts[0]) == 0:
        raise ValueError("every sequence needs the same, non-zero number of answers")
    return answer_mask.nonzero()[:, 1].view(len(answer_mask), int(counts[0]))


def load_mqar_run(run_dir: Path, checkpoint: str = "latest"):
    """``(LoadedRun, AssociativeRecall)`` of an MQAR run folder; ConfigError for a run on another task."""
    from assignment_experiments.run_loading import load_run
    from cs336_basics.data.synthetic import AssociativeRecall

    run = load_run(run_dir, checkpoint=checkpoint)
    data = run.config.data
    if data.source != "synthetic" or data.task not in ("mqar", "associative_recall"):
        raise ConfigError(f"config error: {run_dir} is not an MQAR run (data.task {data.task!r})")
    return run, AssociativeRecall(**data.task_options)


def shuffle_pairs(inputs: torch.Tensor, num_pairs: int, generator: torch.Generator) -> torch.Tensor:
    """``inputs`` ``(B, T)`` with each row's ``num_pairs`` leading key-value pairs put in a random order.

    Recall does not care where a pair sits; a positional shortcut does. Zoology's power-law placement gives pair
    ``i`` the ``i``-th slot draw, so the first query in the sequence is more often pair 0's: a model could score above
    the floor by answering "the value of the pair whose index is this query's rank". Shuffling breaks that link and
    keeps everything else (the queries, their distances, the targets).
    """
    order = torch.rand(len(inputs), num_pairs, generator=generator).argsort(dim=1)  # (B, P)
    pairs = inputs[:, : 2 * num_pairs].view(len(inputs), num_pairs, 2)
    shuffled = inputs.clone()
    shuffled[:, : 2 * num_pairs] = pairs.gather(1, order[..., None].expand(-1, -1, 2)).flatten(1)
    return shuffled


def elimination_pattern(num_pairs: int, num_queries: int) -> list[float]:
    """What answering by elimination scores on each query (distinct values): ``1 / (P - j)``."""
    return [1 / (num_pairs - j) for j in range(num_queries)]


@torch.no_grad()
def zero_parameters(model: torch.nn.Module, patterns: Sequence[str], where: Path) -> None:
    """Set every parameter whose name matches one of the fnmatch ``patterns`` to zero; ConfigError for a pattern that
    matches nothing (a typo would otherwise report the intact model as knocked out)."""
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ConfigError(f"config error: --zero {pattern!r} matches no parameter of {where}; its parameters "
                              f"include {names[:4]} ... {names[-2:]}")  # fmt: skip
    for name, parameter in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            parameter.zero_()


@torch.no_grad()
def run_accuracy_by_query(
    run_dir: Path, num_sequences: int, seed: int, shuffle: bool = False, zero: Sequence[str] = ()
) -> tuple[dict, list[float]]:
    run, task = load_mqar_run(run_dir)
    zero_parameters(run.model, zero, run_dir)
    inputs, targets, mask = task.validation_set(num_sequences, seed=seed)
    if shuffle:
        inputs = shuffle_pairs(inputs, task.num_pairs, torch.Generator().manual_seed(seed + 1))
    predictions = torch.cat([run.model(inputs[i : i + 256]).argmax(dim=-1) for i in range(0, num_sequences, 256)])
    return run.config.data.task_options, accuracy_by_query(predictions, targets, mask)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.studies.mqar_by_query", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="MQAR run folders with a checkpoint")
    parser.add_argument("--sequences", type=int, default=4096, help="evaluation sequences (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=99, help="seed of the evaluation set (default: %(default)s)")
    parser.add_argument("--shuffle-pairs", action="store_true",
                        help="put each sequence's pairs in a random order: recall is unchanged, a shortcut through "
                        "the pairs' positions is not")  # fmt: skip
    parser.add_argument("--zero", action="append", default=[], metavar="GLOB",
                        help="set the parameters whose names match to zero first, a knockout (repeatable), e.g. "
                        "'layers.*.beta_attn' removes Hymba's attention branch")  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows, patterns, width = [], {}, 0
    for run_dir in args.runs:
        try:
            options, per_query = run_accuracy_by_query(
                run_dir, args.sequences, args.seed, args.shuffle_pairs, args.zero
            )
        except (ConfigError, ValueError, FileNotFoundError) as error:
            print(f"error: {run_dir}: {error}", file=sys.stderr)
            return 2
        revealed = "yes" if options.get("reveal_answers", True) else "no"
        width = max(width, len(per_query))
        rows.append((f"`{run_dir.name}`", revealed, per_query, sum(per_query) / len(per_query)))
        if revealed == "yes":  # elimination is a route only where the answers are in the input
            patterns[(options["num_pairs"], len(per_query))] = None
    for pairs, queries in patterns:
        pattern = elimination_pattern(pairs, queries)
        rows.append((f"answering by elimination ({pairs} pairs)", "yes", pattern, sum(pattern) / len(pattern)))
    header = "| run | answers in input | " + " | ".join(f"query {j + 1}" for j in range(width)) + " | all |"
    lines = [header, "|" + " --- |" * (width + 3)]
    for name, revealed, per_query, mean in rows:
        cells = [f"{a:.3f}" for a in per_query] + [""] * (width - len(per_query))
        lines.append(f"| {name} | {revealed} | " + " | ".join(cells) + f" | {mean:.3f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        flags = (" --shuffle-pairs" if args.shuffle_pairs else "") + "".join(f" --zero '{g}'" for g in args.zero)
        command = (
            "uv run python -m assignment_experiments.studies.mqar_by_query " + " ".join(map(str, args.runs)) + flags
        )
        shuffled = ", pairs shuffled" if args.shuffle_pairs else ""
        zeroed = "".join(f", {g} set to zero" for g in args.zero)
        heading = f"Accuracy by query order ({args.sequences} fresh sequences, seed {args.seed}{shuffled}{zeroed}):"
        args.out.write_text(f"{heading}\n\n```bash\n{command}\n```\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
