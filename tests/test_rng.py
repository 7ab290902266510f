import random

import pytest
import torch

from modules import rng

SHAPE = (4, 8, 8)


def test_random_seeds_are_in_a1111s_range(monkeypatch):
    calls = []
    monkeypatch.setattr(random, "randrange", lambda n: calls.append(n) or n - 1)
    assert rng.random_seed() == 4294967293
    assert rng.fixed_seed(-1) == 4294967293
    assert rng.fixed_seed(None) == 4294967293 and rng.fixed_seed("") == 4294967293
    assert calls == [4294967294] * 4
    assert rng.fixed_seed(1234) == 1234 and rng.fixed_seed("77") == 77


def test_job_seeds():
    assert rng.job_seeds(100, 7, 0.0, 3) == ([100, 101, 102], [7, 8, 9])
    # With a variation strength every image keeps the seed and the subseed varies.
    assert rng.job_seeds(100, 7, 0.3, 3) == ([100, 100, 100], [7, 8, 9])


def test_noise_is_a1111s_cpu_noise():
    noise = rng.create_noise(SHAPE, [1234])
    expected = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(1234))
    assert noise.shape == (1, *SHAPE) and noise.dtype == torch.float32 and noise.device.type == "cpu"
    assert torch.equal(noise[0], expected)
    assert torch.equal(rng.create_noise(SHAPE, [1234]), noise)
    assert not torch.equal(rng.create_noise(SHAPE, [1235])[0], noise[0])


def test_noise_does_not_depend_on_batch_or_position():
    pair = rng.create_noise(SHAPE, [5, 6])
    assert torch.equal(pair[1], rng.create_noise(SHAPE, [6])[0])
    assert torch.equal(pair[0], rng.create_noise(SHAPE, [7, 5])[1])


def test_variation_strength_endpoints():
    base = rng.create_noise(SHAPE, [5])[0]
    sub = rng.create_noise(SHAPE, [99])[0]
    assert torch.equal(rng.create_noise(SHAPE, [5], [99], 0.0)[0], base)
    assert torch.allclose(rng.create_noise(SHAPE, [5], [99], 1.0)[0], sub, atol=1e-5)
    half = rng.create_noise(SHAPE, [5], [99], 0.5)[0]
    assert not torch.allclose(half, base) and not torch.allclose(half, sub)
    assert abs(half.std().item() - 1.0) < 0.2  # slerp keeps the noise's scale (a lerp would shrink it)


def test_variation_per_image_subseed():
    noise = rng.create_noise(SHAPE, [5, 5], [10, 11], 0.4)
    assert torch.equal(noise[1], rng.create_noise(SHAPE, [5], [11], 0.4)[0])
    assert not torch.equal(noise[0], noise[1])


def test_variation_needs_subseeds():
    with pytest.raises(ValueError, match="subseed"):
        rng.create_noise(SHAPE, [5], None, 0.5)


def test_slerp():
    low, high = torch.randn(3, 16), torch.randn(3, 16)
    assert torch.allclose(rng.slerp(0.0, low, high), low)
    assert torch.allclose(rng.slerp(1.0, low, high), high, atol=1e-6)
    # Nearly parallel vectors are interpolated linearly.
    assert torch.allclose(rng.slerp(0.25, low, low * 2), low * 1.25)


def test_seed_resize_from_a_smaller_size_keeps_its_noise_in_the_centre():
    # 32x32 pixels with a VAE factor of 8 is a 4x4 latent, pasted into the centre of the 8x8 one.
    resized = rng.create_noise(SHAPE, [5], seed_resize_from_h=32, seed_resize_from_w=32)[0]
    small = rng.create_noise((4, 4, 4), [5])[0]
    assert torch.equal(resized[:, 2:6, 2:6], small)
    # Outside the centre: noise of the real size from the same seed.
    full = rng.create_noise(SHAPE, [5])[0]
    assert torch.equal(resized[:, :2], full[:, :2]) and torch.equal(resized[:, :, 6:], full[:, :, 6:])


def test_seed_resize_from_a_larger_size_crops_its_centre():
    resized = rng.create_noise(SHAPE, [5], seed_resize_from_h=96, seed_resize_from_w=128)[0]
    large = rng.create_noise((4, 12, 16), [5])[0]
    assert torch.equal(resized, large[:, 2:10, 4:12])


def test_seed_resize_uses_the_vae_scale_factor_and_keeps_the_variation():
    resized = rng.create_noise(SHAPE, [5], [9], 0.5, 16, 16, vae_scale_factor=4)[0]
    small = rng.create_noise((4, 4, 4), [5], [9], 0.5)[0]
    assert torch.equal(resized[:, 2:6, 2:6], small)


def test_seed_resize_to_the_same_size_changes_nothing():
    same = rng.create_noise(SHAPE, [5], seed_resize_from_h=64, seed_resize_from_w=64)
    assert torch.equal(same, rng.create_noise(SHAPE, [5]))


def test_generators_continue_after_the_initial_noise():
    generator = rng.generators([5], SHAPE)[0]
    fresh = torch.Generator().manual_seed(5)
    initial = torch.randn(SHAPE, generator=fresh)
    assert torch.equal(initial, rng.create_noise(SHAPE, [5])[0])
    assert torch.equal(torch.randn(SHAPE, generator=generator), torch.randn(SHAPE, generator=fresh))


def test_generators_with_eta_noise_seed_delta():
    generator = rng.generators([5, 6], SHAPE, eta_noise_seed_delta=31337)[1]
    assert torch.equal(torch.randn(SHAPE, generator=generator), rng.randn(6 + 31337, SHAPE))
