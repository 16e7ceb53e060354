"""Public API of the corruption engine: names, validation, determinism, batching, dtypes;
and the shared filters and the vectorised glass-blur shuffle against slow direct implementations."""
from __future__ import annotations

import io
import math
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from classification.errors import UserInputError
from classification.training.corruptions import (
    CORRUPTIONS,
    IMAGENET_C,
    TRAINING_SET,
    TRAINING_SET_NO_COLOR,
    corrupt,
    corrupt_batch,
    filters,
    sample_corruption,
)
from classification.training.corruptions.blur import shuffle_sources
from classification.training.corruptions.registry import ARRAY_CORRUPTIONS
from conftest import reference_image

pytestmark = pytest.mark.usefixtures("single_thread")

ALL = sorted(CORRUPTIONS)
DETERMINISTIC = [
    "brightness", "contrast", "darken", "defocus_blur", "gaussian_blur", "grayscale", "invert",
    "jpeg_compression", "pixelate", "saturate", "zoom_blur",
]  # fmt: skip


def as_batch(*images: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.stack([torch.from_numpy(image.copy()).permute(2, 0, 1) for image in images]).to(dtype) / 255


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return reference_image("astronaut")


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return reference_image("chelsea")


# ----------------------------------------------------------------------------- names and sets


def test_sets():
    assert len(TRAINING_SET) == 23 and len(set(TRAINING_SET)) == 23
    assert TRAINING_SET[:4] == ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur")
    assert TRAINING_SET[-4:] == ("darken", "sunset", "night", "white")
    assert TRAINING_SET_NO_COLOR == TRAINING_SET[:19]
    assert IMAGENET_C == TRAINING_SET[:15] and "gaussian_blur" not in IMAGENET_C
    assert set(CORRUPTIONS) == set(TRAINING_SET) | {"invert", "grayscale"}


def test_sample_corruption_is_uniform_over_names_and_severities():
    rng = random.Random(0)
    draws = [sample_corruption(rng, TRAINING_SET) for _ in range(3000)]
    assert {name for name, _ in draws} == set(TRAINING_SET)
    assert {severity for _, severity in draws} == set(range(6))
    assert sample_corruption(random.Random(1), ["darken"])[0] == "darken"


# ----------------------------------------------------------------------------- validation


def test_unknown_name_lists_valid_names(astronaut):
    with pytest.raises(ValueError, match="unknown corruption 'fogg'.*gaussian_noise"):
        corrupt(astronaut, "fogg", 1)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt_batch(as_batch(astronaut), ["nope"], [1])


@pytest.mark.parametrize("severity", [-1, 6, 1.5, "2", True])
def test_bad_severity(astronaut, severity):
    with pytest.raises(ValueError, match="severity"):
        corrupt(astronaut, "contrast", severity)


@pytest.mark.parametrize(
    ("image", "given"),
    [
        (np.zeros((8, 8, 3), np.float32), r"\(8, 8, 3\) float32 array"),
        (np.zeros((8, 8), np.uint8), r"\(8, 8\) uint8 array"),
        (np.zeros((3, 8, 8), np.uint8), r"\(3, 8, 8\) uint8 array"),
        ([[0, 1]], "list"),
    ],
)
def test_bad_single_image(image, given):
    with pytest.raises(ValueError, match=f"HxWx3 uint8 .*got .*{given}"):
        corrupt(image, "contrast", 1)


@pytest.mark.parametrize("name", ["jpeg_compression", "defocus_blur", "fog", "pixelate"])
@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0, 3)])
def test_empty_images_are_refused(name, shape):
    """They crashed deep inside (jpeg_compression: a segmentation fault in libjpeg) or raised obscurely."""
    with pytest.raises(ValueError, match=rf"at least one pixel, got .*{re.escape(str(shape))}"):
        corrupt(np.zeros(shape, np.uint8), name, 3)
    batch = torch.zeros(2, 3, *shape[:2])
    with pytest.raises(ValueError, match=rf"at least one pixel, got a {re.escape(str(tuple(batch.shape)))} tensor"):
        corrupt_batch(batch, name, 3)


