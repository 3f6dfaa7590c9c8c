"""One-off study scripts: they read finished run directories (or train outside the runner) to produce a study's
tables and figures, and are not part of the runner framework around them.

- ``eval_length_generalization``: re-score Transformer runs at a multiple of their training length.
- ``moe_expert_load``: expert load and total/active parameters of MoE runs.
- ``hymba_branch_shares``: per-layer attention/SSM branch shares of Hymba runs, gain-aware.
- ``plot_accuracy``: synthetic-task accuracy against model width.
- ``train_vit_cifar``: the ViT on CIFAR-10 with standard or mHC residuals.
- ``rescoring``: the command-line options shared by the studies that re-score runs on validation windows.

Each runs as ``python -m assignment_experiments.studies.NAME``; the commands and outputs are in EXPERIMENT_LOG.md and
results/studies/.
"""
