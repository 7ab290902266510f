"""The world-image analyser on ground truth, and the shipped default model read back through it."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from modules import world
from modules.analyser import Analysis, analyse
from modules.paths import CONFIGS_DIR, REPO_ROOT

DEFAULT_MODEL = REPO_ROOT / "models" / "Stable-diffusion" / "default-tiny.safetensors"


def _accuracy(scenes: list[world.Scene], images: list) -> dict[str, float]:
    reads = [analyse(image).as_dict() for image in images]
    return {k: float(np.mean([r[k] == getattr(s, k) for r, s in zip(reads, scenes)])) for k in world.ATTRIBUTES}


def test_reads_ground_truth():
    rng = random.Random(2024)
    scenes = [world.sample_scene(rng) for _ in range(100)]
    accuracy = _accuracy(scenes, [world.render(s) for s in scenes])
    assert min(accuracy.values()) >= 0.99, accuracy


def test_reads_variant_styles():
    rng = random.Random(11)
    scenes = [world.sample_scene(rng, styles=world.STYLES) for _ in range(80)]
    accuracy = _accuracy(scenes, [world.render(s) for s in scenes])
    assert min(accuracy.values()) >= 0.98, accuracy


def test_robust_to_noise_and_size():
    rng = random.Random(5)
    noise = np.random.default_rng(0)
    scenes = [world.sample_scene(rng) for _ in range(60)]
    noisy = [np.clip(np.asarray(world.render(s), np.float32) + noise.normal(0, 12, (64, 64, 3)), 0, 255) for s in scenes]
    assert min(_accuracy(scenes, noisy).values()) >= 0.95
    assert min(_accuracy(scenes, [world.render(s, 128) for s in scenes]).values()) >= 0.98


def test_deterministic_and_typed():
    image = world.render(world.Scene("triangle", "green", "pink", "bottom", "large"))
    first, second = analyse(image), analyse(np.asarray(image))
    assert first == second == Analysis("green", "pink", "triangle", "bottom", "large", "solid")


def test_empty_picture_has_only_a_background():
    blank = np.full((64, 64, 3), world.COLORS["cyan"], np.uint8)
    assert analyse(blank) == Analysis(None, "cyan", None, None, None, None)


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="default model not shipped yet")
def test_default_model_draws_a_red_circle_on_blue(monkeypatch):
    from diffusers import StableDiffusionPipeline

    from modules.train_default_model import eval_scheduler

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = StableDiffusionPipeline.from_single_file(str(DEFAULT_MODEL), config=str(CONFIGS_DIR / "default-tiny"),
                                                    local_files_only=True)
    pipe.scheduler = eval_scheduler("DPM++ 2M Karras")
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle on a blue background", num_inference_steps=20, guidance_scale=6.0,
                 generator=torch.Generator().manual_seed(1), output_type="np").images[0]
    read = analyse((image * 255).round().astype(np.uint8))
    assert (read.color, read.background, read.shape) == ("red", "blue", "circle"), read
