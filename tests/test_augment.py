"""Batched per-sample augmentation against per-image torchvision references."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
import yaml

from ascl.augment import (
    AugmentConfig,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    hflip,
    pad_crop,
    resized_crop,
    sample_crop_boxes,
    simclr_view,
    to_grayscale,
    weak_view,
)

ROOT = Path(__file__).resolve().parents[1]
COLOR_ATOL = 1e-5
# Both sides bilinearly interpolate the same taps; only float rounding differs.
CROP_ATOL = 1e-5

IDENTITY = AugmentConfig(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip_p=0.0,
    jitter_p=0.0,
    grayscale_p=0.0,
    weak_padding=0,
)


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def images(b: int = 12, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Random images plus edge cases: constant gray, black, white, pure colours, clipped."""
    x = torch.rand(b, 3, h, w, generator=gen(seed))
    x[0] = 0.5
    x[1] = 0.0
    x[2] = 1.0
    x[3, 0], x[3, 1:] = 1.0, 0.0
    x[4, :, : h // 2] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]
    x[5] = (x[5] * 3 - 1).clamp(0, 1)
    return x


def only(**kwargs) -> AugmentConfig:
    return dataclasses.replace(IDENTITY, **kwargs)


# --- colour ops -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "ref", "low", "high"),
    [
        (adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
        (adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
        (adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
        (adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
    ids=["brightness", "contrast", "saturation", "hue"],
)
def test_color_op_matches_torchvision_per_sample(ours, ref, low, high):
    x = images()
    f = low + (high - low) * torch.rand(x.shape[0], generator=gen(1))
    f[0], f[1] = low, high
    expected = torch.stack([ref(x[i], float(f[i])) for i in range(x.shape[0])])
    got = ours(x, f)
    assert got.shape == x.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, expected, atol=COLOR_ATOL, rtol=0)


def test_to_grayscale_matches_torchvision_on_flagged_samples():
    x = images()
    mask = torch.arange(x.shape[0]) % 3 == 0
    got = to_grayscale(x, mask)
    for i in range(x.shape[0]):
        if mask[i]:
            ref = TF.rgb_to_grayscale(x[i], num_output_channels=3)
            torch.testing.assert_close(got[i], ref, atol=COLOR_ATOL, rtol=0)
        else:
            assert torch.equal(got[i], x[i])


def test_color_jitter_applies_brightness_contrast_saturation_hue_in_order():
    x = images()
    n = x.shape[0]
    g = gen(2)
    b, c, s = (0.6 + 0.8 * torch.rand(n, generator=g) for _ in range(3))
    h = 0.2 * torch.rand(n, generator=g) - 0.1
    expected = []
    for i in range(n):
        y = TF.adjust_brightness(x[i], float(b[i]))
        y = TF.adjust_contrast(y, float(c[i]))
        y = TF.adjust_saturation(y, float(s[i]))
        expected.append(TF.adjust_hue(y, float(h[i])))
    got = color_jitter(x, b, c, s, h)
    torch.testing.assert_close(got, torch.stack(expected), atol=COLOR_ATOL, rtol=0)


# --- geometric ops ----------------------------------------------------------------------------


def test_resized_crop_matches_torchvision_per_sample():
    x = images(b=40, h=32, w=32)
    boxes = sample_crop_boxes(40, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3), gen(3))
    boxes[:4] = torch.tensor([[0, 0, 1, 1], [31, 31, 1, 1], [0, 0, 32, 7], [5, 9, 20, 23]])
    got = resized_crop(x, boxes)
    for i in range(40):
        top, left, h, w = (int(v) for v in boxes[i])
        ref = TF.resized_crop(x[i], top, left, h, w, size=[32, 32], antialias=False)
        torch.testing.assert_close(got[i], ref, atol=CROP_ATOL, rtol=0)


def test_resized_crop_to_other_size_matches_torchvision():
    x = images(b=6, h=24, w=32)
    boxes = torch.tensor(
        [[0, 0, 24, 32], [2, 3, 20, 17], [0, 0, 5, 9], [10, 4, 14, 28], [1, 1, 8, 8], [0, 0, 1, 32]]
    )
    got = resized_crop(x, boxes, size=(16, 12))
    for i in range(6):
        top, left, h, w = (int(v) for v in boxes[i])
        ref = TF.resized_crop(x[i], top, left, h, w, size=[16, 12], antialias=False)
        torch.testing.assert_close(got[i], ref, atol=CROP_ATOL, rtol=0)


def test_resized_crop_identity_box_is_exact():
    x = images(b=6, h=24, w=32)
    boxes = torch.tensor([[0.0, 0.0, 24.0, 32.0]]).repeat(6, 1)
    assert torch.equal(resized_crop(x, boxes), x)


def test_pad_crop_matches_explicit_padding_and_slicing():
    x = images(b=10, h=16, w=20)
    p = 4
    offsets = torch.randint(0, 2 * p + 1, (10, 2), generator=gen(4))
    offsets[0], offsets[1] = torch.tensor([0, 0]), torch.tensor([2 * p, 2 * p])
    got = pad_crop(x, offsets, p)
    for i in range(10):
        padded = torch.zeros(3, 16 + 2 * p, 20 + 2 * p)
        padded[:, p : p + 16, p : p + 20] = x[i]
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        assert torch.equal(got[i], padded[:, dy : dy + 16, dx : dx + 20])


def test_hflip_flips_exactly_the_flagged_samples():
    x = images()
    mask = torch.rand(x.shape[0], generator=gen(5)) < 0.5
    mask[0], mask[1] = True, False
    got = hflip(x, mask)
    for i in range(x.shape[0]):
        assert torch.equal(got[i], torch.flip(x[i], dims=[-1]) if mask[i] else x[i])


def test_crop_boxes_are_integer_boxes_inside_the_image_within_scale_and_ratio():
    h, w = 32, 32
    boxes = sample_crop_boxes(2000, h, w, (0.08, 1.0), (3 / 4, 4 / 3), gen(6))
    top, left, bh, bw = boxes.unbind(1)
    assert torch.equal(boxes, boxes.round())
    assert bool((top >= 0).all() and (left >= 0).all())
    assert bool((bh >= 1).all() and (bw >= 1).all())
    assert bool((top + bh <= h).all() and (left + bw <= w).all())
    # Box sides are rounded to whole pixels, so area and ratio hold up to that rounding.
    area = bh * bw / (h * w)
    assert bool((area > 0.08 * 0.7).all() and (area <= 1.0).all())
    ratio = bw / bh
    assert bool((ratio > 0.75 * 0.8).all() and (ratio < 4 / 3 * 1.25).all())
    assert float(area.std()) > 0.1 and len(torch.unique(top)) > 20


def test_crop_boxes_fall_back_like_torchvision_when_no_attempt_fits():
    x = torch.zeros(3, 32, 32)
    scale, ratio = (1.0, 1.0), (2.0, 3.0)  # every attempt is wider than the image
    expected = torch.tensor(T.RandomResizedCrop.get_params(x, list(scale), list(ratio)))
    boxes = sample_crop_boxes(8, 32, 32, scale, ratio, gen(7))
    assert torch.equal(boxes, expected.float().expand(8, 4))


# --- views ------------------------------------------------------------------------------------


@pytest.mark.parametrize("view", [simclr_view, weak_view])
def test_views_differ_per_sample_of_identical_images(view):
    b = 16
    x = torch.rand(1, 3, 32, 32, generator=gen(8)).expand(b, 3, 32, 32).contiguous()
    out = view(x, AugmentConfig(), gen(9))
    distinct = len({tuple(o.flatten().tolist()) for o in out})
    # The weak view has 81 offsets x 2 flips, so a few samples of 16 may coincide.
    assert distinct == b if view is simclr_view else distinct >= b // 2


@pytest.mark.parametrize("view", [simclr_view, weak_view])
def test_two_views_of_a_batch_differ(view):
    x = torch.rand(12, 3, 32, 32, generator=gen(23))
    g = gen(10)
    v1, v2 = view(x, AugmentConfig(), g), view(x, AugmentConfig(), g)
    differs = (v1 != v2).flatten(1).any(1)
    assert float(differs.float().mean()) >= (1.0 if view is simclr_view else 0.5)


@pytest.mark.parametrize("view", [simclr_view, weak_view])
def test_same_seed_gives_identical_views_and_state_restores(view):
    x = images()
    cfg = AugmentConfig()
    assert torch.equal(view(x, cfg, gen(11)), view(x, cfg, gen(11)))
    g = gen(12)
    view(x, cfg, g)
    state = g.get_state()
    after = view(x, cfg, g)
    g.set_state(state)
    assert torch.equal(view(x, cfg, g), after)


def test_random_consumption_does_not_depend_on_config_or_content():
    g1, g2 = gen(13), gen(13)
    simclr_view(images(seed=1), AugmentConfig(), g1)
    simclr_view(images(seed=2), IDENTITY, g2)
    assert torch.equal(g1.get_state(), g2.get_state())


def _asymmetric(b: int) -> torch.Tensor:
    x = torch.rand(1, 3, 8, 8, generator=gen(14))
    return x.expand(b, 3, 8, 8).contiguous()


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_flip_fraction_matches_flip_p(p):
    b = 4000
    x = _asymmetric(b)
    for view in (simclr_view, weak_view):
        out = view(x, only(flip_p=p), gen(15))
        flipped = (out == x.flip(-1)).flatten(1).all(1)
        kept = (out == x).flatten(1).all(1)
        assert bool((flipped ^ kept).all())
        assert abs(float(flipped.float().mean()) - p) < 0.04


def test_grayscale_fraction_matches_grayscale_p():
    b = 4000
    x = _asymmetric(b)
    out = simclr_view(x, only(grayscale_p=0.3), gen(16))
    gray = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    assert bool(((out == x).flatten(1).all(1) ^ gray).all())
    assert abs(float(gray.float().mean()) - 0.3) < 0.04


def test_jitter_fraction_matches_jitter_p():
    b = 4000
    x = _asymmetric(b)
    cfg = only(jitter_p=0.7, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    out = simclr_view(x, cfg, gen(17))
    jittered = (out != x).flatten(1).any(1)
    assert abs(float(jittered.float().mean()) - 0.7) < 0.04


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (7, 3, 16, 16), (5, 3, 24, 32)])
@pytest.mark.parametrize("view", [simclr_view, weak_view])
def test_views_keep_shape_dtype_and_range(view, shape, dtype):
    x = torch.rand(shape, generator=gen(18)).to(dtype)
    cfg = AugmentConfig(brightness=0.9, contrast=0.9, saturation=0.9, hue=0.5, jitter_p=1.0)
    out = view(x, cfg, gen(19))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert bool(torch.isfinite(out).all()) and float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize("view", [simclr_view, weak_view])
def test_zero_strength_config_is_identity(view):
    x = images(b=9)
    assert torch.equal(view(x, IDENTITY, gen(20)), x)


def test_views_reject_integer_images():
    with pytest.raises(TypeError):
        simclr_view(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), AugmentConfig(), gen())


# --- config -----------------------------------------------------------------------------------


def test_config_from_project_params_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = AugmentConfig.from_dict(params["augment"])
    assert isinstance(cfg.crop_scale, tuple) and isinstance(cfg.crop_ratio, tuple)
    assert cfg.crop_scale == (0.08, 1.0) and cfg.weak_padding == 4
    hash(cfg)


def test_config_from_dict_rejects_unknown_key_by_name():
    with pytest.raises(ValueError, match="crop_scael"):
        AugmentConfig.from_dict({"crop_scael": [0.1, 1.0]})


@pytest.mark.parametrize(
    "bad",
    [
        {"flip_p": 1.5},
        {"crop_scale": (0.5, 0.2)},
        {"crop_scale": (0.5, 1.2)},
        {"crop_ratio": (0.0, 1.0)},
        {"hue": 0.6},
        {"brightness": -0.1},
        {"weak_padding": -1},
    ],
)
def test_config_rejects_invalid_values(bad):
    with pytest.raises(ValueError):
        AugmentConfig.from_dict(bad)


# --- CUDA -------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("view", [simclr_view, weak_view])
def test_cuda_images_with_cpu_or_cuda_generator(view):
    x = images()
    cfg = AugmentConfig()
    on_cpu = view(x, cfg, gen(21))
    on_cuda = view(x.cuda(), cfg, gen(21))
    assert on_cuda.device.type == "cuda"
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, atol=CROP_ATOL, rtol=0)
    g = gen(22, "cuda")
    first = view(x.cuda(), cfg, g)
    assert first.device.type == "cuda" and first.shape == x.shape
    assert torch.equal(view(x.cuda(), cfg, gen(22, "cuda")), first)
