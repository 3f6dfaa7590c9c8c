"""Per-layer attention/SSM branch shares of finished Hymba runs, from their final checkpoints.

    uv run python -m assignment_experiments.studies.hymba_branch_shares runs/arch_hymba runs/arch_hymba_s1

The shares are the model's own (:func:`cs336_basics.models.hymba.branch_shares`, the same computation as the
``diag/hymba/layer{i}/...`` diagnostics), applied to each checkpoint's weights:

- ``scale_share_attn``: the share of the per-channel scale the attention branch gets after normalisation,
  ``mean|g_attn * beta_attn| / (that + mean|g_ssm * beta_ssm|)`` with ``g`` the branch norm's gain (runs with
  ``hymba.fusion="projected"``, all runs logged before the paper fusion; paper-fusion layers have no gain);
- ``beta_share_attn``: the same with ``beta`` alone, a proxy that ignores the gains (the only share logged by runs
  before the gain-aware share existed, as ``share_attn``).

Both compare magnitudes of scales, not the branches' contributions to the output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from assignment_experiments.run_loading import RunFolderError, read_run_checkpoint
from cs336_basics.models.hymba import branch_shares


def layer_shares(state: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    """:func:`branch_shares` of every layer with both ``beta_attn`` and ``beta_ssm`` (norm gains included where the
    layer has them); a one-branch Hymba (``hymba.branches``) has none."""
    shares, i = [], 0
    while f"layers.{i}.beta_attn" in state and f"layers.{i}.beta_ssm" in state:
        p = f"layers.{i}."
        gains = (state.get(p + "attn_norm.weight"), state.get(p + "ssm_norm.weight"))
        shares.append(branch_shares(state[p + "beta_attn"], state[p + "beta_ssm"], *gains))
        i += 1
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.studies.hymba_branch_shares", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="Hymba run directories (with checkpoints)")
    args = parser.parse_args(argv)
    rows = []
    for run_dir in args.runs:
        try:
            path, payload = read_run_checkpoint(run_dir, "latest")
        except RunFolderError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        state = payload["model"]
        shares = layer_shares(state)
        if not shares:
            print(
                f"error: {path} has no two-branch Hymba layers (no layers.0.beta_attn and beta_ssm); pass Hymba runs "
                "trained with both branches",
                file=sys.stderr,
            )
            return 2
        rows += [(run_dir.name, path.name, layer, s) for layer, s in enumerate(shares)]
    print(
        "| run | checkpoint | layer | scale_share_attn (gain x beta) | scale_share_ssm "
        "| beta_share_attn (beta only, proxy) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, checkpoint_name, layer, s in rows:
        print(
            f"| {name} | {checkpoint_name} | {layer} | {s['scale_share_attn']:.3f} | {s['scale_share_ssm']:.3f} "
            f"| {s['beta_share_attn']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
