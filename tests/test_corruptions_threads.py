"""The per-image API runs on one intra-op thread of its caller without touching anyone else's setting, and
the package imports none of the optional image libraries the peers need."""
from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from classification.training.corruptions import corrupt, corrupt_batch
from classification.training.corruptions.threads import single_thread
from conftest import reference_image


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_single_thread_is_local_to_the_calling_thread_and_restored(two_threads):
    seen = {}
    inside, release = threading.Event(), threading.Event()

    def other():
        seen["other, before"] = torch.get_num_threads()
        inside.wait(5)
        seen["other, during"] = torch.get_num_threads()
        release.set()

    worker = threading.Thread(target=other)
    worker.start()
    with single_thread():
        seen["inside"] = torch.get_num_threads()
        inside.set()
        release.wait(5)
    worker.join()
    assert seen == {"other, before": 2, "other, during": 2, "inside": 1}
    assert torch.get_num_threads() == 2


def test_corrupt_keeps_the_callers_thread_count(two_threads):
    image = reference_image("chelsea")
    for name in ("defocus_blur", "jpeg_compression", "brightness", "fog"):
        corrupt(image, name, 3, seed=0)
        assert torch.get_num_threads() == 2, name
    corrupt_batch(torch.rand(2, 3, 32, 32), "contrast", 2)
    assert torch.get_num_threads() == 2


def test_single_thread_restores_after_an_error(two_threads):
    with pytest.raises(RuntimeError), single_thread():
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_corrupt_gives_the_same_result_from_concurrent_threads():
    image = reference_image("astronaut")
    expected = {name: corrupt(image, name, 4, seed=3) for name in ("motion_blur", "spatter", "zoom_blur")}
    results = {}

    def run(name):
        results[name] = corrupt(image, name, 4, seed=3)

    workers = [threading.Thread(target=run, args=(name,)) for name in expected]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(np.array_equal(results[name], expected[name]) for name in expected)


OPTIONAL = ("cv2", "scipy", "skimage", "imagecorruptions", "wand", "matplotlib")


def test_no_module_of_the_package_imports_an_optional_image_library():
    code = (
        "import importlib, pkgutil, sys\n"
        "import classification, segmentation\n"
        "for package in (classification, segmentation):\n"
        "    for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        f"print(sorted(name for name in sys.modules if name.split('.')[0] in {OPTIONAL!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
