"""Open a finished (or running) run folder: its config, its tokenizer, and a model restored from a checkpoint.

This is the one place that turns ``runs/<name>/`` back into objects; ``sample``, ``evaluate`` and the study scripts
all go through it. A run folder is self-contained, so it still works after being copied to another directory or
machine:

- ``config.json``: the resolved config the run trained with (``model.vocab_size`` filled in from the data);
- ``checkpoints/step_*.pt``: loaded with ``torch.load(..., weights_only=True)`` only (no code runs from the file);
- ``tokenizer/``: ``tokenizer.json`` (kind, special tokens, vocabulary size, SHA-256 of the tokenizer and of each
  file) and, for a BPE tokenizer, ``vocab.json`` + ``merges.txt``. The checksums are checked on load and are also
  recorded in ``summary.json``.

``--checkpoint`` choices: ``latest`` (the newest complete checkpoint), ``best`` (among the kept checkpoints, the one
whose most recent periodic validation loss is lowest) or a step number.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from assignment_experiments.config import ConfigError, ExperimentConfig, config_from_dict
from cs336_basics.training.checkpoint import read_checkpoint, restore_checkpoint
from cs336_basics.training.checkpoint_files import list_checkpoints

TOKENIZER_DIR = "tokenizer"
TOKENIZER_INFO = "tokenizer.json"
EOT = "<|endoftext|>"


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked; the message names the file and what to do."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ----- the run's tokenizer ------------------------------------------------------------------------------------------
def save_run_tokenizer(tokenizer: Any, run_dir: Path) -> dict[str, Any] | None:
    """Write ``tokenizer`` into ``run_dir/tokenizer/`` and return what ``summary.json`` records about it.

    Only the pipeline's three tokenizers (BPE, bytes, GPT-2) can be stored; for any other object nothing is written
    and None is returned (the run then cannot be sampled from a copy).
    """
    from cs336_basics.tokenizer.io import save_tokenizer_files
    from cs336_basics.tokenizer.kinds import ByteTokenizer, GPT2Tokenizer, tokenizer_sha256
    from cs336_basics.tokenizer.tokenizer import Tokenizer

    kinds = {Tokenizer: "bpe", ByteTokenizer: "bytes", GPT2Tokenizer: "gpt2"}
    kind = next((name for cls, name in kinds.items() if isinstance(tokenizer, cls)), None)
    if kind is None:
        return None
    out = Path(run_dir) / TOKENIZER_DIR
    out.mkdir(parents=True, exist_ok=True)
    if kind == "bpe":
        save_tokenizer_files(tokenizer.vocab, tokenizer.merges, out)
    files = {name: _sha256(out / name) for name in ("vocab.json", "merges.txt") if kind == "bpe"}
    info = {
        "kind": kind,
        "special_tokens": list(tokenizer.special_tokens),
        "vocab_size": int(tokenizer.vocab_size),
        "sha256": tokenizer_sha256(tokenizer),
        "files": files,
    }
    _write_text_atomic(out / TOKENIZER_INFO, json.dumps(info, indent=2) + "\n")
    return info


def load_run_tokenizer(run_dir: Path) -> Any | None:
    """The tokenizer stored in ``run_dir/tokenizer/`` (None for runs without text: token files, synthetic tasks)."""
    from cs336_basics.tokenizer.kinds import ByteTokenizer, GPT2Tokenizer, tokenizer_sha256
    from cs336_basics.tokenizer.tokenizer import Tokenizer

    folder = Path(run_dir) / TOKENIZER_DIR
    info_path = folder / TOKENIZER_INFO
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text(encoding="utf-8"))
    for name, expected in info.get("files", {}).items():
        if not (folder / name).is_file() or _sha256(folder / name) != expected:
            raise RunFolderError(
                f"{folder / name} is missing or does not match the checksum in {info_path}; copy the run folder again"
            )
    kind = info["kind"]
    if kind == "bpe":
        tokenizer = Tokenizer.from_files(folder / "vocab.json", folder / "merges.txt", info["special_tokens"])
    elif kind == "bytes":
        tokenizer = ByteTokenizer(info["special_tokens"])
    elif kind == "gpt2":
        tokenizer = GPT2Tokenizer()
    else:
        raise RunFolderError(f"{info_path} names an unknown tokenizer kind {kind!r}")
    if tokenizer_sha256(tokenizer) != info["sha256"]:
        raise RunFolderError(f"the tokenizer in {folder} does not match its recorded checksum; copy the run again")
    return tokenizer


def eos_id(tokenizer: Any) -> int | None:
    """The id of ``<|endoftext|>`` when the tokenizer has it."""
    if tokenizer is None or EOT not in getattr(tokenizer, "special_tokens", []):
        return None
    return tokenizer.encode(EOT)[0]


# ----- config and checkpoints ---------------------------------------------------------------------------------------
def read_run_config(run_dir: Path, overrides: dict[str, dict[str, Any]] | None = None) -> ExperimentConfig:
    """The run's ``config.json`` (with ``{section: {key: value}}`` overrides), type-checked and validated."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise RunFolderError(f"run folder {run_dir} does not exist; pass a folder such as runs/quickstart")
    if not path.is_file():
        raise RunFolderError(f"{run_dir} has no config.json, so it is not a run folder; pass a folder under runs/")
    try:
        raw = json.loads(path.read_text())
        for section, values in (overrides or {}).items():
            raw.setdefault(section, {}).update(values)
        return config_from_dict(raw)
    except (json.JSONDecodeError, ConfigError) as error:
        raise RunFolderError(f"{path} cannot be read ({str(error).splitlines()[0]})") from None


