"""Seeded generators of English-like text, so everything runs offline and any corpus size is one call away.

- ``stories`` (+ ``story_vocab``, its grammar): short children's stories, > 20 MB/s; the default training corpus.
- ``zipf_text``: text with an open Zipfian vocabulary (200k pseudo-words, numbers, unicode), so BPE can reach large
  vocab sizes; the tokenizer benchmark's corpus (the stories' vocabulary closes near 2,250 tokens).
- ``document_blocks``: the block streaming and atomic file writing both generators share.
"""
