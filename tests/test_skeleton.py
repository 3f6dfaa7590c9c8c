"""The project skeleton: packages import and every adapter of the contract is present."""

import importlib
import inspect

import pytest

from tests import adapters

ADAPTER_NAMES = [
    "run_linear", "run_embedding", "run_swiglu", "run_scaled_dot_product_attention",
    "run_multihead_self_attention", "run_multihead_self_attention_with_rope", "run_rope",
    "run_transformer_block", "run_transformer_lm", "run_rmsnorm", "run_silu", "run_get_batch", "run_softmax",
    "run_cross_entropy", "run_gradient_clipping", "get_adamw_cls", "run_get_lr_cosine_schedule",
    "run_save_checkpoint", "run_load_checkpoint", "get_tokenizer", "run_train_bpe",
    "run_selective_scan", "run_mamba_lm", "run_hybrid_lm",
]  # fmt: skip


@pytest.mark.parametrize("package", ["cs336_basics", "kernels", "assignment_experiments"])
def test_package_imports(package):
    importlib.import_module(package)


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_adapter_present(name):
    assert inspect.isfunction(getattr(adapters, name))
