"""Unit tests of the weather corruptions (fog, frost, snow, spatter) and their helpers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from classification.training.corruptions import CORRUPTIONS, corrupt, corrupt_batch
from classification.training.corruptions import weather
from conftest import reference_image

WEATHER = ("fog", "frost", "snow", "spatter")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def photos(count: int = 2, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
    images = [reference_image(name) for name in ("astronaut", "chelsea", "coffee", "brick")[:count]]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device, dtype) / 255


def generator(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", WEATHER)
def test_shape_dtype_device_range_kept_and_input_untouched(name, dtype, device):
    x = photos(2, dtype, device)
    original = x.clone()
    for severity in range(1, 6):
        y = CORRUPTIONS[name](x, severity, generator(severity, device))
        assert torch.equal(x, original), "the input must not be modified"
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
        assert torch.isfinite(y).all()
        assert y.min() >= 0 and y.max() <= 1
        assert not torch.equal(y, x)


@pytest.mark.parametrize("name", WEATHER)
def test_same_seed_same_output_and_one_draw_per_image(name):
    x = photos(1).repeat(2, 1, 1, 1)
    first = corrupt_batch(x, name, 3, generator(7))
    assert torch.equal(first, corrupt_batch(x, name, 3, generator(7)))
    assert not torch.equal(first, corrupt_batch(x, name, 3, generator(8)))
    assert not torch.equal(first[0], first[1]), "two copies of one photo must get different draws"


@pytest.mark.parametrize("name", WEATHER)
def test_single_uint8_image_api(name):
    image = reference_image("chelsea")
    out = corrupt(image, name, 2, seed=3)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, corrupt(image, name, 2, seed=3))


@pytest.mark.parametrize("size", [(100, 150), (300, 420)])
@pytest.mark.parametrize("name", WEATHER)
def test_other_image_sizes(name, size):
    x = torch.rand(2, 3, *size, generator=generator(0))
    y = CORRUPTIONS[name](x, 5, generator(1))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def test_frost_textures_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weather.frost_textures.cache_clear()
    textures = weather.frost_textures()
    assert len(textures) == 6
    for texture in textures:
        assert texture.dtype == torch.uint8 and texture.shape[0] == 3
        assert min(texture.shape[1:]) >= 224
    assert weather.frost_textures() is textures  # decoded once


def test_frost_blends_a_random_crop_of_one_of_the_first_five_textures():
    """A black image at severity 1 (weights 1 and 0.4) becomes exactly 0.4 x a texture crop."""
    black = torch.zeros(1, 3, 224, 224, dtype=torch.float64)
    layer = weather.frost(black, 1, generator(0)) * 255 / weather.FROST[0][1]
    choice, u_top, u_left = torch.rand((1, 3), generator=generator(0), dtype=torch.float64)[0].tolist()
    texture = weather.frost_textures()[int(choice * weather.FROST_USED)]
    top = int(u_top * (texture.shape[1] - 224 + 1))
    left = int(u_left * (texture.shape[2] - 224 + 1))
    expected = texture[:, top : top + 224, left : left + 224].double()
    assert torch.allclose(layer[0], expected)
    choices = torch.rand(4000, generator=generator(1))
    assert set((choices * weather.FROST_USED).long().tolist()) == set(range(weather.FROST_USED))


def test_plasma_fractal_spans_zero_to_one_and_is_smooth():
    fractal = weather.plasma_fractal(3, 256, 2.0, generator(0), torch.zeros(1))
    assert fractal.shape == (3, 256, 256)
    assert torch.allclose(fractal.amin(dim=(1, 2)), torch.zeros(3))
    assert torch.allclose(fractal.amax(dim=(1, 2)), torch.ones(3))
    assert not torch.equal(fractal[0], fractal[1])
    neighbours = (fractal[:, 1:] - fractal[:, :-1]).abs().mean()
    assert neighbours < 0.1 * (fractal - fractal.mean(dim=(1, 2), keepdim=True)).abs().mean()


def plain_diamond_square(batch: int, size: int, decay: float, seed: int) -> torch.Tensor:
    """The textbook loop on a strided float64 grid, from the same float32 draws as the engine."""
    grid = torch.zeros(batch, size, size, dtype=torch.float64)
    steps = [size >> level for level in range(size.bit_length() - 1)]
    counts = [3 * (size // step) ** 2 for step in steps]
    draws = torch.rand((batch, sum(counts)), generator=generator(seed), dtype=torch.float32).double() * 2 - 1
    wibble = 100.0
    for step, u in zip(steps, draws.split(counts, dim=1)):
        half, n = step // 2, size // step
        jitter = u.reshape(batch, 3, n, n) * wibble * wibble
        corners = grid[:, ::step, ::step].clone()
        right, below = corners.roll(-1, 2), corners.roll(-1, 1)
        centres = (corners + right + below + below.roll(-1, 2)) / 4 + jitter[:, 0]
        grid[:, half::step, half::step] = centres
        grid[:, ::step, half::step] = (corners + right + centres + centres.roll(1, 1)) / 4 + jitter[:, 1]
        grid[:, half::step, ::step] = (corners + below + centres + centres.roll(1, 2)) / 4 + jitter[:, 2]
        wibble /= decay
    grid -= grid.amin(dim=(1, 2), keepdim=True)
    return grid / grid.amax(dim=(1, 2), keepdim=True)


@pytest.mark.parametrize(("batch", "size", "decay"), [(2, 256, 2.0), (1, 512, 1.4), (1, 8, 1.7), (1, 2, 2.0)])
def test_plasma_fractal_equals_the_plain_diamond_square_loop(batch, size, decay):
    """The lattice formulation and the first levels folded into one matrix change only float rounding."""
    fractal = weather.plasma_fractal(batch, size, decay, generator(3), torch.zeros(1))
    assert torch.allclose(fractal.double(), plain_diamond_square(batch, size, decay, 3), atol=1e-6)


def test_fog_never_exceeds_the_original_maximum():
    """(x + s*fractal) * max / (max + s) <= max, since x <= max and fractal <= 1."""
    x = photos(2) * 0.8
    y = weather.fog(x, 5, generator(0))
    assert (y.amax(dim=(1, 2, 3)) <= x.amax(dim=(1, 2, 3)) + 1e-6).all()


def test_snow_only_brightens():
    x = photos(2)
    y = weather.snow(x, 3, generator(0))
    assert (y >= x - 1e-6).all()


def test_spatter_water_adds_and_mud_darkens_toward_brown():
    x = photos(2)
    water = weather.spatter(x, 2, generator(0))
    assert (water >= x - 1e-6).all() and (water > x).any()
    mud = weather.spatter(x, 5, generator(0))
    changed = (mud - x).abs().sum(dim=1) > 0
    assert changed.any()
    brown = torch.tensor(weather.MUD_RGB).reshape(1, 3, 1, 1) / 255
    assert ((mud - brown).abs() <= (x - brown).abs() + 1e-6).all()


def test_truncated_distance_is_the_exact_euclidean_distance():
    edges = torch.rand(2, 1, 64, 80, generator=generator(3)) < 0.004
    edges[1] = False
    edges[1, 0, 10, 70] = True
    distance = weather.truncated_distance(edges, 20)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(80.0), indexing="ij")
    for image in range(2):
        points = edges[image, 0].nonzero().float()
        squared = (ys[..., None] - points[:, 0]) ** 2 + (xs[..., None] - points[:, 1]) ** 2
        expected = squared.amin(dim=-1).sqrt().clamp(max=20)
        assert torch.allclose(distance[image, 0], expected)
    nothing = weather.truncated_distance(torch.zeros(1, 1, 8, 8, dtype=torch.bool), 20)
    assert torch.equal(nothing, torch.full((1, 1, 8, 8), 20.0))


def test_truncated_distance_on_images_too_tall_for_int16():
    """Row indices past 2**14 leave the int16 range of the small-image path."""
    h = 20_000
    edges = torch.zeros(1, 1, h, 3, dtype=torch.bool)
    edges[0, 0, [5, h - 3], [0, 2]] = True
    distance = weather.truncated_distance(edges, 20)[0, 0]
    rows = torch.arange(h, dtype=torch.float32)[:, None]
    cols = torch.arange(3, dtype=torch.float32)[None, :]
    expected = torch.minimum(
        ((rows - 5) ** 2 + cols**2).sqrt(), ((rows - (h - 3)) ** 2 + (cols - 2) ** 2).sqrt()
    ).clamp(max=20)
    assert torch.allclose(distance, expected)


def test_equalize_histogram_follows_opencv():
    """lut[v] = round((cdf[v] - cdf[first]) * 255 / (N - cdf[first])), a constant image stays as is."""
    values = torch.tensor([3.0, 3.0, 5.0, 9.0, 9.0, 9.0, 12.0, 20.0]).reshape(1, 1, 2, 4)
    out = weather.equalize_histogram(values)
    # cdf: 3->2, 5->3, 9->6, 12->7, 20->8; first count 2; scale 255/6.
    expected = torch.tensor([0.0, 0.0, 42.0, 170.0, 170.0, 170.0, 212.0, 255.0]).reshape(1, 1, 2, 4)
    assert torch.equal(out, expected)
    constant = torch.full((1, 1, 3, 3), 7.0)
    assert torch.equal(weather.equalize_histogram(constant), constant)


def test_canny_outlines_a_square_and_drops_isolated_weak_edges():
    image = torch.zeros(1, 1, 32, 32)
    image[..., 8:24, 8:24] = 200.0  # strong step
    image[..., 2:4, 28:30] = 12.0  # a faint blob: gradient between the thresholds, no strong neighbour
    edges = weather.canny(image, 50.0, 150.0)
    assert edges[0, 0, 8:24, 7:9].any(dim=1).all()  # the left side is traced on every row
    assert not edges[0, 0, 12:20, 12:20].any()  # nothing inside the flat square
    assert not edges[0, 0, :6, 26:].any()  # the faint blob is discarded by hysteresis
    # A weak ramp touching a strong edge survives.
    ramp = torch.zeros(1, 1, 32, 32)
    ramp[..., :, 16:] = 200.0
    ramp[..., 20:, 16:] = 20.0  # below row 20 the step is weak
    traced = weather.canny(ramp, 10.0, 150.0)
    assert traced[0, 0, 25:30, 15:17].any(dim=1).all()
