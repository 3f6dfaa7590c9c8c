"""The end of a run: full validation pass, optional checkpoint averaging, samples, curves and ``summary.json``."""

from __future__ import annotations

import copy
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


def finish_run(
    config: ExperimentConfig,
    name: str,
    run_dir: Path,
    trainer: Trainer,
    data: PreparedData,
    counts: dict[str, int],
    tracker: Tracker,
) -> dict[str, Any]:
    """Final evaluations and artefacts; returns the summary dict (written by the caller)."""
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
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **{k: v for k, v in last_eval.items() if k.startswith("diag/")},
    }
    return summary
