"""Shared fixtures: the token data and one small trained LM per test run (deep-copied by users)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def token_data():
    import torch

    torch.set_num_threads(1)
    from fmlab.quant._data import load_token_data

    return load_token_data()


@pytest.fixture(scope="session")
def trained_lm(token_data):
    from fmlab.quant import LMConfig, TrainConfig, train_lm

    res = train_lm(60_000, model_config=LMConfig(d_model=64, n_layers=1, n_heads=4),
                   train_config=TrainConfig(eval_tokens=8192), data=token_data, seed=0)
    return res
