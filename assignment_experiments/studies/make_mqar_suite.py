"""Write a run_suite JSON for an MQAR grid in the Zoology setting: architectures x widths x lengths x lrs x seeds.

    uv run python -m assignment_experiments.studies.make_mqar_suite --widths 64 128 256 --lengths 64:4 128:8 \
        --lrs 1e-4 4.64e-4 2.15e-3 1e-2 --seeds 0 --out assignment_experiments/configs/suites/my_mqar.json

Every run starts from ``configs/mqar_zoology.json`` (vocabulary 8192, Zoology's power-law query slots, answers kept
out of the input, 2 layers, no MLP, one head, tied embeddings, Zoology's model and optimiser recipe, stop at
``train.target_accuracy``) and changes only the architecture, ``d_model``, the sequence length with its number of
key-value pairs (Zoology pairs 64:4, 128:8, 256:16), the learning rate (cosine to 0, as Zoology) and the seed; each
run carries its own description.
``--set KEY=VALUE`` adds overrides to every run (e.g. a GPU's ``train.device=cuda``, Zoology's
``train.batch_size=512``). Run names: ``PREFIX_ARCH_dWIDTH_LLENGTH_lrLR[_sSEED]``. Besides the four default
architectures, ``--archs`` takes the variants study 11 asks about: ``transformer_conv4``, ``mamba_outnorm`` and
``hymba_ssm``.

The shipped GPU suites are this script's output (``tests/test_studies.py`` checks it)::

    --set train.device=cuda --set train.batch_size=512 --set train.max_steps=12500 \
        --set train.checkpoint_every=2500 --set train.eval_every=250 --out .../suites/mqar_zoology_gpu.json
    (the same) --archs mamba_outnorm hymba_ssm --out .../suites/mqar_zoology_gpu_ssm.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# What each architecture name sets on top of mqar_zoology.json, and how a description names it.
ARCHITECTURES: dict[str, tuple[dict[str, Any], str]] = {
    "transformer": ({}, "Transformer (one head, learned positions)"),
    "transformer_conv4": ({"model.attention.short_conv": 4}, "Transformer behind a width-4 causal convolution"),
    "mamba": (  # Zoology's MambaBlock has no state mixer, so no identity branch
        {"model.architecture": "mamba", "model.ffn.kind": "none"},
        "Mamba (two selective-SSM blocks)",
    ),
    "mamba_outnorm": (  # study 11: with the output norm Mamba recalled at width 128 on more seeds
        {"model.architecture": "mamba", "model.ffn.kind": "none", "model.ssm.out_norm": True},
        "Mamba with Mamba-2's output norm (the gated scan output RMS-normalised before out_proj)",
    ),
    "hybrid_MA": ({"model.architecture": "hybrid", "model.pattern": "MA"}, "the MA hybrid (Mamba, then attention)"),
    "hymba": (
        {"model.architecture": "hymba", "model.num_meta_tokens": 4, "model.attention.positions": "rope"},
        "Hymba (parallel attention and SSM heads, 4 meta tokens, RoPE)",
    ),
    "hymba_ssm": (  # study 11: Hymba's SSM heads recall without attention
        {
            "model.architecture": "hymba",
            "model.hymba.branches": "ssm",
            "model.num_meta_tokens": 4,
            "model.attention.positions": "rope",
        },  # as "hymba": RoPE adds no position table (learned ones would)
        "Hymba with its SSM branch only (hymba.branches ssm, 4 meta tokens)",
    ),
}


def parse_length(text: str) -> tuple[int, int]:
    try:
        length, pairs = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"length must be LENGTH:PAIRS such as 64:4, got {text!r}") from None
    return length, pairs


def parse_set(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set needs KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def suite_run(arch: str, width: int, length: int, pairs: int, lr: float, seed: int, prefix: str,
              extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One suite entry: its name and the overrides (with its own description) on top of mqar_zoology.json."""
    sets, label = ARCHITECTURES[arch]
    description = (
        f"MQAR, Zoology setting: {label}, width {width}, {pairs} key-value pairs in {length} tokens, vocabulary "
        f"8192, lr {lr:g}, seed {seed}; trained until the target accuracy or max_steps."
    )
    run_set = {"description": description, **sets, "model.d_model": width, "model.context_length": length,
               "data.task_options.num_pairs": pairs, "data.task_options.seq_len": length, "optim.lr": lr,
               "train.seed": seed, **extra}  # fmt: skip
    return {"name": f"{prefix}_{arch}_d{width}_L{length}_lr{lr:g}" + (f"_s{seed}" if seed else ""), "set": run_set}


def build_suite(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    extra = dict(args.set or [])
    runs = [
        suite_run(arch, width, length, pairs, lr, seed, args.prefix, extra)
        for length, pairs in args.lengths
        for width in args.widths
        for arch in args.archs
        for lr in args.lrs
        for seed in args.seeds
    ]
    base = os.path.relpath(CONFIGS / "mqar_zoology.json", out.resolve().parent)
    grid = (
        f"{', '.join(args.archs)} at widths {args.widths}, lengths:pairs "
        f"{[f'{n}:{p}' for n, p in args.lengths]}, lr {args.lrs}, seeds {args.seeds}"
    )
    return {
        "description": f"MQAR in the Zoology setting (configs/mqar_zoology.json): {grid}.",
        "base": base,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.studies.make_mqar_suite", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--archs", nargs="+", default=["transformer", "mamba", "hybrid_MA", "hymba"],
                        choices=sorted(ARCHITECTURES), help="architectures (default: %(default)s)")  # fmt: skip
    parser.add_argument("--widths", nargs="+", type=int, default=[64, 128, 256], help="d_model values")
    parser.add_argument("--lengths", nargs="+", type=parse_length, default=[(64, 4), (128, 8)],
                        help="LENGTH:PAIRS (Zoology: 64:4 128:8 256:16)")  # fmt: skip
    parser.add_argument("--lrs", nargs="+", type=float, default=[1e-4, 4.64e-4, 2.15e-3, 1e-2],
                        help="learning rates (default: Zoology's logspace(-4, -2, 4))")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: %(default)s)")
    parser.add_argument("--prefix", default="mqarz", help="run-name prefix (default: %(default)s)")
    parser.add_argument("--set", action="append", type=parse_set, metavar="KEY=VALUE", help="override for every run")
    parser.add_argument("--out", type=Path, required=True, help="suite JSON to write")
    args = parser.parse_args(argv)
    if min(args.widths) < 1 or any(pairs * 4 > length + 1 for length, pairs in args.lengths):
        parser.error("widths must be >= 1 and every length must hold its pairs and queries (4 x pairs <= length + 1)")
    suite = build_suite(args, args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(suite, indent=2) + "\n")
    print(f"wrote {len(suite['runs'])} runs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
