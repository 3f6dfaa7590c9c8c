"""Where a run's records go: ``metrics.jsonl`` (always), the console (tqdm bar + one line per interval), W&B.

- ``metrics.jsonl`` holds one JSON object per record (``kind`` = ``train`` | ``eval`` | ``final``). On resume it is
  cut back to the checkpoint's step, so the file describes exactly one trajectory.
- W&B: ``online`` logs to the server, ``offline`` writes under ``<run>/wandb`` with no network, ``disabled`` never
  imports wandb at all (no account needed, no import cost). The wandb environment variables win over the config, as
  the wandb docs describe them: ``WANDB_MODE`` (``online``/``offline``/``disabled``), ``WANDB_DIR`` (where files go;
  default the run folder), ``WANDB_PROJECT`` and ``WANDB_ENTITY``. The W&B run id is ``<name>-<8 random hex>``,
  created at the first start and kept in ``<run>/wandb_run_id``, so two runs with the same name never merge and
  ``--resume`` continues the same W&B run (``WANDB_RUN_ID`` overrides it).
- Train records carry ``model_flops_per_s`` (model FLOPs per token x tokens/s) and, on a GPU whose peak is known,
  ``mfu`` (that over the peak dense bf16/fp16 FLOP/s of the device).
- ``environment.json``: hardware, OS, Python, torch / CUDA / Triton versions, the git commit and whether the working
  tree had uncommitted changes.
- ``loss_curves.png``: train and validation loss against steps and against wall-clock time.
- :class:`RssSampler`: the peak resident memory of the training phase alone (a background thread reads
  ``/proc/self/statm``), since the process-wide ``ru_maxrss`` also counts data preparation such as BPE training.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import torch


def current_rss_mb() -> float | None:
    """This process's resident memory now (Linux ``/proc/self/statm``), or None where that file does not exist."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """``with RssSampler() as rss: ...`` records the start RSS and the peak RSS sampled every ``interval_s``."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.start_mb: float | None = None
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        now = current_rss_mb()
        if now is not None:
            self.peak_mb = now if self.peak_mb is None else max(self.peak_mb, now)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> RssSampler:
        self.start_mb = current_rss_mb()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (a torn last line from a killed process is skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Tracker:
    """Fan-out of training records to metrics.jsonl, the console and W&B (rank 0 only; others get a no-op)."""

    def __init__(
        self,
        run_dir: Path,
        name: str,
        config: dict[str, Any],
        max_steps: int,
        wandb_mode: str = "disabled",
        wandb_project: str = "cs336-basics",
        progress_bar: bool = True,
        start_step: int = 0,
        enabled: bool = True,
        flops_per_token: tuple[float, str] | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.enabled, self.run_dir, self.max_steps = enabled, run_dir, max_steps
        self.flops_per_token = flops_per_token[0] if flops_per_token else None
        self.peak_flops = peak_flops_per_s(device) if device is not None else None
        self.metrics_path = run_dir / "metrics.jsonl"
        self.bar = None
        self.wandb_run = None
        if not enabled:
            return
        if progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=max_steps, initial=start_step, desc=name, unit="step", dynamic_ncols=True)
        if wandb_settings(wandb_mode)["mode"] != "disabled":
            self.wandb_run = _start_wandb(run_dir, name, config, wandb_mode, wandb_project)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {k: _clean(v) for k, v in record.items()}
        if record.get("kind") == "train" and self.flops_per_token and record.get("tokens_per_s") is not None:
            record["model_flops_per_s"] = record["tokens_per_s"] * self.flops_per_token
            if self.peak_flops:
                record["mfu"] = record["model_flops_per_s"] / self.peak_flops
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            prefix = record["kind"] + "/"
            self.wandb_run.log(
                {prefix + k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"},
                step=record.get("step", 0),
            )
        self._console(record)

    def _console(self, record: dict[str, Any]) -> None:
        kind, step = record["kind"], record.get("step", 0)
        if kind == "train":
            eta = (self.max_steps - step) / max(record["steps_per_s"], 1e-9)
            line = (
                f"step {step:>6}/{self.max_steps} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
                f"grad {record['grad_norm']:.3f} | {record['tokens_per_s']:,.0f} tok/s"
                + (f" | {record['model_flops_per_s'] / 1e9:,.2f} GFLOP/s" if "model_flops_per_s" in record else "")
                + (f" | MFU {record['mfu']:.1%}" if "mfu" in record else "")
                + f" | eta {eta / 60:.1f} min"
            )
            if self.bar is not None:
                self.bar.update(step - self.bar.n)
                self.bar.set_postfix(
                    loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.1e}", tok_s=f"{record['tokens_per_s']:,.0f}"
                )
        elif kind == "eval":
            extra = f" | acc {record['val_accuracy']:.3f}" if record.get("val_accuracy") is not None else ""
            line = (
                f"eval {step:>6} | val_loss {record['val_loss']:.4f} | ppl {record['val_perplexity']:.2f} | "
                f"best {record['best_val_loss']:.4f}{extra}"
            )
        else:
            line = " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
        self.write(line)

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self, summary: dict[str, Any] | None = None) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb_run is not None:
            if summary:
                self.wandb_run.summary.update({k: v for k, v in summary.items() if isinstance(v, int | float | str)})
            self.wandb_run.finish()


