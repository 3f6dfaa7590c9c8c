"""Validation loss and perplexity (accuracy for synthetic tasks) of a trained run.

    uv run python -m assignment_experiments.evaluate runs/quickstart
    uv run python -m assignment_experiments.evaluate runs/quickstart --checkpoint best
    uv run python -m assignment_experiments.evaluate runs/quickstart --path my_text.txt --source text

On the run's own data this is the run's final evaluation again, by the same code path: the data is prepared from
the run's config (the cache under ``data.cache_dir`` is reused, or rebuilt the same way), the validation split is cut
into non-overlapping windows of ``context_length`` tokens in batches of ``train.batch_size``, capped at
``data.final_eval_max_tokens``, and the token-weighted mean cross-entropy is taken. With the final checkpoint it
prints ``summary.json``'s ``final_val_loss`` (equal to 1e-6 on CPU). The data must be tokenized by the run's own
tokenizer (checked by checksum).

With ``--path FILE --source text|jsonl|...`` it scores another corpus instead: the file's documents are joined with
``<|endoftext|>``, encoded with the run's stored tokenizer and scored in the same windows (``--max-tokens`` caps it).
Exit code 2 for unusable input (one line says why).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assignment_experiments.config import ConfigError
from assignment_experiments.run_loading import EOT, LoadedRun, RunFolderError, load_run
from assignment_experiments.threads import set_threads
from cs336_basics.training.evaluation import full_validation

TEXT_SOURCES = ("text", "jsonl", "tinystories", "owt", "wikitext103", "pg19", "cosmopedia")


def _autocast(run: LoadedRun, device: torch.device) -> Any:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(run.config.train.precision)
    if dtype is None or (dtype is torch.float16 and device.type != "cuda"):
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def evaluate_run_data(run: LoadedRun, device: torch.device) -> dict[str, float]:
    """The run's final evaluation on its own validation split (what ``summary.json`` records)."""
    from assignment_experiments.data_sources import prepare_data
    from cs336_basics.tokenizer.kinds import tokenizer_sha256

    c = run.config
    try:
        data = prepare_data(c.data, c.model.context_length, device, seed=c.train.seed)
    except FileNotFoundError as error:
        raise RunFolderError(f"the run's data is not available here: {str(error).splitlines()[0]}") from None
    except ConfigError as error:
        raise RunFolderError(str(error)) from None
    if run.tokenizer is not None and data.tokenizer is not None:
        if tokenizer_sha256(data.tokenizer) != tokenizer_sha256(run.tokenizer):
            raise RunFolderError(
                "the data prepared here is tokenized differently from the run's stored tokenizer; evaluate on the "
                "machine that holds the run's data cache, or pass --path FILE to score text with the run's tokenizer"
            )
    return full_validation(
        run.model, data.batches, c.train.batch_size, c.data.final_eval_max_tokens, _autocast(run, device)
    )


def evaluate_file(
    run: LoadedRun, path: Path, source: str, device: torch.device, max_tokens: int | None, text_field: str
) -> dict[str, float]:
    """Score another corpus, encoded with the run's tokenizer, in the run's evaluation windows."""
    from cs336_basics.data import corpora
    from cs336_basics.training.batches import TokenBatches

    if run.tokenizer is None:
        raise RunFolderError(f"{run.run_dir} stores no tokenizer (token-file or synthetic run); --path needs text")
    if not path.exists():
        raise RunFolderError(f"--path {path} does not exist; pass a text or jsonl file")
    try:
        documents = corpora.iter_documents(source, "valid", path=path, text_field=text_field)
        ids: list[int] = []
        for document in documents:
            ids += run.tokenizer.encode(document + EOT)
            if max_tokens is not None and len(ids) > max_tokens:
                break
    except (FileNotFoundError, ValueError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFolderError(f"cannot read {path} as {source!r}: {str(error).splitlines()[0]}") from None
    tokens = np.asarray(ids, dtype=np.int64)
    length = run.config.model.context_length
    if len(tokens) <= length:
        raise RunFolderError(f"{path} holds {len(tokens)} tokens, fewer than one window of {length + 1}; use more text")
    batches = TokenBatches(tokens, tokens, length, device)
    return full_validation(run.model, batches, run.config.train.batch_size, max_tokens, _autocast(run, device))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.evaluate",
        description="Validation loss, perplexity (and accuracy for synthetic tasks) of a trained run folder.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder, e.g. runs/quickstart")
    parser.add_argument(
        "--checkpoint", default="latest", metavar="latest|best|STEP",
        help="which checkpoint: the newest, the one with the lowest validation loss, or a step (default: latest)",
    )  # fmt: skip
    parser.add_argument(
        "--path", type=Path, default=None, metavar="FILE",
        help="score this file instead of the run's validation split (encoded with the run's tokenizer)",
    )  # fmt: skip
    parser.add_argument(
        "--source", choices=TEXT_SOURCES, default="text",
        help="how to read --path into documents: plain text (split at <|endoftext|> or blank lines), jsonl, or a "
        "named corpus format (default: text)",
    )  # fmt: skip
    parser.add_argument("--text-field", default="text", help="jsonl field holding the text (default: text)")
    parser.add_argument(
        "--max-tokens", type=int, default=None, metavar="N", help="with --path: score at most N tokens (default: all)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument(
        "--num-threads", type=int, default=0, metavar="N",
        help="CPU threads (default 0: auto, the free cores by the load average, like train.num_threads)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.num_threads, announce=lambda message: print(message, file=sys.stderr), setting="--num-threads")
    device = torch.device(args.device)
    try:
        run = load_run(args.run_dir, args.checkpoint, device)
        if args.path is not None:
            result = evaluate_file(run, args.path, args.source, device, args.max_tokens, args.text_field)
            what = f"{args.path} ({args.source})"
        else:
            result = evaluate_run_data(run, device)
            what = "validation split"
    except RunFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {"checkpoint": run.checkpoint.name, "step": run.step, "data": what, **result}
    if args.json:
        print(json.dumps(result))
        return 0
    line = (
        f"{args.run_dir} | {run.checkpoint.name} (step {run.step}) | {what}: {int(result['tokens']):,} tokens | "
        f"loss {result['loss']:.6f} | perplexity {result['perplexity']:.4f}"
    )
    if "accuracy" in result:
        line += f" | accuracy {result['accuracy']:.4f}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
