"""Peer baselines stand where a compiled model would: same calls, same numbers as PyTorch."""

from __future__ import annotations

import numpy as np
import torch

from qbuild.peers import TorchEager


def test_torch_eager_gives_pytorchs_logits_and_a_timed_closure():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5)).eval()
    batch = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = module(torch.from_numpy(batch)).detach().numpy()
    peer = TorchEager(module)
    np.testing.assert_array_equal(peer(batch), expected)
    assert peer.prepare(batch)() is None
    assert peer.describe()["engine"] == "torch" and peer.describe()["threads"] >= 1
