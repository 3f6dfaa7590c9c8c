"""Soak test of resume: kill a small training run at random moments, resume it each time, compare with a clean run.

The run is a 2-layer Transformer on a periodic token stream (``data.source=tokens``), CPU, one thread, checkpoints
every few steps. The peer is the same config trained once without interruption, in the same session. Then the
"victim" run is started and, ``--faults`` times, sent a signal (SIGKILL, SIGTERM or SIGINT, shuffled with a fixed
seed so all three occur) at a random moment after it has taken a few steps; after each fault it is restarted with
``--resume``. A fault is *survived* when the process ended the way it should (SIGKILL: killed; SIGTERM: exit 143;
SIGINT: exit 130, each with a checkpoint of the step it was at), and the next start resumed from a checkpoint (or
started over if none was written yet). At the end the victim runs to completion and its final weights must equal
the peer's bit for bit (``torch.equal`` on every tensor), as must its logged training losses.

    uv run python benchmarks/soak_resume.py [--faults 10] [--seed 0] [--write]

``--write`` records the result in ``benchmarks/results/soak_resume.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "soak_resume.md"
EXPECTED_EXIT = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 143, signal.SIGINT: 130}


def write_config(folder: Path, max_steps: int, checkpoint_every: int) -> Path:
    tokens = folder / "tokens.npy"
    period = np.random.default_rng(0).integers(0, 64, size=37)
    np.save(tokens, np.tile(period, 400).astype(np.uint16))
    config = {
        "description": "soak test of resume",
        "model": {"architecture": "transformer", "context_length": 32, "d_model": 32, "num_layers": 2, "num_heads": 2},
        "data": {"source": "tokens", "path": str(tokens), "final_eval_max_tokens": 512},
        "optim": {"lr": 3e-3, "warmup_steps": 10, "min_lr": 3e-4},
        "train": {"max_steps": max_steps, "batch_size": 8, "eval_every": 50, "eval_batches": 2,
                  "checkpoint_every": checkpoint_every, "keep_checkpoints": 2, "num_threads": 1},
        "logging": {"log_every": 5, "progress_bar": False},
    }  # fmt: skip
    path = folder / "soak.json"
    path.write_text(json.dumps(config))
    return path


def command(config: Path, runs: Path, name: str, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "assignment_experiments.run_experiment", "--config", str(config)]
    return args + ["--runs-dir", str(runs), "--name", name] + (["--resume"] if resume else [])


def logged_step(run_dir: Path) -> int:
    """The newest step in metrics.jsonl (0 if none); tolerant of a torn last line."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    step = 0
    for line in path.read_text().splitlines():
        try:
            step = max(step, int(json.loads(line).get("step", 0)))
        except (ValueError, AttributeError):
            continue
    return step


def newest_checkpoint(run_dir: Path) -> int | None:
    steps = [int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.pt")]
    return max(steps) if steps else None


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    last = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1]
    return torch.load(last, map_location="cpu", weights_only=True)["model"]


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]


