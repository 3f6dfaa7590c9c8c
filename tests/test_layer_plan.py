"""The layer plan is the extension point: a new block type is one small class and one registered letter.

The toy block ``F`` (a feed-forward-only layer with an auxiliary loss) is registered for the duration of a test, mixed
into a plan with attention, trained through the experiment runner, decoded with the shared cache, and its auxiliary
loss and diagnostics reach the trainer's paths without any change to the shell.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from assignment_experiments.evaluate import main as evaluate_main
from assignment_experiments.report import main as report_main
from assignment_experiments.run_experiment import main
from cs336_basics.models.block import BLOCKS, Block, Branch, register_block, validate_plan
from cs336_basics.models.factory import hybrid_lm, transformer_lm
from cs336_basics.models.ffn import build_dense_ffn
from cs336_basics.models.language_model import DecodingCache, LanguageModel
from cs336_basics.models.spec import AttentionSpec, ModelSpec
from cs336_basics.nn.layers import RMSNorm


class FeedForwardOnly(Block):
    """Toy block: ``x + ffn(norm(x))``, with an auxiliary loss of 0.25 and one diagnostic."""

    def __init__(self, spec: ModelSpec, layer: int) -> None:
        super().__init__()
        self.norm = RMSNorm(spec.d_model)
        self.ffn = build_dense_ffn(spec.d_model, spec.ffn)
        self.init_residual(spec, ("ffn",))

    def branches(self, state):
        return [Branch("ffn", lambda h: self.ffn(self.norm(h)))]

    def auxiliary_loss(self) -> torch.Tensor:
        return torch.tensor(0.25)

    def diagnostics(self) -> dict[str, float]:
        return {"gain_mean": float(self.norm.weight.detach().mean())}


@pytest.fixture
def letter_f():
    register_block("F")(FeedForwardOnly)
    yield "F"
    BLOCKS.pop("F")


def test_a_registered_letter_builds_its_block_in_the_plan(letter_f):
    model = hybrid_lm(30, 16, 16, 2, d_ff=32, d_state=4, pattern="AFAF")
    assert [type(layer).__name__ for layer in model.layers] == [
        "TransformerBlock", "FeedForwardOnly", "TransformerBlock", "FeedForwardOnly",
    ]  # fmt: skip
    assert model(torch.randint(0, 30, (2, 8))).shape == (2, 8, 30)
    assert model.auxiliary_loss().item() == pytest.approx(0.5)  # one path collects every block's loss
    assert {"block/layer1/gain_mean", "block/layer3/gain_mean"} <= set(model.diagnostics())


def test_the_new_block_decodes_through_the_shared_cache(letter_f):
    model = hybrid_lm(30, 16, 16, 2, d_ff=32, d_state=4, pattern="FAF").eval()
    cache = model.make_cache(1, 12)
    assert isinstance(cache, DecodingCache)
    ids = torch.randint(0, 30, (1, 10))
    with torch.no_grad():
        full = model(ids)
        steps = [model(ids[:, :4], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(4, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.length == 10


def test_the_new_block_trains_evaluates_and_reports_through_the_runner(letter_f, tmp_path: Path, capsys):
    tokens = tmp_path / "tokens.npy"
    np.save(tokens, np.tile(np.random.default_rng(0).integers(0, 40, size=23), 60).astype(np.uint16))
    config = {
        "description": "toy block F mixed with attention",
        "model": {"architecture": "hybrid", "pattern": "AF", "context_length": 16, "d_model": 16, "num_heads": 2},
        "data": {"source": "tokens", "path": str(tokens), "final_eval_max_tokens": 256},
        "optim": {"lr": 1e-2, "warmup_steps": 2},
        "train": {"max_steps": 8, "batch_size": 4, "eval_every": 8, "eval_batches": 2, "checkpoint_every": 8,
                  "num_threads": 1, "sample_prompts": []},
        "logging": {"log_every": 4, "progress_bar": False},
    }  # fmt: skip
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(config))
    assert main(["--config", str(path), "--runs-dir", str(tmp_path / "runs"), "--name", "toy"]) == 0
    summary = json.loads((tmp_path / "runs" / "toy" / "summary.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "runs" / "toy" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert summary["steps"] == 8 and losses[-1] < losses[0]

    # ... and the run folder works with the tools every other run does: evaluate rebuilds the model from the config
    # (the same final loss, on the same fixed windows) and report tabulates it.
    run_dir = tmp_path / "runs" / "toy"
    assert evaluate_main([str(run_dir), "--json", "--num-threads", "1"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["loss"] == pytest.approx(summary["final_val_loss"], rel=1e-5)
    assert report_main([str(run_dir), "--out-dir", str(tmp_path / "report")]) == 0
    assert "| toy |" in (tmp_path / "report" / "results.md").read_text()


def test_unknown_letters_and_taken_letters_are_rejected():
    with pytest.raises(ValueError, match="unknown block letter 'Z' at position 1"):
        validate_plan("AZ")
    with pytest.raises(ValueError, match="already taken"):
        register_block("A")(FeedForwardOnly)
    with pytest.raises(ValueError, match="one upper-case letter"):
        register_block("ff")


def test_every_architecture_is_the_one_shell_with_its_plan():
    from cs336_basics.models.factory import hymba_lm, mamba_lm

    models = {
        "AAA": transformer_lm(30, 16, 16, 3, 2),
        "MM": mamba_lm(30, 16, 2, d_state=4),
        "AMAM": hybrid_lm(30, 16, 16, 2, d_state=4, pattern="AMAM"),
        "HH": hymba_lm(30, 16, 16, 2, 2, d_state=4, num_meta_tokens=2),
    }
    for plan, model in models.items():
        assert type(model) is LanguageModel and model.plan == plan


def test_tied_embeddings_start_at_std_inverse_sqrt_d_model_in_every_architecture():
    """One init rule in the shell: a tied matrix serves as the head, so it starts at std d^-0.5 (unit-scale logits)."""
    from cs336_basics.models.factory import hymba_lm, mamba_lm

    d = 64
    models = {
        "transformer": transformer_lm(500, 16, d, 1, 2, tie_embeddings=True),
        "mamba": mamba_lm(500, d, 1, d_state=4, tie_embeddings=True),
        "hybrid": hybrid_lm(500, 16, d, 2, d_state=4, pattern="AM", tie_embeddings=True),
        "hymba": hymba_lm(500, 16, d, 1, 2, d_state=4, tie_embeddings=True),
    }
    for name, model in models.items():
        assert model.lm_head.weight is model.token_embeddings.weight, name
        std = model.token_embeddings.weight.std().item()
        assert 0.8 * d**-0.5 < std < 1.0 * d**-0.5, (name, std)  # truncated at 3 sigma: ~0.986 of the std


def test_a_learned_position_table_starts_small_tied_or_not():
    for tie in (False, True):
        model = transformer_lm(500, 64, 64, 1, 2, positions="learned", tie_embeddings=tie)
        std = model.position_embeddings.weight.std().item()
        assert 0.016 < std < 0.02, (tie, std)  # 0.02 truncated at 3 sigma


def test_learned_positions_are_ignored_by_a_plan_without_attention():
    """Zoology gives only attention models a position table; a pure-Mamba plan with positions=learned builds none."""
    mamba = LanguageModel(ModelSpec(50, 16, "MM", attention=AttentionSpec(positions="learned")).validate())
    hybrid = LanguageModel(ModelSpec(50, 16, "MA", 32, attention=AttentionSpec(2, positions="learned")).validate())
    assert not hasattr(mamba, "position_embeddings") and not mamba.bounded
    assert hybrid.position_embeddings.weight.shape == (32, 16)
