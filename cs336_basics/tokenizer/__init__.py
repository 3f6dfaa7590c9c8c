"""Byte-level BPE: training (:mod:`.bpe_train`), encoding/decoding (:mod:`.tokenizer`), vocab/merges files
(:mod:`.io`), encoding files to token arrays (:mod:`.encode_file`, not re-exported here so that
``python -m cs336_basics.tokenizer.encode_file`` runs cleanly), the shared pre-tokenizer (:mod:`.pretokenize`), and
the three kinds a prepared corpus can use behind one interface (:mod:`.kinds`: bytes, this BPE, GPT-2).
"""

from cs336_basics.tokenizer.bpe_train import train_bpe
from cs336_basics.tokenizer.io import load_merges, load_vocab, save_tokenizer_files
from cs336_basics.tokenizer.tokenizer import Tokenizer

__all__ = ["Tokenizer", "load_merges", "load_vocab", "save_tokenizer_files", "train_bpe"]
