"""Data for training and evaluation, offline by default, in four groups:

- Text: ``text_generators`` (generated stories and open-vocabulary Zipfian text, any size, no download) and
  ``corpora`` (+ ``download``): TinyStories, OpenWebText sample, WikiText-103, PG19 and JSONL/Cosmopedia read from
  local files (or HF ``datasets`` at a pinned revision); ``python -m cs336_basics.data.download NAME`` fetches them.
- Tasks: ``synthetic``, token tasks for recall and memory (MQAR, copying, selective copying) with an answer accuracy.
- Preparation: ``pipeline`` (+ ``cache``): ``prepare_corpus(...)`` splits by document, tokenizes (bytes, this
  project's BPE, or GPT-2; see :mod:`cs336_basics.tokenizer.kinds`) and caches memmapped token arrays keyed by input
  and tokenizer checksums.
- Sampling: ``windows`` (training windows, random or strided and resumable, and the non-overlapping evaluation
  windows) and ``batching`` (``get_batch``, the CS336 random-window sampler).

Quick start::

    from cs336_basics.data.pipeline import prepare_corpus
    from cs336_basics.data.windows import TokenWindows

    corpus = prepare_corpus("stories", "bpe", num_bytes=4_000_000, vocab_size=1024)  # seconds; cached afterwards
    windows = TokenWindows(corpus.train, context_length=256, batch_size=32)
    x, y = windows.next_batch()  # (32, 256) int64 each
"""
