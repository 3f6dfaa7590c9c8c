"""Where each attention layer of a trained MQAR run looks: has it formed the two heads that recall needs?

    uv run python -m assignment_experiments.studies.mqar_attention runs/mqarzr_transformer_d64_drop_b999 \
        runs/mqarzr_transformer_d256_lr2e-3_drop_b999 --out results/studies/mqar_zoology/attention_probe.md

Pure attention recalls MQAR with a two-step circuit. At the position of each value, one head reads the previous
position (the key that binds it), so that position now carries both key and value. At a query, a second head
attends to the position whose copied key matches the query's key, which is the matching value's position, and reads
the value off it. A model stuck on the value-guessing floor can lack either step, and the scores below tell which:

- **previous-token score**: the attention weight a value position ``2j + 1`` gives to its key at ``2j``, averaged
  over the pairs (1.0 = a perfect previous-token head; chance is ``1 / (M + 2j + 2)`` after ``M`` prefix tokens).
- **retrieval score**: the weight a query position gives to the value position of the pair it asks about, averaged
  over the queries (1.0 = perfect retrieval; chance is ``1 / (number of positions the query can see)``, or 0 where a
  sliding window hides the value, printed beside it).
- **value mass**: the weight the same head gives the query to all ``P`` value positions together. A head that has
  learned where values sit but not which one to read spreads it evenly, so its retrieval score is about ``1 / P`` of
  its value mass: the value-guessing floor as an attention pattern. Retrieval close to the value mass is recall.

Each attention layer gets the scores (each from its best head), since which layer takes which step is up to training.
The scores describe the pure-attention circuit. A layer whose input already carries the previous token (a short
convolution or a Mamba layer before it) needs no previous-token head, and after a convolution a query may read the
pair from the positions just after the value, which the retrieval score does not count. Like ``mqar_by_query``, this
reads the run's checkpoint (``--checkpoint``; a running run's latest one works too, which traces the circuit forming)
on a fresh evaluation set.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from assignment_experiments.errors import ConfigError
from assignment_experiments.studies.mqar_by_query import load_mqar_run, query_positions
from cs336_basics.nn.attention import CausalMultiHeadSelfAttention, causal_mask
from cs336_basics.training.checkpoint_files import list_checkpoints


@dataclass
class LayerScores:
    """One attention layer's circuit scores and the retrieval score's chance level (see the module docstring)."""

    layer: str
    previous_token: float
    retrieval: float
    value_mass: float
    retrieval_chance: float


def pair_of_query(inputs: torch.Tensor, query_positions: torch.Tensor, num_pairs: int) -> torch.Tensor:
    """For each query, the index ``j`` of the pair whose key the query repeats.

    ``inputs``: ``(B, T)`` with keys at ``0, 2, .., 2P - 2``; ``query_positions``: ``(B, Q)``. Keys are distinct
    within a sequence, so each query matches exactly one pair.
    """
    keys = inputs[:, 0 : 2 * num_pairs : 2]  # (B, P)
    asked = inputs.gather(1, query_positions)  # (B, Q)
    matches = asked[:, :, None] == keys[:, None, :]  # (B, Q, P)
    if not bool((matches.sum(dim=-1) == 1).all()):
        raise ValueError("every query must repeat exactly one of its sequence's keys")
    return matches.float().argmax(dim=-1)  # (B, Q)


def head_scores(
    weights: torch.Tensor, inputs: torch.Tensor, answer_mask: torch.Tensor, num_pairs: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each head's mean previous-token score, retrieval score and value mass, three ``(H,)`` tensors.

    ``weights``: ``(B, H, T', T')`` attention probabilities, where the last ``T`` of the ``T'`` positions are the
    sequence (any extra leading positions are prefix tokens such as Hymba's meta tokens); ``inputs`` and
    ``answer_mask``: ``(B, T)``, the mask marking the positions whose next-token prediction is an answer (the
    queries).
    """
    B, H, total, _ = weights.shape
    offset = total - inputs.shape[1]
    values = offset + torch.arange(1, 2 * num_pairs, 2)  # (P,) value positions; each key sits just before
    previous = weights[:, :, values, values - 1].mean(dim=(0, 2))  # (H,)
    queries = query_positions(answer_mask)  # (B, Q)
    target = offset + 2 * pair_of_query(inputs, queries, num_pairs) + 1  # (B, Q) the matching value
    rows, heads, at = torch.arange(B)[:, None, None], torch.arange(H)[None, :, None], (offset + queries)[:, None, :]
    read = weights[rows, heads, at, target[:, None, :]].mean(dim=(0, 2))  # (H,)
    mass = weights[rows, heads, at][..., values].sum(dim=-1).mean(dim=(0, 2))  # (B, H, Q, T') -> (H,)
    return previous, read, mass


def best_head(previous: torch.Tensor, read: torch.Tensor, mass: torch.Tensor) -> tuple[float, float, float]:
    """(the best previous-token score, the best retrieval score, that retrieving head's value mass)."""
    best = int(read.argmax())
    return float(previous.max()), float(read[best]), float(mass[best])


