"""Shared pytest configuration: deterministic seeds and small helpers used across test modules."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny shapes gain nothing from more, and on a shared 2-core machine they thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sdpa_calls(monkeypatch) -> list[int]:
    """Counts calls into the fused kernel behind ``backend="torch_sdpa"`` (``cs336_basics.nn.attention``'s
    ``torch_sdpa`` alias), which still runs. A torch_sdpa layer that matches an oracle proves nothing if the naive path
    is what ran: the tests that take this fixture assert the kernel ran when selected and never on the naive one."""
    import cs336_basics.nn.attention as attention_module

    calls = []
    real = attention_module.torch_sdpa

    def counting_sdpa(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(attention_module, "torch_sdpa", counting_sdpa)
    return calls
