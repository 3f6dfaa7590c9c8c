"""Training machinery: the loop, batch sources, evaluation, decoding, and resumable checkpoints.

- ``loop``: the trainer (gradient accumulation, clipping, mixed precision, evaluation, early stopping).
- ``batches``: token-stream and synthetic-task batch sources with explicit generators (resumable data order).
- ``evaluation``: loss, perplexity and answer accuracy on held-out batches.
- ``generation``: autoregressive sampling (temperature, top-p, KV / recurrent caches).
- ``checkpoint``: atomic, validated save/load of model, optimizer, iteration and the runner's extras.
- ``checkpoint_files``: a run's checkpoint directory (naming, latest, pruning, weight averaging).
"""