@pytest.mark.parametrize("name", ALL)
def test_tiny_images(name):
    """Every corruption at every severity on images of 1 to 9 pixels a side (glass_blur's shuffle and
    pixelate's downscale failed under a few pixels)."""
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (1, 7), (7, 1), (2, 3), (4, 4), (9, 5)):
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        for severity in range(1, 6):
            out = corrupt(image, name, severity, seed=severity)
            assert out.shape == image.shape and out.dtype == np.uint8, (shape, severity)


def test_pil_images(astronaut):
    assert np.array_equal(corrupt(Image.fromarray(astronaut), "contrast", 2), corrupt(astronaut, "contrast", 2))
    with pytest.raises(ValueError, match="RGB PIL image, got mode 'L'"):
        corrupt(Image.fromarray(astronaut).convert("L"), "contrast", 1)


@pytest.mark.parametrize(
    ("images", "given"),
    [
        (torch.zeros(2, 1, 8, 8), r"\(2, 1, 8, 8\) torch.float32 tensor"),
        (torch.zeros(3, 8, 8), r"\(3, 8, 8\) torch.float32 tensor"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), r"torch.uint8 tensor"),
        (np.zeros((1, 3, 8, 8), np.float32), "ndarray"),
    ],
)
def test_bad_batch(images, given):
    with pytest.raises(ValueError, match=f"Bx3xHxW floating-point tensor .*got .*{given}"):
        corrupt_batch(images, ["contrast"], [1])


def test_batch_needs_one_name_and_severity_per_image(astronaut):
    x = as_batch(astronaut, astronaut)
    with pytest.raises(ValueError, match=r"one corruption name per image \(2\), got 3"):
        corrupt_batch(x, ["contrast"] * 3, [1, 1])
    with pytest.raises(ValueError, match=r"one severity per image \(2\), got 1"):
        corrupt_batch(x, ["contrast", "contrast"], [1])


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_output_and_severity_zero_unchanged(name, astronaut):
    first = corrupt(astronaut, name, 3, seed=7)
    assert first.shape == astronaut.shape and first.dtype == np.uint8
    assert first.flags.writeable  # the caller owns the result (torch.from_numpy warns on read-only arrays)
    assert np.array_equal(first, corrupt(astronaut, name, 3, seed=7))
    assert not np.array_equal(first, astronaut)
    assert np.array_equal(corrupt(astronaut, name, 0, seed=7), astronaut)


@pytest.mark.parametrize("name", sorted(set(ALL) - set(DETERMINISTIC)))
def test_random_corruptions_depend_on_the_seed(name, astronaut):
    assert not np.array_equal(corrupt(astronaut, name, 4, seed=1), corrupt(astronaut, name, 4, seed=2))


@pytest.mark.parametrize("name", ALL)
def test_single_image_equals_batch_of_one(name, astronaut):
    batch = corrupt_batch(as_batch(astronaut), [name], [2], torch.Generator().manual_seed(5))
    single = corrupt(astronaut, name, 2, seed=5)
    assert np.array_equal((batch[0] * 255).round().byte().permute(1, 2, 0).numpy(), single)


@pytest.mark.parametrize("name", sorted(ARRAY_CORRUPTIONS))
def test_per_image_paths_equal_the_tensor_implementations(name, astronaut):
    rng = np.random.default_rng(0)
    images = [
        astronaut,
        rng.integers(0, 256, (61, 90, 3), dtype=np.uint8),  # odd sizes, every level
        np.zeros((7, 9, 3), np.uint8),  # black: brightness turns it grey, fog's peak is 0
        np.full((7, 9, 3), 255, np.uint8),
    ]
    for severity in range(1, 6):
        for image in images:
            batch = corrupt_batch(as_batch(image), name, severity, torch.Generator().manual_seed(severity))
            expected = (batch[0] * 255).round().byte().permute(1, 2, 0).numpy()
            single = corrupt(image, name, severity, seed=severity)
            assert np.array_equal(single, expected), (name, severity, image.shape)


