"""Command line BPE training: ``python -m cs336_basics.tokenizer.train --input FILE --vocab-size N --out DIR``.

Writes ``DIR/vocab.json`` and ``DIR/merges.txt`` (format in :mod:`cs336_basics.tokenizer.io`) and reports wall
time, peak memory (this process and the largest worker) and the longest token.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings

from cs336_basics.fs_checks import check_writable_dir, os_error_line
from cs336_basics.tokenizer.bpe_train import DEFAULT_CHUNK_BYTES, VocabShortfallWarning, shortfall_message, train_bpe
from cs336_basics.tokenizer.io import save_tokenizer_files


def peak_memory_mib() -> tuple[float, float]:
    """Peak resident memory in MiB of this process and of its largest finished child process (Linux ru_maxrss)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, child


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cs336_basics.tokenizer.train",
        description="Train a byte-level BPE tokenizer on a UTF-8 text file.",
    )
    parser.add_argument("--input", required=True, help="training corpus (UTF-8 text)")
    parser.add_argument("--vocab-size", type=int, required=True, help="final vocab size incl. 256 bytes + specials")
    parser.add_argument("--special-token", action="append", default=[], help="special token (repeatable)")
    parser.add_argument("--out", required=True, help="output directory for vocab.json and merges.txt")
    parser.add_argument("--num-workers", type=int, default=None, help="pre-tokenization processes (default: all)")
    parser.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES, help="bytes per worker task")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        check_writable_dir(args.out, "--out")  # before the training, not after it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VocabShortfallWarning)  # reported below, as one plain line
            vocab, merges = train_bpe(
                args.input,
                args.vocab_size,
                args.special_token,
                num_workers=args.num_workers,
                progress=not args.no_progress,
                chunk_bytes=args.chunk_bytes,
            )
        elapsed = time.perf_counter() - start
        vocab_path, merges_path = save_tokenizer_files(vocab, merges, args.out)
    except (FileNotFoundError, ValueError) as e:  # includes UnicodeDecodeError (a ValueError) and --out problems
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    except OSError as e:
        code, line = os_error_line(e)
        print(line, file=sys.stderr)
        return code
    if len(vocab) < args.vocab_size:
        print(f"note: {shortfall_message(len(vocab), args.vocab_size)}")
    own, child = peak_memory_mib()
    longest = max((a + b for a, b in merges), key=len, default=b"")
    print(f"wrote {vocab_path} ({len(vocab)} tokens) and {merges_path} ({len(merges)} merges)")
    print(f"wall time {elapsed:.2f} s; peak memory {own:.0f} MiB (main), {child:.0f} MiB (largest worker)")
    print(f"longest learned token: {len(longest)} bytes {longest.decode('utf-8', errors='replace')!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
