"""The training loop's own behaviours, checked in-process on a tiny model: early stopping, the non-finite guard,
full validation coverage, checkpoint averaging, and DDP-style batch sharding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cs336_basics.data.batching import get_batch
from cs336_basics.optim.adamw import AdamW
from cs336_basics.training.batches import TokenBatches
from cs336_basics.training.checkpoint_files import average_last_checkpoints, list_checkpoints
from cs336_basics.training.loop import LoopSettings, NonFiniteError, Trainer

VOCAB, T = 20, 8


class BigramLM(torch.nn.Module):
    """Stand-in LM: a learned bigram table; ``poison_after`` makes its logits NaN after that many forward calls."""

    def __init__(self, poison_after: int | None = None) -> None:
        super().__init__()
        self.vocab_size = VOCAB
        self.table = torch.nn.Parameter(torch.randn(VOCAB, VOCAB) * 0.1)
        self.calls, self.poison_after = 0, poison_after

    def auxiliary_loss(self) -> torch.Tensor:
        return torch.zeros(())

    def diagnostics(self) -> dict[str, float]:
        return {}

    def forward(self, ids: torch.Tensor, cache=None) -> torch.Tensor:
        self.calls += 1
        logits = self.table[ids]  # (B, T, V)
        if self.poison_after is not None and self.calls > self.poison_after:
            logits = logits * float("nan")
        return logits


def make_trainer(tmp_path, model=None, lr: float = 0.1, windows: dict | None = None, **settings) -> Trainer:
    tokens = (np.arange(600) % 7).astype(np.uint16)
    batches = TokenBatches(tokens[:500], tokens[500:], T, "cpu", **(windows or {}))
    model = model or BigramLM()
    options = dict(max_steps=10, batch_size=4, eval_every=2, eval_batches=2, log_every=1)
    records: list[dict] = []
    trainer = Trainer(
        model, AdamW(model.parameters(), lr=lr), lambda step: lr, batches, LoopSettings(**{**options, **settings}),
        torch.device("cpu"), log=records.append, checkpoint_dir=tmp_path / "checkpoints",
    )  # fmt: skip
    trainer.records = records
    return trainer


def test_early_stopping_ends_the_run_after_patience_evaluations_without_improvement(tmp_path):
    trainer = make_trainer(tmp_path, lr=0.0, early_stopping_patience=2)  # no learning: val loss never improves
    state = trainer.fit()
    assert state.stopped_early and state.step == 6  # evals at 2 (best), 4 (1 bad), 6 (2 bad) -> stop
    assert list_checkpoints(tmp_path / "checkpoints")[-1].name == "step_0000006.pt"


def test_learning_improves_the_best_validation_loss_and_runs_to_max_steps(tmp_path):
    trainer = make_trainer(tmp_path, early_stopping_patience=2)
    state = trainer.fit()
    evals = [r["val_loss"] for r in trainer.records if r["kind"] == "eval"]
    assert not state.stopped_early and state.step == 10 and len(evals) == 5
    assert evals[-1] < evals[0] < math.log(VOCAB) + 0.5
    assert state.best_val_loss == min(evals)


def test_non_finite_loss_raises_before_the_optimizer_step(tmp_path):
    model = BigramLM(poison_after=3)
    trainer = make_trainer(tmp_path, model=model, checkpoint_every=1, eval_every=100)
    with pytest.raises(NonFiniteError, match="non-finite loss at step 4"):
        trainer.fit()
    assert trainer.state.step == 3
    last = list_checkpoints(tmp_path / "checkpoints")[-1]
    saved = torch.load(last, weights_only=True)["model"]["table"]
    assert last.name == "step_0000003.pt" and torch.equal(saved, model.table.detach())


def test_full_evaluation_scores_every_validation_window_once(tmp_path):
    trainer = make_trainer(tmp_path)
    val = trainer.batches.val
    result = trainer.full_evaluation(max_tokens=10_000)
    windows = (len(val) - 1) // T
    assert result["tokens"] == windows * T
    table = trainer.model.table.detach()
    expected = np.mean([
        -torch.log_softmax(table[int(val[i])], dim=-1)[int(val[i + 1])].item() for i in range(windows * T)
    ])  # fmt: skip
    assert result["loss"] == pytest.approx(expected, rel=1e-5)


def test_uncapped_full_evaluation_scores_the_whole_validation_split(tmp_path):
    trainer = make_trainer(tmp_path)
    assert trainer.full_evaluation(max_tokens=None)["tokens"] == (len(trainer.batches.val) - 1) // T * T
    assert trainer.full_evaluation(max_tokens=3 * T)["tokens"] == 3 * T


def test_averaging_the_last_checkpoints_gives_the_mean_of_their_weights(tmp_path):
    trainer = make_trainer(tmp_path, checkpoint_every=2, keep_checkpoints=3, max_steps=6)
    trainer.fit()
    paths = list_checkpoints(tmp_path / "checkpoints")
    tables = [torch.load(p, weights_only=True)["model"]["table"] for p in paths[-2:]]
    averaged, steps = average_last_checkpoints(tmp_path / "checkpoints", 2)
    assert steps == [4, 6] and len(paths) == 3
    torch.testing.assert_close(averaged["table"], (tables[0] + tables[1]) / 2)


def test_sharded_batches_split_the_global_batch_between_processes():
    tokens = np.arange(1000, dtype=np.uint16)
    whole = TokenBatches(tokens, tokens, T, "cpu").train_batch(4, torch.Generator().manual_seed(3))
    parts = [TokenBatches(tokens, tokens, T, "cpu", rank, 2).train_batch(4, torch.Generator().manual_seed(3))
             for rank in range(2)]  # fmt: skip
    assert torch.equal(torch.cat([p[0] for p in parts]), whole[0])
    assert torch.equal(torch.cat([p[1] for p in parts]), whole[1])


def test_random_windows_are_exactly_get_batch_draws_from_the_loop_generator():
    tokens = np.arange(1000, dtype=np.uint16)
    ours = TokenBatches(tokens, tokens, T, "cpu").train_batch(4, torch.Generator().manual_seed(5))
    oracle = get_batch(tokens, 4, T, "cpu", generator=torch.Generator().manual_seed(5))
    assert torch.equal(ours[0], oracle[0]) and torch.equal(ours[1], oracle[1])


def test_sequential_windows_walk_the_train_split_with_the_stride_and_cover_its_tail():
    tokens = np.arange(100, dtype=np.uint16)
    batches = TokenBatches(tokens, tokens, T, "cpu", window_mode="sequential", stride=6)
    generator = torch.Generator().manual_seed(0)
    firsts = torch.cat([batches.train_batch(4, generator)[0][:, 0] for _ in range(5)]).tolist()
    epoch = list(range(0, 100 - T, 6)) + [100 - T - 1]  # 0, 6, ..., 90, then the tail window at 91
    assert firsts == epoch + epoch[:3]  # 17 windows, then the next epoch starts over


def test_sequential_window_position_survives_a_checkpoint_round_trip(tmp_path):
    windows = {"window_mode": "sequential", "stride": 5, "shuffle": True, "seed": 3}
    torch.manual_seed(0)
    straight = make_trainer(tmp_path / "a", windows=windows, max_steps=6)
    straight.fit()
    torch.manual_seed(0)
    interrupted = make_trainer(tmp_path / "b", windows=windows, max_steps=3, checkpoint_every=3)
    interrupted.fit()
    resumed = make_trainer(tmp_path / "b", windows=windows, max_steps=6)
    resumed.resume(list_checkpoints(tmp_path / "b" / "checkpoints")[-1])
    resumed.fit()
    assert torch.equal(resumed.model.table, straight.model.table)
    next_straight = straight.batches.train_batch(4, straight.generator)[0]
    assert torch.equal(resumed.batches.train_batch(4, resumed.generator)[0], next_straight)


def test_fixed_periodic_evaluation_scores_the_first_non_overlapping_validation_windows(tmp_path):
    trainer = make_trainer(tmp_path, windows={"fixed_eval": True}, eval_batches=2)
    first = trainer.evaluate()
    val, table = trainer.batches.val, trainer.model.table.detach()
    positions = range(2 * 4 * T)  # 2 batches of 4 windows starting at 0, T, 2T, ...: every position once
    expected = np.mean([-torch.log_softmax(table[int(val[i])], dim=-1)[int(val[i + 1])].item() for i in positions])
    assert first["tokens"] == 2 * 4 * T and first["loss"] == pytest.approx(expected, rel=1e-5)
    assert trainer.evaluate() == first


def test_random_periodic_evaluation_stays_the_default(tmp_path):
    trainer = make_trainer(tmp_path, eval_batches=2)
    generator = torch.Generator().manual_seed(trainer.settings.seed + 7919)
    batches = [trainer.batches.val_batch(4, generator) for _ in range(2)]
    table = trainer.model.table.detach()
    expected = np.mean([
        -torch.log_softmax(table[x], dim=-1).gather(-1, y[..., None]).squeeze(-1).numpy() for x, y, _ in batches
    ])  # fmt: skip
    assert trainer.evaluate()["loss"] == pytest.approx(expected, rel=1e-5)


def test_the_schedule_sets_every_group_through_apply_learning_rate(tmp_path):
    trainer = make_trainer(tmp_path, lr=0.1)
    trainer.optimizer.param_groups[0]["lr_scale"] = 0.25  # a per-group ratio the schedule must keep
    trainer.train_step()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
