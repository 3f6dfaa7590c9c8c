"""Per-layer attention/SSM branch shares of finished Hymba runs, from their final checkpoints.

    uv run python -m assignment_experiments.studies.hymba_branch_shares runs/arch_hymba runs/arch_hymba_s1

Each Hymba layer mixes ``attn_norm(attn(h)) * beta_attn`` and ``ssm_norm(mamba(h)) * beta_ssm``. The model's own
diagnostic (``diag/hymba/layer{i}/share_attn`` in summary/metrics) is ``mean|beta_attn| / (mean|beta_attn| +
mean|beta_ssm|)``; but the branch norms' learned gains multiply the same channels, so the scale a branch actually
gets is ``|gain * beta|``. This prints both, per layer, as a Markdown table: the logged (beta-only) share and the
effective share ``mean|attn_norm.weight * beta_attn| / (that + mean|ssm_norm.weight * beta_ssm|)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from assignment_experiments.run_loading import RunFolderError, read_run_checkpoint


def layer_shares(state: dict[str, torch.Tensor]) -> list[tuple[float, float]]:
    """``[(beta_share_attn, effective_share_attn), ...]`` for every layer with ``beta_attn``."""
    shares, i = [], 0
    while f"layers.{i}.beta_attn" in state:
        p = f"layers.{i}."
        beta_a, beta_s = state[p + "beta_attn"].float(), state[p + "beta_ssm"].float()
        gain_a, gain_s = state[p + "attn_norm.weight"].float(), state[p + "ssm_norm.weight"].float()
        a, s = beta_a.abs().mean(), beta_s.abs().mean()
        ea, es = (beta_a * gain_a).abs().mean(), (beta_s * gain_s).abs().mean()
        shares.append((float(a / (a + s)), float(ea / (ea + es))))
        i += 1
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.studies.hymba_branch_shares", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="Hymba run directories (with checkpoints)")
    args = parser.parse_args(argv)
    print(
        "| run | checkpoint | layer | share_attn (logged, beta only) "
        "| share_attn (effective, gain x beta) | share_ssm (effective) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for run_dir in args.runs:
        try:
            path, payload = read_run_checkpoint(run_dir, "latest")
        except RunFolderError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        state = payload["model"]
        for layer, (logged, effective) in enumerate(layer_shares(state)):
            print(f"| {run_dir.name} | {path.name} | {layer} | {logged:.3f} | {effective:.3f} | {1 - effective:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
