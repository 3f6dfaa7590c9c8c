"""Benchmark the data pipeline: story generation speed against a plain-Python generator of the same grammar, and
the time ``prepare_corpus`` takes for the runner's quickstart (cold, then cached).

    uv run python benchmarks/bench_stories.py [--mb 20]

``--write`` writes the figures to ``benchmarks/results/data.md`` (otherwise they are only printed).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import random
import re
import tempfile
import time
from pathlib import Path

from cs336_basics.data.pipeline import prepare_corpus
from cs336_basics.data.text_generators import story_vocab as sv
from cs336_basics.data.text_generators.stories import EOT, MAX_BODY_SENTENCES, MIN_BODY_SENTENCES, generate_stories


def python_loop_stories(num_bytes: int, seed: int = 0) -> str:
    """The peer: the same grammar with one ``random`` call per slot and ``str`` formatting per sentence."""
    rng = random.Random(seed)
    words = {k: (v, [(r + 1) ** -sv.ZIPF_EXPONENT for r in range(len(v))]) for k, v in sv.WORDS.items()}
    pick = lambda slot: rng.choices(*words[slot])[0]
    fill = lambda template, bound: re.sub(r"\{([A-Z_]+)\}", lambda m: bound.get(m[1]) or pick(m[1]), template)
    choose = lambda group: rng.choices([t for t, _ in group], [w for _, w in group])[0]
    out, size = [], 0
    while size < num_bytes:
        bound = {slot: pick(slot) for slot in sv.BOUND_SLOTS}
        while bound["FRIEND"] == bound["HERO"]:
            bound["FRIEND"] = pick("FRIEND")
        for derived, base in sv.DERIVED_SLOTS.items():
            bound[derived] = sv.WORDS[derived][sv.WORDS[base].index(bound[base])]
        sentences = [fill(choose(group), bound) for group in sv.INTRO_GROUPS]
        sentences += [fill(choose(sv.BODY), bound) for _ in range(rng.randint(MIN_BODY_SENTENCES, MAX_BODY_SENTENCES))]
        sentences.append(fill(choose(sv.ENDINGS), bound))
        story = " ".join(sentences) + EOT
        out.append(story)
        size += len(story.encode("utf-8"))
    return "".join(out)


def throughput(fn, num_bytes: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` MB/s (CPU time, so other jobs on the machine distort it less)."""
    best = 0.0
    for _ in range(repeats):
        start = time.process_time()
        size = len(fn(num_bytes).encode("utf-8"))
        best = max(best, size / (time.process_time() - start) / 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_stories.py", description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0, help="MB generated per timing of the vectorised generator")
    parser.add_argument("--write", action="store_true", help="write the table to benchmarks/results/data.md")
    args = parser.parse_args()
    generate_stories(10_000)  # compile the grammar outside the timing
    ours = throughput(generate_stories, int(args.mb * 1e6))
    peer = throughput(python_loop_stories, 2_000_000)
    rows = [("story generation, numpy-vectorised (MB/s)", f"{ours:.1f}"),
            ("story generation, plain-Python peer (MB/s)", f"{peer:.2f}"),
            ("speed-up (ours / peer)", f"{ours / peer:.1f}x")]  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        for tokenizer, vocab in (("bytes", None), ("bpe", 1024)):
            timings = []
            for _ in range(2):
                start = time.perf_counter()
                corpus = prepare_corpus("stories", tokenizer, cache_dir=cache, num_bytes=4_000_000, vocab_size=vocab)
                timings.append(time.perf_counter() - start)
            rows.append((f"prepare_corpus(stories 4 MB, {tokenizer}) cold / cached (s)",
                         f"{timings[0]:.2f} / {timings[1]:.3f} ({len(corpus.train):,} train tokens)"))  # fmt: skip
    for name, value in rows:
        print(f"{name:<62} {value}")
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    if not args.write:
        print("(not written: pass --write to update benchmarks/results/data.md)")
        return
    Path(__file__).parent.joinpath("results").mkdir(exist_ok=True)
    Path(__file__).parent.joinpath("results", "data.md").write_text(
        f"# Data pipeline benchmark\n\nCommand: `uv run python benchmarks/bench_stories.py --mb {args.mb:g}`  \n"
        f"Date: {date}  \nMachine: 2-core CPU ({platform.machine()}), shared with other jobs; generation speeds are "
        f"CPU-time based, prepare times are wall-clock.\n\n| measure | value |\n| --- | --- |\n{table}\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
