"""Scoring only the answer positions: the output layer on a subset of positions gives the same logits and losses as
the full output, and ``train.target_accuracy`` ends a synthetic-task run once it is reached."""

from __future__ import annotations

import json

import pytest
import torch

from assignment_experiments.config import ConfigError, load_config
from assignment_experiments.config_validation import validate
from cs336_basics.data.synthetic import make_task
from cs336_basics.models.factory import build_model
from cs336_basics.optim.adamw import AdamW
from cs336_basics.training.batches import TaskBatches
from cs336_basics.training.evaluation import batch_loss, evaluate, scored_logits
from cs336_basics.training.loop import LoopSettings, Trainer

SIZES = dict(vocab_size=64, d_model=32)
MIXERS = {"transformer": dict(context_length=32, num_heads=2, num_layers=2), "mamba": dict(d_state=4, num_layers=2),
          "hybrid": dict(context_length=32, num_heads=2, d_state=4),
          "hymba": dict(context_length=32, num_heads=2, d_state=4, num_layers=2)}  # fmt: skip


def tiny(architecture: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(architecture, **SIZES, **MIXERS[architecture], **extra)


@pytest.mark.parametrize(
    ("architecture", "extra"),
    [("transformer", {}), ("mamba", {}), ("hybrid", {"pattern": "MA"}), ("hymba", {"num_meta_tokens": 2})],
)
def test_score_mask_gives_the_full_logits_at_the_masked_positions(architecture, extra):
    model = tiny(architecture, **extra).eval()
    task = make_task("mqar", vocab_size=64, num_pairs=4, seq_len=32, query_placement="random")
    inputs, targets, mask = task.sample_batch(3, torch.Generator().manual_seed(1))
    full = model(inputs)  # (B, T, V)
    subset = model(inputs, score_mask=mask)  # (n, V)
    assert subset.shape == (int(mask.sum()), 64)
    torch.testing.assert_close(subset, full[mask], atol=1e-5, rtol=1e-5)
    full_loss, n_full = batch_loss(full, targets, mask)
    subset_loss, n_subset = batch_loss(subset, targets, mask)
    assert n_full == n_subset == int(mask.sum())
    torch.testing.assert_close(subset_loss, full_loss, atol=1e-5, rtol=1e-5)


def test_score_mask_of_the_wrong_shape_is_refused():
    model = tiny("transformer")
    with pytest.raises(ValueError, match="score_mask must have the input's shape"):
        model(torch.zeros(2, 8, dtype=torch.long), score_mask=torch.ones(2, 7, dtype=torch.bool))


def test_evaluation_is_the_same_with_and_without_the_subset_head():
    model = tiny("transformer").eval()
    task = make_task("mqar", vocab_size=64, num_pairs=4, seq_len=32)
    batches = [task.sample_batch(4, torch.Generator().manual_seed(s)) for s in range(3)]

    class FullOnly(torch.nn.Module):  # the same model without accepts_score_mask: the fallback path
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, ids):
            return self.inner(ids)

    fast, slow = evaluate(model, batches), evaluate(FullOnly(model), batches)
    assert fast["accuracy"] == slow["accuracy"] and fast["tokens"] == slow["tokens"]
    assert fast["loss"] == pytest.approx(slow["loss"], abs=1e-6)
    assert scored_logits(FullOnly(model), *batches[0][::2]).shape == (int(batches[0][2].sum()), 64)


def mqar_trainer(tmp_path, lr: float, **settings) -> Trainer:
    model = tiny("transformer")
    task = make_task("mqar", vocab_size=64, num_pairs=4, seq_len=32)
    options = {**dict(max_steps=6, batch_size=8, eval_every=2, eval_batches=2, log_every=1), **settings}
    return Trainer(model, AdamW(model.parameters(), lr=lr), lambda step: lr, TaskBatches(task, "cpu"),
                   LoopSettings(**options), torch.device("cpu"), checkpoint_dir=tmp_path / "ckpt")  # fmt: skip


def test_target_accuracy_ends_the_run_at_the_first_evaluation_that_reaches_it(tmp_path):
    trainer = mqar_trainer(tmp_path, lr=1e-3, target_accuracy=0.99, max_steps=20)
    accuracies = iter([0.5, 0.995, 1.0])  # what the evaluations at steps 2, 4, 6 report
    trainer.evaluate = lambda: {"loss": 1.0, "perplexity": 2.7, "accuracy": next(accuracies)}
    state = trainer.fit()
    assert state.stopped_early and state.step == 4 and state.target_reached_step == 4


def test_an_unreached_target_runs_every_step(tmp_path):
    state = mqar_trainer(tmp_path, lr=0.0, target_accuracy=1.0).fit()  # no learning: never all correct
    assert not state.stopped_early and state.step == 6 and state.target_reached_step is None


def test_target_accuracy_is_refused_for_text_and_out_of_range(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data": {"source": "synthetic", "task": "mqar"}, "train": {"target_accuracy": 0.99}}))
    validate(load_config(path))
    with pytest.raises(ConfigError, match="must lie in \\(0, 1\\]"):
        validate(load_config(path, ["train.target_accuracy=1.5"]))
    with pytest.raises(ConfigError, match="needs a task with answers"):
        validate(load_config(path, ['data.source="stories"']))