def test_read_only_images_give_no_warning():
    """An array viewed from a PIL image is read-only; torch warns (once per process, hence the fresh
    process) when such memory is wrapped, which a per-image path must not do."""
    code = (
        "import numpy as np\n"
        "from PIL import Image\n"
        "from classification.training.corruptions import CORRUPTIONS, corrupt\n"
        "image = np.asarray(Image.fromarray(np.full((40, 48, 3), 90, np.uint8)))\n"
        "assert not image.flags.writeable\n"
        "for name in sorted(CORRUPTIONS):\n"
        "    out = corrupt(image, name, 3, seed=0)\n"
        "    assert out.flags.writeable, name\n"
    )
    done = subprocess.run(
        # Every warning a user would see is an error (DeprecationWarnings are hidden by default).
        [sys.executable, "-W", "error", "-W", "ignore::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("severity", range(1, 6))
def test_jpeg_compression_is_a_pil_round_trip(severity, astronaut):
    quality = (25, 18, 15, 10, 7)[severity - 1]
    noise = np.random.default_rng(1).integers(0, 256, (61, 90, 3), dtype=np.uint8)
    images = (
        astronaut,
        noise,
        noise[::-1, 1::2],  # strided and flipped memory
        noise[:1, :1],  # one pixel
        np.full((17, 8, 3), (255, 0, 128), np.uint8),  # flat colour, odd size
    )
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        expected = np.asarray(Image.open(buffer).convert("RGB"))
        assert np.array_equal(corrupt(image, "jpeg_compression", severity), expected)


def test_mixed_batch_equals_single_images(astronaut, chelsea):
    names = ["contrast", "zoom_blur", "contrast", "pixelate", "darken", "brightness"]
    severities = [1, 2, 5, 3, 0, 4]
    images = [astronaut, chelsea] * 3
    out = corrupt_batch(as_batch(*images), names, severities, torch.Generator().manual_seed(0))
    for i, (image, name, severity) in enumerate(zip(images, names, severities)):
        expected = corrupt(image, name, severity)
        assert np.array_equal((out[i] * 255).round().byte().permute(1, 2, 0).numpy(), expected), (i, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ALL)
def test_dtype_shape_and_uint8_grid(name, dtype, astronaut, chelsea):
    x = as_batch(astronaut, chelsea, dtype=dtype)
    out = corrupt_batch(x, name, [3, 5], torch.Generator().manual_seed(0))
    assert out.dtype == dtype and out.shape == x.shape and out.device == x.device
    assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, (out * 255).round() / 255)


def test_input_batch_is_not_modified(astronaut, chelsea):
    x = as_batch(astronaut, chelsea)
    before = x.clone()
    corrupt_batch(x, ["glass_blur", "brightness"], [5, 3], torch.Generator().manual_seed(0))
    assert torch.equal(x, before)


def test_half_precision_batches_keep_their_dtype(astronaut):
    x = as_batch(astronaut, dtype=torch.bfloat16)
    out = corrupt_batch(x, ["defocus_blur"], [2], torch.Generator().manual_seed(0))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape


def test_severities_as_tensor_or_array(astronaut):
    x = as_batch(astronaut, astronaut)
    expected = corrupt_batch(x, ["contrast", "darken"], [1, 2])
    assert torch.equal(corrupt_batch(x, ["contrast", "darken"], torch.tensor([1, 2])), expected)
    assert torch.equal(corrupt_batch(x, np.array(["contrast", "darken"]), np.array([1, 2])), expected)


@pytest.mark.parametrize("name", ALL)
def test_other_image_sizes(name):
    image = np.random.default_rng(0).integers(0, 256, (61, 90, 3), dtype=np.uint8)
    for severity in (1, 5):
        assert corrupt(image, name, severity, seed=0).shape == image.shape


# ----------------------------------------------------------------------------- filters


@pytest.mark.parametrize(("border", "numpy_mode"), [("replicate", "edge"), ("reflect", "reflect"), ("symmetric", "symmetric")])
@pytest.mark.parametrize("sigma", [0.7, 2.5, 9.0])  # 9.0: radius 36 > the 20-pixel side, dense path
def test_gaussian_filter_matches_direct_convolution(border, numpy_mode, sigma):
    image = np.random.default_rng(0).random((2, 3, 20, 23))
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    expected = image
    for axis in (2, 3):
        width = [(0, 0)] * 4
        width[axis] = (radius, radius)
        padded = np.pad(expected, width, mode=numpy_mode)  # repeats the reflection for wide pads
        expected = sum(
            taps[k] * np.take(padded, range(k, k + image.shape[axis]), axis=axis) for k in range(2 * radius + 1)
        )
    out = filters.gaussian_filter(torch.from_numpy(image), sigma, border)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)


