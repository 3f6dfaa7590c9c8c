"""AdamW specification: it must follow torch.optim.AdamW step for step (the oracle), per parameter group, and its
state must survive a state_dict round trip."""

import copy

import pytest
import torch
from torch import nn

from cs336_basics.optim.adamw import AdamW
from tests.adapters import get_adamw_cls


def _small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=generator)
        y = torch.randn(16, 3, generator=generator)
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()


def _assert_same_parameters(a: nn.Module, b: nn.Module, atol: float = 1e-6) -> None:
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=atol, msg=f"parameter {name} diverged")


@pytest.mark.parametrize(
    "hyper",
    [
        {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01},
        {"lr": 3e-3, "betas": (0.9, 0.95), "eps": 1e-6, "weight_decay": 0.1},
        {"lr": 1e-2, "betas": (0.5, 0.9), "eps": 1e-8, "weight_decay": 0.0},
        {"lr": 1e-4, "betas": (0.0, 0.99), "eps": 1e-3, "weight_decay": 1.0},
    ],
)
def test_adamw_matches_torch_adamw_over_300_steps(hyper):
    ours, theirs = _small_model(), _small_model()
    _train(ours, AdamW(ours.parameters(), **hyper), steps=300)
    _train(theirs, torch.optim.AdamW(theirs.parameters(), **hyper), steps=300)
    _assert_same_parameters(ours, theirs)


@pytest.mark.parametrize("foreach", [False, True], ids=["single-tensor", "foreach"])
def test_adamw_multi_tensor_path_matches_torch_and_handles_mixed_dtypes(foreach):
    def params():
        generator = torch.Generator().manual_seed(0)
        shapes_dtypes = [((4, 3), torch.float32), ((3,), torch.float64), ((2, 5), torch.float32), ((7,), torch.float64)]
        return [nn.Parameter(torch.randn(shape, generator=generator, dtype=dtype)) for shape, dtype in shapes_dtypes]

    ours, theirs = params(), params()
    ours_opt = AdamW(ours, lr=1e-2, weight_decay=0.1, foreach=foreach)
    theirs_opt = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.1, foreach=foreach)
    generator = torch.Generator().manual_seed(1)
    for step in range(100):
        grads = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in ours]
        for group, optimizer in ((ours, ours_opt), (theirs, theirs_opt)):
            for p, g in zip(group, grads, strict=True):
                p.grad = None if step % 7 == 3 and p.ndim == 1 else g.clone()  # sometimes skip the vectors
            optimizer.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_adamw_matches_torch_adamw_with_parameter_groups_of_their_own_lr_and_decay():
    def groups(model):
        weights = [p for p in model.parameters() if p.ndim == 2]
        biases = [p for p in model.parameters() if p.ndim == 1]
        return [{"params": weights, "weight_decay": 0.2}, {"params": biases, "weight_decay": 0.0, "lr": 5e-3}]

    ours, theirs = _small_model(), _small_model()
    _train(ours, AdamW(groups(ours), lr=1e-3, betas=(0.9, 0.98)), steps=200)
    _train(theirs, torch.optim.AdamW(groups(theirs), lr=1e-3, betas=(0.9, 0.98)), steps=200)
    _assert_same_parameters(ours, theirs)


def test_adamw_first_step_equals_the_closed_form():
    # With t = 1 the bias-corrected update is lr * g / (|g| + eps) after decay: a sign step of size lr.
    param = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    param.grad = torch.tensor([0.3, -4.0, 0.0])
    lr, wd, eps = 0.1, 0.5, 1e-8
    AdamW([param], lr=lr, weight_decay=wd, eps=eps).step()
    decayed = torch.tensor([1.0, -2.0, 0.5]) * (1 - lr * wd)
    expected = decayed - lr * torch.tensor([0.3, -4.0, 0.0]) / (torch.tensor([0.3, 4.0, 0.0]) + eps)
    torch.testing.assert_close(param.detach(), expected)


def test_adamw_skips_parameters_without_gradients():
    used, unused = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    used.grad = torch.ones(3)
    optimizer = AdamW([used, unused], lr=0.1, weight_decay=0.1)
    optimizer.step()
    assert torch.equal(unused.detach(), torch.ones(3))
    assert unused not in optimizer.state
    assert not torch.equal(used.detach(), torch.ones(3))


def test_adamw_state_dict_round_trip_continues_identically():
    reference, resumed = _small_model(), _small_model()
    ref_opt = AdamW(reference.parameters(), lr=2e-3, weight_decay=0.05)
    _train(reference, ref_opt, steps=20, seed=3)
    resumed.load_state_dict(reference.state_dict())
    res_opt = AdamW(resumed.parameters(), lr=2e-3, weight_decay=0.05)
    # Deep copy: like torch's, load_state_dict aliases the given tensors (a file round trip never shares them).
    res_opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))
    _train(reference, ref_opt, steps=20, seed=4)
    _train(resumed, res_opt, steps=20, seed=4)
    for pa, pb in zip(reference.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_adamw_continues_from_a_torch_adamw_state_dict_as_torch_would():
    ours, theirs = _small_model(), _small_model()
    theirs_opt = torch.optim.AdamW(theirs.parameters(), lr=2e-3, weight_decay=0.05)
    _train(theirs, theirs_opt, steps=10, seed=3)
    ours.load_state_dict(theirs.state_dict())
    ours_opt = AdamW(ours.parameters(), lr=2e-3, weight_decay=0.05)
    ours_opt.load_state_dict(copy.deepcopy(theirs_opt.state_dict()))  # its "step" entries are tensors
    _train(theirs, theirs_opt, steps=10, seed=4)
    _train(ours, ours_opt, steps=10, seed=4)
    _assert_same_parameters(ours, theirs)


def test_adamw_step_returns_the_closure_loss():
    param = nn.Parameter(torch.ones(2))

    def closure():
        loss = (param**2).sum()
        loss.backward()
        return loss

    loss = AdamW([param]).step(closure)
    assert float(loss.detach()) == 2.0


@pytest.mark.parametrize(
    "bad",
    [{"lr": -1.0}, {"betas": (1.0, 0.9)}, {"betas": (0.9, -0.1)}, {"eps": -1e-8}, {"weight_decay": -0.1}],
)
def test_adamw_rejects_invalid_hyperparameters(bad):
    with pytest.raises(ValueError, match="AdamW"):
        AdamW([nn.Parameter(torch.ones(1))], **bad)


def test_adamw_rejects_an_invalid_group_override():
    with pytest.raises(ValueError, match="weight_decay"):
        AdamW([{"params": [nn.Parameter(torch.ones(1))], "weight_decay": -1.0}])


def test_adapter_get_adamw_cls_constructs_with_keyword_arguments():
    cls = get_adamw_cls()
    assert issubclass(cls, torch.optim.Optimizer)
    model = _small_model()
    optimizer = cls(model.parameters(), lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8)
    _train(model, optimizer, steps=2)
