"""Suite-wide fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The suite's tensors are tiny: one intra-op thread avoids OpenMP oversubscription on a busy 2-core machine,
    where two threads are 10-40x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