WANDB_MODES = ("online", "offline", "disabled")


def wandb_settings(mode: str, project: str = "cs336-basics", run_dir: Path | None = None) -> dict[str, Any]:
    """The W&B mode, project, entity and directory after the environment variables (which win over the config)."""
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    env_mode = "offline" if env_mode == "dryrun" else env_mode
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("true", "1", "yes"):
        env_mode = "disabled"
    return {
        "mode": env_mode if env_mode in WANDB_MODES else mode,
        "project": os.environ.get("WANDB_PROJECT") or project,
        "entity": os.environ.get("WANDB_ENTITY") or None,
        "dir": os.environ.get("WANDB_DIR") or (str(run_dir) if run_dir is not None else None),
    }


def wandb_run_id(run_dir: Path, name: str) -> str:
    """This run's W&B id: ``WANDB_RUN_ID``, else the one stored in the run folder, else a new unique one (stored)."""
    if os.environ.get("WANDB_RUN_ID"):
        return os.environ["WANDB_RUN_ID"]
    path = run_dir / "wandb_run_id"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:48]
    run_id = f"{safe}-{uuid.uuid4().hex[:8]}"
    path.write_text(run_id + "\n")
    return run_id


def _start_wandb(run_dir: Path, name: str, config: dict[str, Any], mode: str, project: str) -> Any:
    os.environ.setdefault("WANDB_SILENT", "true")
    settings = wandb_settings(mode, project, run_dir)
    Path(settings["dir"]).mkdir(parents=True, exist_ok=True)
    import wandb

    return wandb.init(
        project=settings["project"], entity=settings["entity"], name=name, config=config, dir=settings["dir"],
        mode=settings["mode"], resume="allow", id=wandb_run_id(run_dir, name),
    )  # fmt: skip


# Peak dense bf16/fp16 tensor FLOP/s by GPU name (vendor data sheets); MFU is only reported for these.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def peak_flops_per_s(device: torch.device) -> float | None:
    """The device's peak dense bf16 FLOP/s when it is a known GPU, else None (CPUs: no MFU, only FLOP/s)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def git_state() -> dict[str, Any]:
    """The project's git commit and whether its working tree differs from it (None outside a git checkout)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
            timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(status.strip())}


def environment_info() -> dict[str, Any]:
    """Hardware and software versions a result depends on."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        **git_state(),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def plot_loss_curves(records: list[dict[str, Any]], out: Path, title: str) -> None:
    """Train/val loss against steps and against wall-clock seconds, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
    val = [r for r in records if r.get("kind") == "eval" and r.get("val_loss") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, x_key, label in ((axes[0], "step", "step"), (axes[1], "elapsed_s", "wall-clock (s)")):
        ax.plot([r[x_key] for r in train], [r["loss"] for r in train], label="train", alpha=0.8)
        ax.plot([r[x_key] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
        ax.set_xlabel(label)
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
