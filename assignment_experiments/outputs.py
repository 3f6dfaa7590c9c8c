"""The end of a run: full validation pass, optional checkpoint averaging, samples, curves and ``summary.json``.

:func:`finish_run` is the one place that assembles ``summary.json`` (the runner only writes the dict it returns).
:func:`training_flops_per_token` gives the model FLOPs per trained token behind the "model FLOP/s" and MFU figures of
the training log (the convention of :mod:`cs336_basics.models.flops`, counted from the built model).
"""

from __future__ import annotations

import copy
import resource
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from assignment_experiments.config import ExperimentConfig
from assignment_experiments.data_sources import PreparedData
from assignment_experiments.tracking import Tracker, plot_loss_curves, read_metrics
from cs336_basics.training.checkpoint_files import average_last_checkpoints
from cs336_basics.training.loop import Trainer


def write_samples(config: ExperimentConfig, model: torch.nn.Module, data: PreparedData, out: Path) -> None:
    """Continue each fixed prompt with ``generate`` and write prompt + continuation to ``out``."""
    from cs336_basics.training.generation import generate

    t = config.train
    blocks = []
    for index, prompt in enumerate(t.sample_prompts):
        new_ids = generate(
            model,
            data.tokenizer.encode(prompt),
            t.sample_max_new_tokens,
            temperature=t.sample_temperature,
            top_p=t.sample_top_p,
            eos_id=data.eos_id,
            seed=t.seed + index,
        )
        blocks.append(f"### prompt: {prompt!r}\n{prompt}{data.tokenizer.decode(new_ids)}\n")
    out.write_text("\n".join(blocks))


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the peak of allocated tensor memory. CPU: the process-wide peak RSS, data preparation included."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


EMBEDDING_TABLES = ("token_embeddings.weight", "position_embeddings.weight")  # lookups, not matmuls


def training_flops_per_token(model: torch.nn.Module, context_length: int, counts: dict[str, int]) -> tuple[float, str]:
    """Model FLOPs to train on one token (forward + backward), counted from the built model, and how.

    The convention of :mod:`cs336_basics.models.flops`: a weight matrix costs 2 FLOPs per entry per token forward and
    twice that backward (6 in all), every attention layer adds ``12 x context x width`` for the ``Q K^T`` and
    ``softmax(.) V`` products over the full score matrix, element-wise work is ignored, and embedding lookups are free.
    For a dense Transformer this is exactly ``transformer_flops_per_token(...)["training"]`` (a test checks it); it
    extends the count to every architecture by counting the model's own matrices (Mamba projections, convolution
    and state matrices included), with only the ``top_k`` active experts of each MoE layer (``counts``).
    """
    from cs336_basics.nn.attention import CausalMultiHeadSelfAttention

    matrices = sum(
        p.numel() for name, p in model.named_parameters() if p.ndim >= 2 and not name.endswith(EMBEDDING_TABLES)
    )
    head = getattr(model, "lm_head", None)
    if head is not None and "lm_head.weight" not in dict(model.named_parameters()):
        matrices += head.weight.numel()  # tied to the embedding, so listed once, under the embedding's name
    inactive = counts["total"] - counts["active"]  # experts a token does not visit
    attention = [m for m in model.modules() if isinstance(m, CausalMultiHeadSelfAttention)]
    scores = sum(12 * context_length * m.num_heads * m.head_dim for m in attention)
    return float(
        6 * (matrices - inactive) + scores
    ), "6 x active weight-matrix entries + 12 x context x width per attention layer"


def finish_run(
    config: ExperimentConfig,
    name: str,
    run_dir: Path,
    trainer: Trainer,
    data: PreparedData,
    counts: dict[str, int],
    tracker: Tracker,
    session: dict[str, Any] | None = None,
    tokenizer_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Final evaluations and artefacts; returns the whole ``summary.json`` dict (written by the caller).

    ``session`` carries what only the runner saw: ``device``, the training-phase ``rss`` sampler and this process's
    ``wall_clock_s``; ``tokenizer_info`` is what :func:`~assignment_experiments.run_loading.save_run_tokenizer`
    stored in the run folder (kind, checksums).
    """
    state = trainer.state
    final = trainer.full_evaluation(config.data.final_eval_max_tokens)
    record: dict[str, Any] = {
        "kind": "final",
        "step": state.step,
        "final_val_loss": final["loss"],
        "final_val_perplexity": final["perplexity"],
    }
    if "accuracy" in final:
        record["final_val_accuracy"] = final["accuracy"]
    if config.train.average_last_k:
        averaged_state, steps = average_last_checkpoints(run_dir / "checkpoints", config.train.average_last_k)
        averaged = copy.deepcopy(trainer.model)
        averaged.load_state_dict(averaged_state)
        original = trainer.model
        trainer.model = averaged
        result = trainer.full_evaluation(config.data.final_eval_max_tokens)
        trainer.model = original
        record.update(
            {
                "averaged_val_loss": result["loss"],
                "averaged_val_perplexity": result["perplexity"],
                "averaged_steps": steps,
            }
        )
        torch.save(averaged_state, run_dir / "averaged_weights.pt")
    tracker.log(record)
    if data.tokenizer is not None and config.train.sample_prompts:
        write_samples(config, trainer.model, data, run_dir / "samples.txt")
    records = read_metrics(run_dir / "metrics.jsonl")
    plot_loss_curves(records, run_dir / "loss_curves.png", name)
    last_eval = next((r for r in reversed(records) if r.get("kind") == "eval"), {})
    elapsed = max(state.elapsed_s, 1e-9)
    summary: dict[str, Any] = {
        "name": name,
        "description": config.description,
        "baseline": config.baseline,
        "architecture": config.model.architecture,
        "pattern": config.model.pattern,
        "num_params": counts["total"],
        "num_params_non_embedding": counts["non_embedding"],
        "num_params_active": counts["active"],
        "best_val_loss": state.best_val_loss,
        "final_val_loss": final["loss"],
        "final_val_perplexity": final["perplexity"],
        "final_val_accuracy": final.get("accuracy"),
        "averaged_val_loss": record.get("averaged_val_loss"),
        "averaged_val_perplexity": record.get("averaged_val_perplexity"),
        "runtime_s": state.elapsed_s,
        "tokens_per_s": state.tokens_seen / elapsed,
        "steps_per_s": state.step / elapsed,
        "steps": state.step,
        "tokens_seen": state.tokens_seen,
        "stopped_early": state.stopped_early,
        "target_reached_step": state.target_reached_step,
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "model_flops_per_token": tracker.flops_per_token,
        "model_flops_per_s": state.tokens_seen / elapsed * tracker.flops_per_token if tracker.flops_per_token else None,
        "vocab_size": config.model.vocab_size,
        "tokenizer": tokenizer_info,
        **{k: v for k, v in last_eval.items() if k.startswith("diag/")},
    }
    if session is not None:
        device, rss = session["device"], session["rss"]
        # Linux updates ru_maxrss lazily (at unmaps), so a sampled RSS can exceed it: the peak is the larger one
        sampled = (rss.peak_mb or 0.0) if device.type == "cpu" else 0.0
        summary["peak_memory_mb"] = max(peak_memory_mb(device), sampled)
        summary["peak_memory_kind"] = "cuda_max_allocated" if device.type == "cuda" else "process_max_rss"
        summary["train_peak_rss_mb"], summary["rss_before_train_mb"] = rss.peak_mb, rss.start_mb
        summary["wall_clock_this_session_s"] = session["wall_clock_s"]
    return summary