def soak(faults: int, seed: int, max_steps: int, checkpoint_every: int) -> dict:
    rng = random.Random(seed)
    kinds = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT] * (faults // 3 + 1)
    kinds = kinds[:faults]
    rng.shuffle(kinds)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, max_steps, checkpoint_every)
        runs = folder / "runs"
        started = time.perf_counter()
        peer = subprocess.run(command(config, runs, "peer", False), cwd=ROOT, capture_output=True, text=True)
        peer_s = time.perf_counter() - started
        if peer.returncode != 0:
            raise SystemExit(f"the uninterrupted run failed:\n{peer.stderr[-2000:]}")

        victim = runs / "victim"
        log: list[dict] = []
        started = time.perf_counter()
        for index, kind in enumerate(kinds):
            resume = victim.is_dir()
            before = newest_checkpoint(victim) if resume else None
            out_path = folder / f"attempt_{index}.out"
            with out_path.open("w") as out_file:
                process = subprocess.Popen(
                    command(config, runs, "victim", resume),
                    cwd=ROOT,
                    stdout=out_file,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                # wait until this process has set up (its "run victim: ..." line, after the metrics are rewound to
                # its checkpoint) and taken 5 steps, then a random extra moment
                resumed_from = None
                while process.poll() is None:
                    header = next((x for x in out_path.read_text().splitlines() if x.startswith("run victim:")), None)
                    if header is not None:
                        resumed_from = int(header.rsplit("resumed at step ", 1)[1]) if "resumed at" in header else 0
                        if logged_step(victim) >= resumed_from + 5:
                            break
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.6))
                at_step = logged_step(victim)
                if process.poll() is not None:
                    _, err = process.communicate()
                    raise SystemExit(f"fault {index}: the run ended early (rc {process.returncode}):\n{err}")
                process.send_signal(kind)
                _, err = process.communicate(timeout=300)
            after = newest_checkpoint(victim)
            ok = process.returncode == EXPECTED_EXIT[kind] and "Traceback" not in err
            if kind != signal.SIGKILL:  # a graceful stop leaves a checkpoint of its step and a line saying so
                ok = ok and after is not None and f"step_{after:07d}.pt" in err.strip().splitlines()[-1]
            ok = ok and resumed_from == (before or 0)
            log.append(
                {
                    "fault": index + 1,
                    "signal": signal.Signals(kind).name,
                    "resumed_from": resumed_from,
                    "logged_step_at_signal": at_step,
                    "exit_code": process.returncode,
                    "newest_checkpoint_after": after,
                    "survived": ok,
                }
            )
            print(json.dumps(log[-1]), flush=True)
        final = subprocess.run(command(config, runs, "victim", True), cwd=ROOT, capture_output=True, text=True)
        victim_s = time.perf_counter() - started
        if final.returncode != 0:
            raise SystemExit(f"the final resume failed:\n{final.stderr[-2000:]}")
        a, b = final_state(runs / "peer"), final_state(victim)
        weights_equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        losses_equal = train_losses(runs / "peer") == train_losses(victim)
        return {
            "faults": log,
            "tried": len(log),
            "survived": sum(f["survived"] for f in log),
            "weights_bit_equal": weights_equal,
            "train_losses_equal": losses_equal,
            "peer_wall_s": peer_s,
            "victim_wall_s": victim_s,
            "max_steps": max_steps,
            "checkpoint_every": checkpoint_every,
        }


def markdown(result: dict, args: argparse.Namespace) -> str:
    rows = "\n".join(
        f"| {f['fault']} | {f['signal']} | {f['resumed_from']} | {f['logged_step_at_signal']} | {f['exit_code']} "
        f"| {f['newest_checkpoint_after']} | {'yes' if f['survived'] else 'NO'} |"
        for f in result["faults"]
    )
    return (
        f"# Resume soak test\n\n"
        f"`uv run python benchmarks/soak_resume.py --faults {args.faults} --seed {args.seed} --write` "
        f"({datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__})\n\n"
        f"{result['max_steps']} steps, checkpoint every {result['checkpoint_every']}. Faults tried "
        f"{result['tried']}, survived {result['survived']}; final weights bit-equal to the uninterrupted run: "
        f"**{result['weights_bit_equal']}**; logged training losses equal: **{result['train_losses_equal']}**. "
        f"Wall time: interrupted run {result['victim_wall_s']:.0f} s ({result['tried']} restarts included) vs "
        f"uninterrupted {result['peer_wall_s']:.0f} s "
        f"(ratio {result['victim_wall_s'] / result['peer_wall_s']:.1f}x).\n\n"
        "| fault | signal | started at step | logged step at signal | exit code | newest checkpoint after | "
        "survived |\n| --- | --- | --- | --- | --- | --- | --- |\n" + rows + "\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/soak_resume.py", description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=10, help="number of signals to deliver (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the signal order and timing (default 0)")
    parser.add_argument("--max-steps", type=int, default=1500, help="length of the run (default 1500)")
    parser.add_argument("--checkpoint-every", type=int, default=7, help="checkpoint interval (default 7)")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/soak_resume.md")
    args = parser.parse_args()
    result = soak(args.faults, args.seed, args.max_steps, args.checkpoint_every)
    text = markdown(result, args)
    print(text)
    if args.write:
        RESULTS.write_text(text)
    ok = result["survived"] == result["tried"] and result["weights_bit_equal"] and result["train_losses_equal"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