def find_checkpoint(run_dir: Path, which: str = "latest") -> Path:
    """The checkpoint file for ``latest``, ``best`` or a step number."""
    checkpoints = list_checkpoints(Path(run_dir) / "checkpoints")
    if not checkpoints:
        raise RunFolderError(f"{run_dir} has no checkpoints/step_*.pt; the run must keep at least one checkpoint")
    steps = {int(p.stem.removeprefix("step_")): p for p in checkpoints}
    if which == "latest":
        return checkpoints[-1]
    if which == "best":
        scored = []
        for path in checkpoints:
            loss = read_checkpoint(path)["extra"].get("loop", {}).get("last_val_loss")
            if isinstance(loss, float) and loss == loss:  # not NaN: an evaluation happened at or before it
                scored.append((loss, path))
        if not scored:
            raise RunFolderError(f"no checkpoint in {run_dir} was evaluated; use --checkpoint latest")
        return min(scored)[1]
    if which.isdigit() and int(which) in steps:
        return steps[int(which)]
    raise RunFolderError(
        f"--checkpoint {which!r} not found in {run_dir}/checkpoints; choose latest, best or one of the steps "
        f"{sorted(steps)}"
    )


def run_vocab_size(config: ExperimentConfig, tokenizer: Any | None, data_vocab_size: int | None = None) -> int:
    """The vocabulary size the run's model was built with (older runs: the prepared data's, when given)."""
    if config.model.vocab_size is not None:
        return config.model.vocab_size
    if tokenizer is not None:
        return int(tokenizer.vocab_size)
    if data_vocab_size is not None:
        return data_vocab_size
    raise RunFolderError("config.json has no model.vocab_size and the run stores no tokenizer; set model.vocab_size")


def build_run_model(config: ExperimentConfig, vocab_size: int) -> torch.nn.Module:
    """The run's architecture, freshly initialised, built the way the runner builds it (``make_model``)."""
    from assignment_experiments.runner import make_model

    return make_model(config, vocab_size)


@dataclass
class LoadedRun:
    """A run folder opened for use: config, model (eval mode, weights from ``checkpoint``), tokenizer, step."""

    run_dir: Path
    config: ExperimentConfig
    model: torch.nn.Module
    tokenizer: Any | None
    checkpoint: Path
    step: int
    extra: dict[str, Any]

    @property
    def eos_id(self) -> int | None:
        return eos_id(self.tokenizer)


def read_run_checkpoint(run_dir: Path, which: str = "latest") -> tuple[Path, dict[str, Any]]:
    """The chosen checkpoint's path and its payload (``model``, ``iteration``, ``extra``), read with weights_only."""
    path = find_checkpoint(run_dir, which)
    try:
        return path, read_checkpoint(path)
    except ValueError as error:
        raise RunFolderError(str(error)) from None


def load_run(
    run_dir: Path, checkpoint: str = "latest", device: str | torch.device = "cpu", data_vocab_size: int | None = None
) -> LoadedRun:
    """Open ``run_dir``: validated config, the model with the chosen checkpoint's weights, the stored tokenizer.

    ``data_vocab_size`` is only needed for runs written before ``config.json`` recorded ``model.vocab_size``.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    tokenizer = load_run_tokenizer(run_dir)
    path, payload = read_run_checkpoint(run_dir, checkpoint)
    model = build_run_model(config, run_vocab_size(config, tokenizer, data_vocab_size))
    try:
        step = restore_checkpoint(payload, model, None, name=str(path))
    except ValueError as error:
        raise RunFolderError(str(error)) from None
    model.to(device).eval()
    return LoadedRun(run_dir, config, model, tokenizer, path, step, payload["extra"])
