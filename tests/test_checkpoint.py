"""Checkpoints: exact resume, paths and file objects, atomic writes, extras, and clear errors that change nothing."""

import io
import os

import pytest
import torch
from torch import nn

from cs336_basics.optim.adamw import AdamW
from cs336_basics.training import checkpoint as ckpt
from cs336_basics.training.checkpoint import load_checkpoint, load_checkpoint_extra, save_checkpoint
from tests.adapters import run_load_checkpoint, run_save_checkpoint


class TinyLM(nn.Module):
    """A stand-in language model: embedding -> linear -> logits, plus a non-float buffer."""

    def __init__(self, vocab: int = 11, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.proj = nn.Linear(dim, vocab)
        self.register_buffer("counter", torch.tensor(0))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.tanh(self.embed(ids)))


def _make(seed: int = 0, lr: float = 1e-2) -> tuple[TinyLM, AdamW]:
    torch.manual_seed(seed)
    model = TinyLM()
    return model, AdamW(model.parameters(), lr=lr, weight_decay=0.1)


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, 11, (4, 6), generator=generator)
        loss = nn.functional.cross_entropy(model(ids[:, :-1]).reshape(-1, 11), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    model_state = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = {
        i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
        for i, s in optimizer.state_dict()["state"].items()
    }
    return model_state, opt_state


def _assert_unchanged(model, optimizer, snapshot) -> None:
    model_state, opt_state = _snapshot(model, optimizer)
    for key, value in snapshot[0].items():
        assert torch.equal(model_state[key], value), f"model entry {key} changed"
    assert opt_state.keys() == snapshot[1].keys()
    for index, entries in snapshot[1].items():
        for key, value in entries.items():
            now = opt_state[index][key]
            assert torch.equal(now, value) if isinstance(value, torch.Tensor) else now == value


@pytest.mark.parametrize("target", ["path", "bytesio"])
def test_resuming_from_a_checkpoint_continues_bit_identically(tmp_path, target):
    model, optimizer = _make()
    _train(model, optimizer, steps=5, seed=1)
    out = tmp_path / "run" / "ckpt.pt" if target == "path" else io.BytesIO()
    save_checkpoint(model, optimizer, 5, out)
    _train(model, optimizer, steps=5, seed=2)  # the uninterrupted run

    resumed, resumed_opt = _make(seed=99)  # different initial weights, fresh optimizer state
    if target == "bytesio":
        out.seek(0)
    assert load_checkpoint(out, resumed, resumed_opt) == 5
    _train(resumed, resumed_opt, steps=5, seed=2)
    for (name, a), (_, b) in zip(model.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resuming"
    for index, state in optimizer.state_dict()["state"].items():
        resumed_state = resumed_opt.state_dict()["state"][index]
        assert state["step"] == resumed_state["step"]
        assert torch.equal(state["exp_avg"], resumed_state["exp_avg"])
        assert torch.equal(state["exp_avg_sq"], resumed_state["exp_avg_sq"])


def test_adapters_round_trip_a_model_and_torch_optimizer_through_a_path(tmp_path):
    model, _ = _make()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _train(model, optimizer, steps=2, seed=3)
    run_save_checkpoint(model, optimizer, iteration=42, out=tmp_path / "c.pt")
    other, _ = _make(seed=5)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    assert run_load_checkpoint(src=str(tmp_path / "c.pt"), model=other, optimizer=other_opt) == 42
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    assert other_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


def test_extra_values_round_trip_including_rng_states_and_config(tmp_path):
    model, optimizer = _make()
    extra = {
        "tokens_seen": 12_345,
        "schedule": {"name": "wsd", "warmup": 10},
        "torch_rng": torch.get_rng_state(),
        "data_rng": torch.Generator().manual_seed(3).get_state(),
        "losses": [2.5, 2.25],
        "note": None,
    }
    save_checkpoint(model, optimizer, 7, tmp_path / "c.pt", extra=extra)
    loaded = load_checkpoint_extra(tmp_path / "c.pt")
    assert loaded.keys() == extra.keys()
    assert loaded["tokens_seen"] == 12_345 and loaded["schedule"] == {"name": "wsd", "warmup": 10}
    assert torch.equal(loaded["torch_rng"], extra["torch_rng"]) and torch.equal(loaded["data_rng"], extra["data_rng"])
    assert loaded["losses"] == [2.5, 2.25] and loaded["note"] is None


def test_a_checkpoint_without_extra_reads_back_an_empty_dict(tmp_path):
    model, optimizer = _make()
    save_checkpoint(model, optimizer, 1, tmp_path / "c.pt")
    assert load_checkpoint_extra(tmp_path / "c.pt") == {}


def test_extra_values_that_weights_only_loading_cannot_read_are_rejected_when_saving(tmp_path):
    np = pytest.importorskip("numpy")
    model, optimizer = _make()
    with pytest.raises(ValueError, match=r"extra\['rng'\]"):
        save_checkpoint(model, optimizer, 1, tmp_path / "c.pt", extra={"rng": np.zeros(3)})
    assert not (tmp_path / "c.pt").exists()


def test_model_only_checkpoints_save_and_load_with_optimizer_none(tmp_path):
    model, _ = _make()
    save_checkpoint(model, None, 3, tmp_path / "c.pt")
    other, other_opt = _make(seed=4)
    assert load_checkpoint(tmp_path / "c.pt", other, None) == 3
    assert torch.equal(model.proj.weight, other.proj.weight)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(tmp_path / "c.pt", other, other_opt)


def test_a_torch_compile_wrapper_is_unwrapped_so_keys_do_not_depend_on_it(tmp_path):
    model, optimizer = _make()
    wrapper = nn.Module()
    wrapper._orig_mod = model  # what torch.compile's OptimizedModule exposes
    save_checkpoint(wrapper, optimizer, 1, tmp_path / "c.pt")
    plain, plain_opt = _make(seed=8)
    load_checkpoint(tmp_path / "c.pt", plain, plain_opt)
    assert torch.equal(plain.embed.weight, model.embed.weight)


def _saved_bytes(model, optimizer) -> bytes:
    buffer = io.BytesIO()
    save_checkpoint(model, optimizer, 9, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "corrupt",
    [lambda data: data[: len(data) // 2], lambda data: b"\x00garbage" * 64, lambda data: b""],
    ids=["truncated", "garbage", "empty"],
)
def test_a_damaged_file_raises_one_clear_error_and_changes_nothing(tmp_path, corrupt):
    source, source_opt = _make()
    _train(source, source_opt, 2, seed=1)
    path = tmp_path / "bad.pt"
    path.write_bytes(corrupt(_saved_bytes(source, source_opt)))
    model, optimizer = _make(seed=3)
    _train(model, optimizer, 2, seed=2)
    before = _snapshot(model, optimizer)
    with pytest.raises(ValueError, match=r"checkpoint .*bad\.pt is truncated or not a checkpoint") as info:
        load_checkpoint(path, model, optimizer)
    assert "\n" not in str(info.value)
    _assert_unchanged(model, optimizer, before)


def test_a_truncated_file_object_raises_the_same_error():
    source, source_opt = _make()
    data = _saved_bytes(source, source_opt)
    with pytest.raises(ValueError, match="truncated or not a checkpoint"):
        load_checkpoint(io.BytesIO(data[:-100]), *_make())


def test_a_torch_file_that_is_not_a_checkpoint_is_named_as_such(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a checkpoint written by save_checkpoint"):
        load_checkpoint(tmp_path / "other.pt", *_make())


def test_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt", *_make())


def test_a_model_key_mismatch_raises_before_touching_model_or_optimizer(tmp_path):
    source, source_opt = _make()
    save_checkpoint(source, source_opt, 1, tmp_path / "c.pt")
    model, optimizer = _make(seed=2)
    model.extra_layer = nn.Linear(2, 2)  # a key the checkpoint lacks
    optimizer.add_param_group({"params": list(model.extra_layer.parameters())})
    _train(model, optimizer, 1, seed=0)
    before = _snapshot(model, optimizer)
    with pytest.raises(ValueError, match="missing keys .*extra_layer"):
        load_checkpoint(tmp_path / "c.pt", model, optimizer)
    _assert_unchanged(model, optimizer, before)


def test_a_shape_mismatch_raises_before_touching_the_model(tmp_path):
    torch.manual_seed(0)
    source = TinyLM(vocab=11, dim=8)
    save_checkpoint(source, None, 1, tmp_path / "c.pt")
    model = TinyLM(vocab=11, dim=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"embed\.weight has shape \(11, 8\) in the file but \(11, 6\)"):
        load_checkpoint(tmp_path / "c.pt", model, None)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_optimizer_group_mismatch_raises_before_touching_the_model(tmp_path):
    source, source_opt = _make()
    _train(source, source_opt, 1, seed=0)
    save_checkpoint(source, source_opt, 1, tmp_path / "c.pt")
    model, _ = _make(seed=6)
    optimizer = AdamW([{"params": [model.embed.weight]}, {"params": list(model.proj.parameters())}])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="parameter group sizes"):
        load_checkpoint(tmp_path / "c.pt", model, optimizer)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_optimizer_with_parameters_in_another_order_is_rejected_before_touching_the_model(tmp_path):
    source, _ = _make()
    source_opt = AdamW([source.embed.weight, source.proj.bias, source.proj.weight])
    _train(source, source_opt, 1, seed=0)
    save_checkpoint(source, source_opt, 1, tmp_path / "c.pt")
    model, _ = _make(seed=6)
    optimizer = AdamW([model.proj.bias, model.embed.weight, model.proj.weight])  # same group size, other order
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="state 'exp_avg' of parameter 0 has shape"):
        load_checkpoint(tmp_path / "c.pt", model, optimizer)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, optimizer = _make()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model, optimizer, 1, path)
    previous = path.read_bytes()

    def crash_mid_write(obj, handle):
        handle.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, optimizer, 2, path)
    assert path.read_bytes() == previous
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"], "temporary file left behind"
    monkeypatch.undo()
    assert load_checkpoint(path, *_make(seed=1)) == 1


def test_saving_to_a_path_creates_missing_directories_and_leaves_no_temp_files(tmp_path):
    model, optimizer = _make()
    path = tmp_path / "runs" / "x" / "ckpt.pt"
    save_checkpoint(model, optimizer, 1, path)
    save_checkpoint(model, optimizer, 2, path)  # overwrite in place
    assert os.listdir(path.parent) == ["ckpt.pt"]
    assert load_checkpoint(path, *_make()) == 2
