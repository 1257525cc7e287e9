import pytest
import torch


@pytest.fixture(autouse=True)
def _small_threads():
    """Tests run two at a time (pytest -n 2) on a 2-core machine: one thread each."""
    torch.set_num_threads(1)
    yield
