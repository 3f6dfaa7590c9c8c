"""Shared pytest configuration: deterministic seeds and small helpers used across test modules."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
