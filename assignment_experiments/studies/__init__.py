"""One-off study scripts: they read finished run directories (or train outside the runner) to produce a study's
tables and figures, and are not part of the runner framework around them.

- ``eval_length_generalization``: re-score Transformer runs at a multiple of their training length.
- ``moe_expert_load``: expert load and total/active parameters of MoE runs.
- ``hymba_branch_shares``: per-layer attention/SSM branch shares of Hymba runs, gain-aware.
- ``plot_accuracy``: synthetic-task accuracy against model width.
- ``seed_gaps``, ``plot_scaling``, ``plot_lr``: seed-pooled gaps under the log's noise rule, loss against scale and
  against learning rate.
- ``seed_pooling``: the check those scripts and ``plot_accuracy`` share, that runs pooled as seeds differ only in
  their seed.
- ``train_vit_cifar``: the ViT on CIFAR-10 with standard or mHC residuals.
- ``rescoring``: the command-line options shared by the studies that re-score runs on validation windows.

Each runs as ``python -m assignment_experiments.studies.NAME``; the commands and outputs are in EXPERIMENT_LOG.md and
results/studies/.
"""
