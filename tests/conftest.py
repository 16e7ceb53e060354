"""Shared test helpers: where the reference fixtures live and how to read the sample photos."""
from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REFERENCE = FIXTURES / "reference"
SAMPLE_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "brick")


def reference_image(name: str) -> np.ndarray:
    """One of the six 224x224 sample photos as an HxWx3 uint8 array."""
    return np.array(Image.open(REFERENCE / "images" / f"{name}.png").convert("RGB"))


def pytest_configure(config):
    """Ctrl-C raises KeyboardInterrupt in this process and in the commands the tests start, even when pytest was
    launched in the background of a script (``pytest &``), which starts it with SIGINT ignored, a disposition
    its children would inherit: the interruption tests send SIGINT and expect the programs to stop."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def single_thread():
    """One intra-op thread for modules of small tensors: a second thread only adds waiting (on a shared
    machine, a lot of it). Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
