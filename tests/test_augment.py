"""ADA augmentation pipeline and adaptive p (op3d.training.augment): exactness of the pixel-blitting group, colour
matrix algebra, the resampler's alignment, joint 6-channel transforms, gradients, and the ADA update rule."""

from __future__ import annotations

import math

import pytest
import torch

from op3d.training.augment import (AdaptiveAugment, AugmentPipe, augment_pipe_kwargs, brightness_shift,
                                   hue_rotation, luma_flip, resample, rotate2d, saturation_scale, translate2d)


def smooth_images(batch: int = 4, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Band-limited random images in about [-1, 1]: [batch, channels, size, size]."""
    gen = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    a = torch.rand([batch, channels, 5, 1, 1], generator=gen)
    return torch.sin(3 * a[:, :, 0] * x + 2 * a[:, :, 1] * y + 6 * a[:, :, 2]) * torch.cos(2 * a[:, :, 3] * x - y)


def pipe_with(p: float, **strengths) -> AugmentPipe:
    pipe = AugmentPipe(**strengths)
    pipe.p.fill_(p)
    return pipe


def test_p_zero_is_exact_identity():
    x = smooth_images()
    pipe = AugmentPipe(**augment_pipe_kwargs("bgc"))
    assert pipe(x) is x


def test_xflip_gives_input_or_its_mirror_image():
    torch.manual_seed(1)
    x = smooth_images(batch=16)
    out = pipe_with(1, xflip=1)(x)
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)


def test_xflip_probability_is_strength_times_p():
    torch.manual_seed(2)
    n = 4000
    x = torch.arange(4.0).repeat(n, 3, 4, 1)  # every row 0, 1, 2, 3
    out = pipe_with(0.25, xflip=1)(x)
    fraction = (out[:, 0, 0, 0] == 3).float().mean().item()
    expected = 0.25 * 0.5  # the flip is drawn with p, and then flips with probability 1/2
    assert abs(fraction - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_rotate90_gives_one_of_the_four_quarter_turns():
    torch.manual_seed(3)
    x = smooth_images(batch=16)
    out = pipe_with(1, rotate90=1)(x)
    seen = set()
    for o, xi in zip(out, x):
        errors = [(o - torch.rot90(xi, k, dims=(1, 2))).abs().max().item() for k in range(4)]
        assert min(errors) < 1e-4
        seen.add(errors.index(min(errors)))
    assert len(seen) > 1


def test_xint_is_an_integer_shift_away_from_the_borders():
    torch.manual_seed(4)
    size = 32
    x = smooth_images(batch=8, size=size)
    out = pipe_with(1, xint=1)(x)
    limit = round(0.125 * size)
    inner = (slice(None), slice(limit, size - limit), slice(limit, size - limit))
    for o, xi in zip(out, x):
        matches = [(dy, dx) for dy in range(-limit, limit + 1) for dx in range(-limit, limit + 1)
                   if torch.equal(o[inner], torch.roll(xi, (dy, dx), dims=(1, 2))[inner])]
        assert len(matches) == 1


def test_brightness_adds_one_constant_per_sample():
    torch.manual_seed(5)
    x = smooth_images(batch=8)
    diff = pipe_with(1, brightness=1)(x) - x
    spread = diff.flatten(1).amax(1) - diff.flatten(1).amin(1)
    assert spread.max() < 1e-6
    assert diff.flatten(1)[:, 0].abs().min() > 0


def test_contrast_scales_about_mid_grey_so_zero_mean_images_keep_their_mean():
    torch.manual_seed(6)
    x = smooth_images(batch=8)
    x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    out = pipe_with(1, contrast=1)(x)
    factor = (out * x).flatten(1).sum(1) / x.square().flatten(1).sum(1)  # least-squares out = c x
    torch.testing.assert_close(out, factor[:, None, None, None] * x, atol=1e-6, rtol=0)
    assert (factor > 0).all()
    assert out.mean(dim=(1, 2, 3)).abs().max() < 1e-6


def test_colour_matrix_algebra():
    one, eye = torch.ones(1), torch.eye(4)[None]
    torch.testing.assert_close(luma_flip(one) @ luma_flip(one), eye)
    torch.testing.assert_close(luma_flip(torch.zeros(1)), eye)
    grey, red = torch.tensor([0.3, 0.3, 0.3, 1.0]), torch.tensor([0.5, -0.5, -0.5, 1.0])
    torch.testing.assert_close(luma_flip(one)[0] @ grey, torch.tensor([-0.3, -0.3, -0.3, 1.0]))
    theta = torch.tensor([0.7])
    rot = hue_rotation(theta)[0, :3, :3]
    torch.testing.assert_close(rot @ rot.T, torch.eye(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(hue_rotation(theta) @ hue_rotation(-theta), eye, atol=1e-6, rtol=0)
    torch.testing.assert_close(hue_rotation(theta)[0] @ grey, grey)
    torch.testing.assert_close(hue_rotation(torch.tensor([2 * math.pi / 3]))[0] @ red,
                               torch.tensor([-0.5, 0.5, -0.5, 1.0]), atol=1e-6, rtol=0)  # r -> g -> b
    torch.testing.assert_close(saturation_scale(torch.zeros(1))[0] @ red, torch.tensor([-1 / 6] * 3 + [1.0]))
    torch.testing.assert_close(saturation_scale(one), eye)
    torch.testing.assert_close(brightness_shift(torch.tensor([0.1]))[0] @ grey, torch.tensor([0.4, 0.4, 0.4, 1.0]))


def test_six_channel_input_gets_one_transform_per_sample():
    torch.manual_seed(7)
    x = smooth_images(batch=6)
    out = pipe_with(1, **augment_pipe_kwargs("bgc"))(torch.cat([x, x], dim=1))
    assert out.shape == (6, 6, 32, 32)
    torch.testing.assert_close(out[:, :3], out[:, 3:], atol=1e-6, rtol=0)
    assert (out[:, :3] - x).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_gradients_reach_the_images():
    torch.manual_seed(8)
    x = smooth_images(batch=4).requires_grad_(True)
    pipe_with(1, **augment_pipe_kwargs("bgc"))(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_resampler_matches_integer_shifts_and_quarter_turns_in_the_interior():
    x = smooth_images(batch=2, size=48)
    inner = (slice(None), slice(None), slice(12, 36), slice(12, 36))
    shift = resample(x, translate2d(torch.full([2], 3.0), torch.full([2], -2.0)))
    torch.testing.assert_close(shift[inner], torch.roll(x, (2, -3), dims=(2, 3))[inner], atol=1e-3, rtol=0)
    turn = resample(x, rotate2d(torch.full([2], math.pi / 2)))
    errors = [(turn - torch.rot90(x, k, dims=(2, 3)))[inner].abs().max().item() for k in range(4)]
    assert min(errors) < 1e-3


def test_general_geometric_leaves_undrawn_samples_bit_exact():
    torch.manual_seed(9)
    x = smooth_images(batch=16)
    out = pipe_with(0.3, scale=1, rotate=1, aniso=1, xfrac=1)(x)
    unchanged = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert any(unchanged) and not all(unchanged)
    assert torch.isfinite(out).all()


def test_ada_update_step_direction_and_floor():
    pipe = AugmentPipe(**augment_pipe_kwargs("bgc"))
    pipe.p.fill_(0.5)
    ada = AdaptiveAugment(target=0.6, interval=4, kimg=500)
    step = 32 * 4 / (500 * 1000)
    assert ada.step_size(32) == step
    assert ada.is_due(4) and ada.is_due(8) and not ada.is_due(3)
    ada.accumulate(torch.tensor([[1.0], [2.0], [3.0], [4.0], [-1.0]]))  # mean sign 0.6: no change
    ada.update(pipe, 32)
    assert pipe.p.item() == 0.5
    ada.accumulate(torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0]))  # mean sign 0.6 again, but the accumulator was reset
    ada.accumulate(torch.tensor([1.0, 1.0]))  # mean sign 5/7 > target: up
    ada.update(pipe, 32)
    assert pipe.p.item() == torch.tensor(0.5 + step, dtype=torch.float32).item()
    assert ada.accum.tolist() == [0.0, 0.0]
    ada.accumulate(torch.tensor([-1.0, 1.0]))  # mean sign 0: down
    ada.update(pipe, 32)
    assert pipe.p.item() == pytest.approx(0.5, abs=1e-7)
    pipe.p.fill_(step / 2)
    ada.accumulate(-torch.ones(8))
    ada.update(pipe, 32)
    assert pipe.p.item() == 0.0
    ada.update(pipe, 32)  # nothing accumulated: no change
    assert pipe.p.item() == 0.0


def test_state_dict_round_trip():
    pipe = AugmentPipe(**augment_pipe_kwargs("bgc"))
    pipe.p.fill_(0.37)
    assert set(pipe.state_dict()) == {"p"}
    restored = AugmentPipe(**pipe.init_kwargs)
    restored.load_state_dict(pipe.state_dict())
    assert restored.p.item() == pytest.approx(0.37)
    ada = AdaptiveAugment()
    ada.accumulate(torch.tensor([1.0, -1.0, 1.0]))
    other = AdaptiveAugment()
    other.load_state_dict(ada.state_dict())
    assert other.accum.tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="accum"):
        other.load_state_dict({"sum": torch.zeros(2)})


def test_presets_and_argument_checks():
    kwargs = augment_pipe_kwargs("bgc")
    assert kwargs == dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1,
                          contrast=1, lumaflip=1, hue=1, saturation=1)
    with pytest.raises(ValueError, match="bgcfnc"):
        augment_pipe_kwargs("bgcfnc")
    with pytest.raises(ValueError, match="xflip"):
        AugmentPipe(xflip=-1)
    with pytest.raises(ValueError, match="C % 3"):
        pipe_with(1, hue=1)(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match="square"):
        pipe_with(1, rotate90=1)(torch.zeros(2, 3, 8, 16))