def test_motion_blur_matches_direct_sum():
    image = torch.rand(3, 3, 17, 21, dtype=torch.float64)
    angles = torch.tensor([-45.0, 12.5, 130.0], dtype=torch.float64)
    out = filters.motion_blur(image, 4, 2.0, angles)
    weights = np.exp(-(np.arange(9) ** 2) / 8.0)
    weights /= weights.sum()
    for b, angle in enumerate(angles.tolist()):
        expected = np.zeros((3, 17, 21))
        for i, weight in enumerate(weights):
            dx = math.ceil(i * math.cos(math.radians(angle)) - 0.5)
            dy = math.ceil(i * math.sin(math.radians(angle)) - 0.5)
            rows = np.clip(np.arange(17) + dy, 0, 16)
            cols = np.clip(np.arange(21) + dx, 0, 20)
            expected += weight * image[b].numpy()[:, rows][:, :, cols]
        np.testing.assert_allclose(out[b].numpy(), expected, atol=1e-12)


def test_clipped_zoom_identity_and_centre():
    x = torch.rand(1, 2, 30, 40, dtype=torch.float64)
    assert torch.equal(filters.clipped_zoom(x, 1.0), x)
    constant = torch.full((1, 1, 9, 9), 0.25, dtype=torch.float64)
    assert torch.allclose(filters.clipped_zoom(constant, 1.7), constant)


def test_hsv_round_trip_and_known_values():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    assert torch.allclose(filters.hsv_to_rgb(filters.rgb_to_hsv(x)), x, atol=1e-12)
    pixels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.2, 0.2, 0.2]], dtype=torch.float64)
    hsv = filters.rgb_to_hsv(pixels.T.reshape(1, 3, 1, 3))[0, :, 0].T
    expected = torch.tensor([[0.0, 1.0, 1.0], [0.5, 1.0, 0.5], [0.0, 0.0, 0.2]], dtype=torch.float64)
    assert torch.allclose(hsv, expected)


@pytest.mark.parametrize("severity", range(1, 6))
def test_hsv_corruptions_equal_the_hsv_round_trip(severity):
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    x[0, :, 0, 0] = 0.0  # black
    x[0, :, 1, 1] = 0.5  # grey
    hsv = filters.rgb_to_hsv(x)
    hsv[:, 2] = (hsv[:, 2] + (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]).clamp(0, 1)
    assert torch.allclose(CORRUPTIONS["brightness"](x, severity, None), filters.hsv_to_rgb(hsv), atol=1e-12)
    scale, offset = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))[severity - 1]
    hsv = filters.rgb_to_hsv(x)
    hsv[:, 1] = (hsv[:, 1] * scale + offset).clamp(0, 1)
    assert torch.allclose(CORRUPTIONS["saturate"](x, severity, None), filters.hsv_to_rgb(hsv), atol=1e-12)


# ----------------------------------------------------------------------------- glass blur


def sequential_shuffle(image: np.ndarray, d: int, offsets: np.ndarray) -> np.ndarray:
    """The reference's loop, verbatim semantics: a NumPy tuple "swap" of views, pixel by pixel."""
    x = image.copy()
    h, w = x.shape[:2]
    step = 0
    for row in range(h - d, d, -1):
        for col in range(w - d, d, -1):
            dx, dy = offsets[step]
            step += 1
            x[row, col], x[row + dy, col + dx] = x[row + dy, col + dx], x[row, col]
    return x


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_vectorised_shuffle_equals_sequential_loop(d):
    rng = np.random.default_rng(d)
    h, w = 37, 45
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    steps = (h - 2 * d) * (w - 2 * d)
    offsets = rng.integers(-d, d, (2, steps, 2))
    sources = shuffle_sources(h, w, d, torch.from_numpy(offsets[..., 1] * w + offsets[..., 0]))
    for b in range(2):
        expected = sequential_shuffle(image, d, offsets[b])
        out = image.reshape(h * w, 3)[sources[b].numpy()].reshape(h, w, 3)
        assert np.array_equal(out, expected)


