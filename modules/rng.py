"""Seeds and noise the A1111 way, made on the CPU so that a seed gives the same noise on every device.

Every image has its own ``torch.Generator`` seeded with its seed, so its noise depends only on that seed, never on
the batch size or its position in the batch. The numbers are A1111's with its "CPU" RNG source (``RNG: CPU`` in the
infotext): image noise is ``torch.randn((C, H, W), generator=torch.Generator("cpu").manual_seed(seed))``.

A1111's rules, written from their description:
- seed ``-1`` (or none) means a random seed in ``[0, 4294967294)``; image ``i`` of a job gets ``seed + i`` and
  ``subseed + i``, except that with a variation strength every image keeps ``seed`` and only the subseed varies;
- variation seed: the image noise is ``slerp(strength, noise(seed), noise(subseed))``;
- seed resize: the noise (and its variation) is made at the "resize seed from" size, and its centre is pasted into
  the centre of noise made from the same seed at the real size (or cropped when it is larger);
- the sampler's per-step noise continues each image's generator after its initial noise, or, with an eta noise seed
  delta (ENSD), comes from a generator seeded with ``seed + ENSD``.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch

RANDN_SOURCE = "CPU"
SEED_LIMIT = 4294967294  # random seeds are drawn from [0, SEED_LIMIT)

Shape = tuple[int, int, int]  # (channels, height, width) of one image's latent


def random_seed() -> int:
    return random.randrange(SEED_LIMIT)


def fixed_seed(seed: int | str | None) -> int:
    """A1111's ``get_fixed_seed``: ``-1``, ``None`` or ``""`` become a random seed; anything else is used as is."""
    if seed is None or seed == "" or int(seed) == -1:
        return random_seed()
    return int(seed)


def job_seeds(seed: int, subseed: int, subseed_strength: float, count: int) -> tuple[list[int], list[int]]:
    """Per-image ``(seeds, subseeds)`` of a job of ``count`` images from its (fixed) seed and subseed."""
    seeds = [seed if subseed_strength > 0 else seed + i for i in range(count)]
    return seeds, [subseed + i for i in range(count)]


def randn(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """Standard normal noise of ``shape`` from a CPU generator seeded with ``seed`` (float32, on the CPU)."""
    return torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(seed))


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from ``low`` (``val`` = 0) to ``high`` (``val`` = 1).

    As A1111, vectors run along dim 1 (for one image's ``(C, H, W)`` noise: each column of each channel), and
    nearly parallel inputs (mean cosine above 0.9995) are interpolated linearly.
    """
    low_unit = low / low.norm(dim=1, keepdim=True)
    high_unit = high / high.norm(dim=1, keepdim=True)
    cosine = (low_unit * high_unit).sum(1)
    if cosine.mean() > 0.9995:
        return low * (1 - val) + high * val
    omega = torch.acos(cosine)
    sin_omega = torch.sin(omega)
    return ((torch.sin((1.0 - val) * omega) / sin_omega).unsqueeze(1) * low
            + (torch.sin(val * omega) / sin_omega).unsqueeze(1) * high)


def create_noise(shape_per_image: Shape, seeds: Sequence[int], subseeds: Sequence[int] | None = None,
                 subseed_strength: float = 0.0, seed_resize_from_h: int = -1, seed_resize_from_w: int = -1, *,
                 vae_scale_factor: int = 8) -> torch.Tensor:
    """Initial noise ``[len(seeds), C, H, W]`` on the CPU, image ``i`` from ``seeds[i]`` (and ``subseeds[i]``).

    ``seed_resize_from_h/w`` are in pixels (A1111's "Resize seed from"; ≤ 0 = off); ``vae_scale_factor`` converts
    them to latent size.
    """
    if subseed_strength > 0 and (subseeds is None or len(subseeds) != len(seeds)):
        raise ValueError("a variation strength needs one subseed per seed")
    channels, height, width = shape_per_image
    source_shape: Shape = shape_per_image
    if seed_resize_from_h > 0 and seed_resize_from_w > 0:
        source_shape = (channels, seed_resize_from_h // vae_scale_factor, seed_resize_from_w // vae_scale_factor)
    noises = []
    for i, seed in enumerate(seeds):
        noise = randn(seed, source_shape)
        if subseed_strength > 0:
            noise = slerp(subseed_strength, noise, randn(subseeds[i], source_shape))
        if source_shape != shape_per_image:
            noise = _paste_centre(noise, randn(seed, shape_per_image))
        noises.append(noise)
    return torch.stack(noises)


def _paste_centre(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``target`` with its centre replaced by the centre of ``source`` (the overlap of the two, centred on both)."""
    height, width = min(source.shape[1], target.shape[1]), min(source.shape[2], target.shape[2])
    dy, dx = (target.shape[1] - source.shape[1]) // 2, (target.shape[2] - source.shape[2]) // 2
    ty, tx, sy, sx = max(dy, 0), max(dx, 0), max(-dy, 0), max(-dx, 0)
    target[:, ty:ty + height, tx:tx + width] = source[:, sy:sy + height, sx:sx + width]
    return target


def generators(seeds: Sequence[int], shape_per_image: Shape, *, eta_noise_seed_delta: int = 0) -> list[torch.Generator]:
    """One CPU generator per image for the sampler's per-step noise: pass them as ``scheduler.step(generator=...)``.

    diffusers draws image ``i``'s step noise from ``generator[i]`` alone, so it depends only on that image's seed.
    As A1111, each generator continues after the image's initial noise of ``shape_per_image`` (so step noise never
    repeats the initial noise); with ``eta_noise_seed_delta`` ≠ 0 it starts afresh at ``seed + delta`` instead.
    """
    if eta_noise_seed_delta:
        return [torch.Generator("cpu").manual_seed(seed + eta_noise_seed_delta) for seed in seeds]
    result = []
    for seed in seeds:
        generator = torch.Generator("cpu").manual_seed(seed)
        torch.randn(shape_per_image, generator=generator)  # the initial noise this generator already gave
        result.append(generator)
    return result


class ImageRNG:
    """A1111's ``p.rng`` (``rng.ImageRNG``): the noise of one batch. The first ``next()`` gives the batch's initial
    noise ``[len(seeds), C, H, W]`` (``create_noise``: seeds, variation seeds, seed resize); each later ``next()``
    gives further noise of that shape, image ``i``'s from its own generator continuing after its initial noise."""

    def __init__(self, shape: Shape, seeds: Sequence[int], subseeds: Sequence[int] | None = None,
                 subseed_strength: float = 0.0, seed_resize_from_h: int = 0, seed_resize_from_w: int = 0, *,
                 vae_scale_factor: int = 8) -> None:
        self.shape = tuple(int(v) for v in shape)
        self.seeds, self.subseeds = list(seeds), list(subseeds) if subseeds is not None else None
        self.subseed_strength = subseed_strength
        self.seed_resize_from_h, self.seed_resize_from_w = seed_resize_from_h, seed_resize_from_w
        self.vae_scale_factor = vae_scale_factor
        self.generators: list[torch.Generator] | None = None
        self.is_first = True

    def first(self) -> torch.Tensor:
        return create_noise(self.shape, self.seeds, self.subseeds, self.subseed_strength, self.seed_resize_from_h,
                            self.seed_resize_from_w, vae_scale_factor=self.vae_scale_factor)

    def next(self) -> torch.Tensor:
        if self.is_first:
            self.is_first = False
            return self.first()
        if self.generators is None:
            self.generators = generators(self.seeds, self.shape)
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])
