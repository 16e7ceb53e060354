"""Other corruption implementations, timed beside this engine when they are importable (never a dependency).

- ``imagecorruptions`` 1.1.2 (bethgelab; the ImageNet-C code most papers use). It needs ``pkg_resources``
  (setuptools < 81), calls ``skimage.filters.gaussian(..., multichannel=True)``, a keyword current
  scikit-image no longer takes, and ``np.float_``, removed in NumPy 2: :func:`load` gives the peer's
  module a shimmed ``gaussian`` and a NumPy view with that alias (inside that module only, when this
  benchmark imports it).
- ``corrupt-tta`` 0.1.7 (OpenCV-based rewrite of the same 19 corruptions).
- ``authors'``: the authors' corruption code is ImageNet-C's code (the functions ``imagecorruptions``
  packages) plus SyMPIE's four colour warps in plain NumPy on 0..255 values. Their exact code is not
  used here (licence, and it is not on this machine); this column is that code path: the
  ``imagecorruptions`` functions for the 19 ImageNet-C names, NumPy for darken, sunset, night and white,
  written from the formulas in ``classification/training/corruptions/color.py``.

Install them into a separate environment that sees this one, e.g.::

    python -m venv --system-site-packages /work/peers
    /work/peers/bin/pip install "setuptools<81" imagecorruptions==1.1.2 corrupt-tta==0.1.7 \\
        opencv-python-headless scikit-image scipy
    /work/peers/bin/python benchmarks/bench_corruptions.py

Every implementation is a callable ``fn(image, severity, rng) -> HxWx3 uint8 array`` on an HxWx3 uint8 image,
through each library's public ``corrupt`` function (as its users call it).
"""
from __future__ import annotations

import importlib
import sys
import types
import warnings
from collections.abc import Callable

import numpy as np

PeerFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _gaussian_shim(gaussian: Callable) -> Callable:
    """``skimage.filters.gaussian`` accepting the removed ``multichannel`` keyword (as ``channel_axis=-1``)."""

    def shimmed(image, *args, multichannel=None, **kwargs):
        if multichannel is not None and "channel_axis" not in kwargs:
            kwargs["channel_axis"] = -1 if multichannel else None
        return gaussian(image, *args, **kwargs)

    return shimmed


class _NumpyWithAliases(types.ModuleType):
    """NumPy as seen by a peer written for NumPy 1.x: the removed ``np.float_`` alias resolves to float64."""

    float_ = np.float64

    def __getattr__(self, name: str):
        return getattr(np, name)


def _imagecorruptions() -> dict[str, PeerFn]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module("imagecorruptions")
        corruptions = importlib.import_module("imagecorruptions.corruptions")
    corruptions.gaussian = _gaussian_shim(corruptions.gaussian)
    corruptions.np = _NumpyWithAliases("numpy")
    return {
        name: (lambda image, severity, rng, name=name: module.corrupt(image, severity, corruption_name=name))
        for name in module.corruption_dict
    }


def _corrupt_tta() -> dict[str, PeerFn]:
    module = importlib.import_module("corrupt_tta")
    return {
        name: (lambda image, severity, rng, name=name: np.uint8(module.corrupt(image, severity, corruption_name=name)))
        for name in module.corruption_dict
    }


def _darken(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return np.uint8(np.clip(np.round(image / (severity + 1)), 0, 255))


def _blend(image: np.ndarray, target: np.ndarray, severity: int) -> np.ndarray:
    w = severity / 5
    return np.uint8(np.clip(np.round(w * target + (1 - w) * image), 0, 255))


def _sunset(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    d = int(rng.integers(-32, 33))
    colour = np.array([255, 192 + d, 192 - d], dtype=np.float64)
    return _blend(image, colour * image / 255 + colour / 10, severity)


def _night(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    e = int(rng.integers(-24, 25))
    colour = np.array([32, 32, 64 + e], dtype=np.float64)
    x = image.astype(np.float64)
    flim = np.where(x.mean(axis=2, keepdims=True) > 128, 255 - x, x)
    return _blend(image, 0.8 * colour * x / 255 + 0.2 * flim, severity)


def _white(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    shift = rng.integers(-32, 33, size=3)
    return np.uint8(np.clip(np.round((255 + severity * shift / 5) * image / 255), 0, 255))


COLOUR_WARPS: dict[str, PeerFn] = {"darken": _darken, "sunset": _sunset, "night": _night, "white": _white}


def load() -> tuple[dict[str, dict[str, PeerFn]], dict[str, str]]:
    """(peer name -> corruption name -> fn) for every importable peer, and (peer name -> why not) for the rest."""
    peers: dict[str, dict[str, PeerFn]] = {}
    missing: dict[str, str] = {}
    for label, loader in (("imagecorruptions", _imagecorruptions), ("corrupt-tta", _corrupt_tta)):
        try:
            peers[label] = loader()
        except Exception as error:  # any import failure means "not installed here"
            missing[label] = f"{type(error).__name__}: {error}"
    if "imagecorruptions" in peers:
        peers = {"authors'": {**peers["imagecorruptions"], **COLOUR_WARPS}, **peers}
    else:
        missing["authors'"] = "needs imagecorruptions (ImageNet-C's functions)"
    return peers, missing


def single_thread() -> None:
    """One thread for the peers too: OpenCV's pool, when a peer has imported OpenCV."""
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(1)