def test_glass_blur_statistics_match_the_sequential_reference():
    """Whole corruption vs the slow loop fed NumPy draws: the mean |change| and the high-frequency
    energy agree (the draws differ, so only the statistics can)."""
    image = reference_image("chelsea")[:96, :96]
    clean = image.astype(np.float64)
    x = as_batch(image, dtype=torch.float64)

    def laplacian_energy(a: np.ndarray) -> float:
        return float((a[1:-1, :-2] + a[1:-1, 2:] + a[:-2, 1:-1] + a[2:, 1:-1] - 4 * a[1:-1, 1:-1]).var())

    rng = np.random.default_rng(0)
    for severity, (sigma, d, iterations) in [(2, (0.9, 2, 1)), (5, (1.5, 4, 2))]:
        ours, slow = [], []
        for draw in range(8):
            out = corrupt_batch(x, ["glass_blur"], [severity], torch.Generator().manual_seed(draw))
            ours.append((out[0].permute(1, 2, 0).numpy() * 255).round())
            blurred = filters.gaussian_filter1d(filters.gaussian_filter1d(x, sigma, -2), d, -1)
            mixing = filters.filter_matrix(
                3, tuple(filters.gaussian_kernel1d(iterations, int(4 * iterations + 0.5)).tolist()), "replicate"
            )
            blurred = torch.einsum("oc,bchw->bohw", mixing, blurred)
            shuffled = (blurred[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            for _ in range(iterations):
                steps = (96 - 2 * d) ** 2
                shuffled = sequential_shuffle(shuffled, d, rng.integers(-d, d, (steps, 2)))
            final = filters.gaussian_filter(torch.from_numpy(shuffled / 255.0).permute(2, 0, 1)[None], sigma)
            slow.append((final[0].permute(1, 2, 0).numpy().clip(0, 1) * 255).round())
        for stat in (lambda a: np.abs(a - clean).mean(), laplacian_energy):
            ours_mean = np.mean([stat(a) for a in ours])
            slow_mean = np.mean([stat(a) for a in slow])
            assert ours_mean == pytest.approx(slow_mean, rel=0.08), (severity, ours_mean, slow_mean)


# ----------------------------------------------------------------------------- shot noise


def test_shot_noise_sampler_is_poisson():
    """The alias-table sampler: mean and variance of the photon counts equal the Poisson rate."""
    level, photons = 100, 25  # severity 2; rate 9.8, so clipping at 25 photons is negligible
    x = torch.full((1, 3, 200, 200), level / 255)
    counts = CORRUPTIONS["shot_noise"](x, 2, torch.Generator().manual_seed(0)) * photons
    rate = level * photons / 255
    assert counts.mean().item() == pytest.approx(rate, rel=0.01)
    assert counts.var().item() == pytest.approx(rate, rel=0.03)
    assert torch.allclose(counts, counts.round(), atol=1e-4)


@pytest.mark.parametrize("make, message", [
    (lambda x: x * 255, r"go up to 25\d(\.\d+)?; 0\.\.255 pixel values\? divide them by 255 first"),
    (lambda x: (x - 0.45) / 0.225, r"go down to -\d(\.\d+)?; ImageNet-normalised\? undo it first"),
    (lambda x: x.index_put((torch.tensor([1]), torch.tensor([0]), torch.tensor([3]), torch.tensor([2])),
                           torch.tensor(float("nan"))), r"hold NaN \(first in image 1\); replace the NaN pixels first"),
    (lambda x: x * 1000, r"range from [\d.e+-]+ to [\d.e+-]+; rescale them to \[0, 1\] first"),
])
def test_batches_outside_zero_one_are_refused_in_one_sentence(make, message):
    """0..255 values came out all white, normalised ones silently clipped, one NaN pixel spread over its image."""
    images = make(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(UserInputError, match=r"^images must be RGB values in \[0, 1\] but " + message):
        corrupt_batch(images, "fog", 3)


@pytest.mark.parametrize("seed", [2**64, 1.5, -1, "7", True])
def test_seeds_outside_the_generator_range_are_one_sentence(seed):
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(UserInputError, match=r"seed must be None or an integer from 0 to 2\*\*64 - 1"):
        corrupt(image, "gaussian_noise", 1, seed=seed)
    assert corrupt(image, "gaussian_noise", 1, seed=2**64 - 1).shape == image.shape