def circuit_scores(
    weights: torch.Tensor, inputs: torch.Tensor, answer_mask: torch.Tensor, num_pairs: int
) -> tuple[float, float, float]:
    """(previous-token score, retrieval score, value mass) of one layer's attention ``weights`` (see
    :func:`head_scores`): the previous-token score is the best head's; the retrieval score and the value mass are
    those of the head that retrieves best."""
    return best_head(*head_scores(weights, inputs, answer_mask, num_pairs))


def retrieval_chance(
    module: CausalMultiHeadSelfAttention, total: int, inputs: torch.Tensor, answer_mask: torch.Tensor, num_pairs: int
) -> float:
    """The retrieval score of a head that spreads each query evenly over the ``total`` positions the layer lets it
    see: ``1 / visible``, or 0 where a sliding window hides the matching value."""
    allowed = causal_mask(total, total, module.window, None, module.num_prefix)  # (T', T')
    offset = total - inputs.shape[1]
    queries = query_positions(answer_mask)  # (B, Q)
    target = offset + 2 * pair_of_query(inputs, queries, num_pairs) + 1  # (B, Q)
    at = offset + queries
    return float((allowed[at, target].double() / allowed[at].sum(dim=-1).double()).mean())


@torch.no_grad()
def probe_model(
    model: torch.nn.Module, inputs: torch.Tensor, answer_mask: torch.Tensor, num_pairs: int, chunk: int = 64
) -> tuple[list[LayerScores], torch.Tensor]:
    """Circuit scores of every attention layer of ``model`` on ``inputs`` ``(B, T)``, and its predictions ``(B, T)``.

    Runs ``chunk`` sequences at a time and keeps only each head's running sums, so neither the logits of a large
    vocabulary nor the ``(T', T')`` attention maps of every sequence are held at once.
    """
    named = [(name, m) for name, m in model.named_modules() if isinstance(m, CausalMultiHeadSelfAttention)]
    if not named:
        raise ConfigError("config error: the model has no attention layer to probe")
    sums: dict[str, list[torch.Tensor]] = {}
    totals: dict[str, int] = {}
    current: dict[str, torch.Tensor] = {}  # the chunk being run

    def capture(name: str, module: CausalMultiHeadSelfAttention):
        def hook(_module, args, kwargs):
            weights = module.attention_weights(args[0], shared_kv=kwargs.get("shared_kv"))  # (b, H, T', T')
            scores = head_scores(weights, current["inputs"], current["mask"], num_pairs)
            n = len(current["inputs"])
            sums[name] = [n * s + old for s, old in zip(scores, sums.get(name, (0, 0, 0)), strict=True)]
            totals[name] = weights.shape[-1]

        return hook

    hooks = [module.register_forward_pre_hook(capture(name, module), with_kwargs=True) for name, module in named]
    predictions = []
    try:
        for i in range(0, len(inputs), chunk):
            current.update(inputs=inputs[i : i + chunk], mask=answer_mask[i : i + chunk])
            predictions.append(model(current["inputs"]).argmax(dim=-1))
    finally:
        for hook in hooks:
            hook.remove()
    scores = []
    for name, module in named:
        previous, retrieval, mass = best_head(*(s / len(inputs) for s in sums[name]))
        chance = retrieval_chance(module, totals[name], inputs, answer_mask, num_pairs)
        scores.append(LayerScores(name, previous, retrieval, mass, chance))
    return scores, torch.cat(predictions)


def probe_run(run_dir: Path, checkpoint: str, num_sequences: int, seed: int) -> tuple[int, float, list[LayerScores]]:
    """(checkpoint step, accuracy, per-layer scores) of an MQAR run folder on a fresh evaluation set."""
    run, task = load_mqar_run(run_dir, checkpoint)
    inputs, targets, mask = task.validation_set(num_sequences, seed=seed)
    scores, predictions = probe_model(run.model, inputs, mask, task.num_pairs)
    accuracy = float((predictions == targets)[mask].float().mean())
    return run.step, accuracy, scores


