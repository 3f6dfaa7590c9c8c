"""Sample text from a trained run, streaming tokens as they are produced.

    uv run python -m assignment_experiments.sample runs/quickstart
    uv run python -m assignment_experiments.sample runs/quickstart --prompt "The little dog" --max-new-tokens 60 \
        --temperature 0.8 --top-p 0.95 --seed 1 --checkpoint best

Decoding uses the model's own cache (KV cache, recurrent SSM state, or both: ``make_cache``), so every new token costs
one position's forward pass. Without ``--prompt`` the run's own ``train.sample_prompts`` are used; temperature, top-p
and the number of new tokens default to the run's sampling settings. Each continuation ends with a line giving the
token count and tokens/s. Exit code 2 for a folder that is not a usable run (one line says why).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from assignment_experiments.run_loading import LoadedRun, RunFolderError, load_run
from assignment_experiments.threads import set_threads
from cs336_basics.training.generation import generate


class _Stream:
    """Prints the text of a growing token list, holding back a trailing partial UTF-8 character."""

    def __init__(self, tokenizer, out) -> None:
        self.tokenizer, self.out, self.ids, self.shown = tokenizer, out, [], 0

    def __call__(self, row: int, token: int) -> None:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # a multi-byte character split across tokens: wait for the rest
            return
        self.out.write(text[self.shown :])
        self.out.flush()
        self.shown = len(text)

    def finish(self) -> None:
        text = self.tokenizer.decode(self.ids)
        self.out.write(text[self.shown :])
        self.out.flush()


def sample_run(
    run: LoadedRun,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    out=None,
) -> list[str]:
    """Stream one continuation per prompt to ``out`` (default stdout); returns the continuations (no prompts)."""
    out = sys.stdout if out is None else out
    if run.tokenizer is None:
        raise RunFolderError(f"{run.run_dir} stores no tokenizer (token-file or synthetic run); there is no text")
    texts = []
    for index, prompt in enumerate(prompts):
        prompt_ids = run.tokenizer.encode(prompt)
        if not prompt_ids:
            raise RunFolderError("the prompt is empty; pass --prompt with some text")
        out.write(f"### prompt {index + 1}: {prompt!r}\n{prompt}")
        out.flush()
        stream = _Stream(run.tokenizer, out)
        started = time.perf_counter()
        new_ids = generate(
            run.model, prompt_ids, max_new_tokens, temperature=temperature, top_p=top_p, eos_id=run.eos_id,
            seed=seed + index, on_token=stream,
        )  # fmt: skip
        elapsed = max(time.perf_counter() - started, 1e-9)
        stream.finish()
        out.write(f"\n[{len(new_ids)} tokens in {elapsed:.2f} s, {len(new_ids) / elapsed:,.1f} tokens/s]\n\n")
        out.flush()
        texts.append(run.tokenizer.decode(new_ids))
    return texts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.sample",
        description="Sample text from a trained run folder (streams tokens; reports tokens/s).",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder, e.g. runs/quickstart")
    parser.add_argument(
        "--prompt", action="append", default=None, metavar="TEXT",
        help="prompt to continue (repeatable; default: the run's train.sample_prompts)",
    )  # fmt: skip
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, metavar="N",
        help="tokens to generate per prompt (default: the run's train.sample_max_new_tokens)",
    )  # fmt: skip
    parser.add_argument(
        "--temperature", type=float, default=None, metavar="T",
        help="sampling temperature, 0 = greedy (default: the run's train.sample_temperature)",
    )  # fmt: skip
    parser.add_argument(
        "--top-p", type=float, default=None, metavar="P",
        help="nucleus sampling mass in (0, 1] (default: the run's train.sample_top_p)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="sampling seed; prompt i uses S+i (default 0)")
    parser.add_argument(
        "--checkpoint", default="latest", metavar="latest|best|STEP",
        help="which checkpoint: the newest, the one with the lowest validation loss, or a step (default: latest)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="torch device to decode on, e.g. cpu or cuda (default: cpu)")
    parser.add_argument(
        "--num-threads", type=int, default=0, metavar="N",
        help="CPU threads (default 0: auto, the free cores by the load average, like train.num_threads)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.num_threads, announce=lambda message: print(message, file=sys.stderr), setting="--num-threads")
    try:
        run = load_run(args.run_dir, args.checkpoint, torch.device(args.device))
        t = run.config.train
        max_new = t.sample_max_new_tokens if args.max_new_tokens is None else args.max_new_tokens
        temperature = t.sample_temperature if args.temperature is None else args.temperature
        top_p = t.sample_top_p if args.top_p is None else args.top_p
        if max_new < 0 or temperature < 0 or not 0 < top_p <= 1:
            raise RunFolderError("--max-new-tokens must be >= 0, --temperature >= 0 and --top-p in (0, 1]")
        prompts = args.prompt or list(t.sample_prompts) or ["\n"]
        print(f"run {args.run_dir} | checkpoint {run.checkpoint.name} (step {run.step}) | "
              f"T {temperature} top-p {top_p} seed {args.seed}\n", flush=True)  # fmt: skip
        sample_run(run, prompts, max_new, temperature, top_p, args.seed)
    except RunFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
