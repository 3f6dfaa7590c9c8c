"""Expert load and total/active parameters of finished MoE runs, measured on the validation split.

    uv run python -m assignment_experiments.studies.moe_expert_load runs/moe_4x_top1 runs/moe_8x_top2_half \
        --out-dir results/studies/moe_vs_dense

``transformer_lm`` has no ``diagnostics()`` (only the hybrid and Hymba models report ``diag/moe/...``), so a
Transformer MoE run's ``summary.json`` carries no expert load. This script rebuilds each run's model from
``config.json``, loads its newest checkpoint, runs it over non-overlapping validation windows and accumulates, per
MoE layer, the fraction of routing assignments each expert received (``MoEFeedForward.last_expert_load`` weighted
by the tokens of each forward), the load-balancing loss and the router z-loss; it also reports
``moe_parameter_counts`` (total vs active per token). Writes ``expert_load.json`` and ``expert_load.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from assignment_experiments.data_sources import prepare_data
from assignment_experiments.run_loading import load_run, read_run_config
from assignment_experiments.studies.rescoring import parse_rescoring_args, rescoring_parser
from cs336_basics.data.windows import iter_eval_batches
from cs336_basics.models.moe import MoEFeedForward, moe_parameter_counts


@torch.no_grad()
def expert_load(run_dir: Path, max_tokens: int, batch: int) -> dict[str, Any]:
    config = read_run_config(run_dir)
    data = prepare_data(config.data, config.model.context_length, torch.device("cpu"), seed=config.train.seed)
    run = load_run(run_dir, "latest", data_vocab_size=data.vocab_size)
    model = run.model
    layers = {name: m for name, m in model.named_modules() if isinstance(m, MoEFeedForward)}
    if not layers:
        raise ValueError(f"{run_dir} is not an MoE run (no MoEFeedForward modules)")
    load = {name: torch.zeros(m.num_experts, dtype=torch.float64) for name, m in layers.items()}
    balance = {name: 0.0 for name in layers}
    zloss = {name: 0.0 for name in layers}
    val, length = data.batches.val, config.model.context_length
    total_tokens = 0
    for inputs, _ in iter_eval_batches(val, length, batch, max_tokens):
        model(inputs)
        n = inputs.numel()
        total_tokens += n
        for name, m in layers.items():
            load[name] += m.last_expert_load.double() * n
            balance[name] += float(m.last_load_balance_loss) * n
            zloss[name] += float(m.last_z_loss) * n
    counts = moe_parameter_counts(model)
    first_layer = next(iter(layers.values()))
    return {
        "checkpoint_step": run.step,
        "num_experts": first_layer.num_experts,
        "top_k": first_layer.top_k,
        "params_total": counts["total"],
        "params_active": counts["active"],
        "tokens": total_tokens,
        "layers": {
            name: {
                "load": [float(x) for x in (load[name] / total_tokens)],
                "balance_loss": balance[name] / total_tokens,
                "z_loss": zloss[name] / total_tokens,
            }
            for name in layers
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_rescoring_args(rescoring_parser("moe_expert_load"), argv)
    results = {run.name: expert_load(run, args.max_tokens, args.batch) for run in args.runs}
    (args.out_dir / "expert_load.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = []
    for name, r in results.items():
        lines += [
            f"### {name}: {r['num_experts']} experts, top-{r['top_k']}; {r['params_total']:,} parameters total, "
            f"{r['params_active']:,} active per token (step {r['checkpoint_step']}, {r['tokens']:,} validation tokens)",
            "",
            "| layer | "
            + " | ".join(f"expert {e}" for e in range(r["num_experts"]))
            + " | max/min | balance loss | z-loss |",
            "|" + "---|" * (r["num_experts"] + 4),
        ]
        for layer, d in r["layers"].items():
            ratio = max(d["load"]) / max(min(d["load"]), 1e-12)
            lines.append(
                f"| {layer} | "
                + " | ".join(f"{x:.3f}" for x in d["load"])
                + f" | {ratio:.2f} | {d['balance_loss']:.3f} | {d['z_loss']:.2f} |"
            )
        lines.append("")
    (args.out_dir / "expert_load.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