def markdown_table(rows: list[tuple[str, int, float, list[LayerScores]]]) -> str:
    """One line per (run, attention layer)."""
    lines = [
        "| run | step | accuracy | layer | previous-token score | retrieval score | value mass | retrieval chance |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, step, accuracy, scores in rows:
        for layer in scores:
            lines.append(
                f"| `{name}` | {step} | {accuracy:.3f} | `{layer.layer}` | {layer.previous_token:.3f} | "
                f"{layer.retrieval:.3f} | {layer.value_mass:.3f} | {layer.retrieval_chance:.3f} |"
            )
    return "\n".join(lines)


def plot_circuit(rows: list[tuple[str, int, float, list[LayerScores]]], out: Path, title: str) -> int:
    """Scatter of the two-attention-layer runs: layer 0's previous-token score against layer 1's retrieval score,
    coloured by accuracy; returns how many runs it drew. Runs with another number of attention layers are left out
    (the circuit's two steps need two layers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    two = [(name, acc, scores) for name, _, acc, scores in rows if len(scores) == 2]
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    if two:
        xs = [scores[0].previous_token for _, _, scores in two]
        ys = [scores[1].retrieval for _, _, scores in two]
        dots = ax.scatter(xs, ys, c=[acc for _, acc, _ in two], cmap="viridis", vmin=0.0, vmax=1.0, s=36)
        fig.colorbar(dots, ax=ax, label="accuracy")
        chance = max(scores[1].retrieval_chance for _, _, scores in two)
        ax.axhline(chance, color="grey", linestyle=":", label=f"retrieval chance (up to {chance:.3f})")
        ax.legend(loc="upper left")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=title,
           xlabel="layer 0: previous-token score", ylabel="layer 1: retrieval score")  # fmt: skip
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return len(two)


def plot_trace(rows: list[tuple[str, int, float, list[LayerScores]]], out: Path, title: str) -> None:
    """The scores against the training step, one panel per run: accuracy, the best previous-token score and the best
    retrieval score over the attention layers (each labelled with the layer it came from at the last step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(name for name, *_ in rows))
    fig, axes = plt.subplots(len(runs), 1, figsize=(7.5, 3.2 * len(runs)), squeeze=False, sharex=True)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        own = sorted((step, acc, scores) for name, step, acc, scores in rows if name == run)
        steps = [step for step, _, _ in own]
        last = own[-1][2]
        prev_layer = max(range(len(last)), key=lambda i: last[i].previous_token)
        read_layer = max(range(len(last)), key=lambda i: last[i].retrieval)
        ax.plot(steps, [acc for _, acc, _ in own], color="black", label="accuracy")
        ax.plot(steps, [sc[prev_layer].previous_token for _, _, sc in own], marker=".",
                label=f"previous-token score ({last[prev_layer].layer})")  # fmt: skip
        ax.plot(steps, [sc[read_layer].retrieval for _, _, sc in own], marker=".",
                label=f"retrieval score ({last[read_layer].layer})")  # fmt: skip
        ax.plot(steps, [sc[read_layer].value_mass for _, _, sc in own], linestyle="--",
                label=f"value mass ({last[read_layer].layer})")  # fmt: skip
        ax.set(ylim=(-0.02, 1.02), title=run, ylabel="score")
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", fontsize=8)
    axes[-1, 0].set_xlabel("training step (checkpoint)")
    fig.tight_layout()
    fig.suptitle(title, y=1.0 + 0.1 / len(runs))  # above the panel titles
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.studies.mqar_attention", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="MQAR run folders with a checkpoint")
    parser.add_argument("--checkpoint", default="latest",
                        help="latest, best, a step number, or all: every kept checkpoint, which traces the circuit "
                        "forming when the run kept them (train.keep_checkpoints) (default: latest)")  # fmt: skip
    parser.add_argument("--sequences", type=int, default=512, help="evaluation sequences (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=99, help="seed of the evaluation set (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    parser.add_argument("--plot", type=Path, help="also draw layer 0's previous-token score against layer 1's "
                        "retrieval score, one dot per two-layer run, to this PNG")  # fmt: skip
    parser.add_argument("--trace", type=Path, help="with --checkpoint all: draw the scores against the step, one "
                        "panel per run, to this PNG")  # fmt: skip
    parser.add_argument("--title", default="MQAR: the two steps of the recall circuit", help="the plots' title")
    args = parser.parse_args(argv)
    if args.sequences < 1:
        print("error: --sequences must be >= 1", file=sys.stderr)
        return 2
    if args.trace and args.checkpoint != "all":
        print("error: --trace draws scores over the checkpoints; add --checkpoint all", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rows = []
    for run_dir in args.runs:
        try:
            which = [args.checkpoint]
            if args.checkpoint == "all":
                which = [str(int(p.stem.removeprefix("step_"))) for p in list_checkpoints(run_dir / "checkpoints")]
                if not which:
                    raise FileNotFoundError(f"{run_dir} has no checkpoints/step_*.pt")
            for checkpoint in which:
                step, accuracy, scores = probe_run(run_dir, checkpoint, args.sequences, args.seed)
                rows.append((run_dir.name, step, accuracy, scores))
        except (ConfigError, ValueError, FileNotFoundError) as error:
            print(f"error: {run_dir}: {error}", file=sys.stderr)
            return 2
    table = markdown_table(rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = "uv run python -m assignment_experiments.studies.mqar_attention " + " ".join(map(str, args.runs))
        if args.checkpoint != "latest":
            command += f" --checkpoint {args.checkpoint}"
        if (args.sequences, args.seed) != (512, 99):
            command += f" --sequences {args.sequences} --seed {args.seed}"
        heading = f"Attention circuit scores ({args.sequences} fresh sequences, seed {args.seed}):"
        args.out.write_text(f"{heading}\n\n```bash\n{command}\n```\n\n{table}\n")
    if args.plot:
        drawn = plot_circuit(rows, args.plot, args.title)
        print(f"wrote {args.plot} ({drawn} of {len(rows)} runs have two attention layers)")
    if args.trace:
        plot_trace(rows, args.trace, args.title)
        print(f"wrote {args.trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
