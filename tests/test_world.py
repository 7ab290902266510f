"""The procedural shapes world: determinism, geometry and captions."""
from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from modules import world
from modules.world import Scene, caption, parse_prompt_attributes, render, sample_scene


def _pixels(scene: Scene) -> np.ndarray:
    return np.asarray(render(scene))


def test_same_seed_same_scenes_and_pixels():
    a = [sample_scene(random.Random(7)) for _ in range(3)]
    b = [sample_scene(random.Random(7)) for _ in range(3)]
    assert a == b
    assert all(np.array_equal(_pixels(x), _pixels(y)) for x, y in zip(a, b))
    rng = random.Random(7)
    assert len({sample_scene(rng) for _ in range(50)}) > 40


def test_sample_scene_covers_the_world_and_keeps_base_styles():
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(600)]
    assert {s.shape for s in scenes} == set(world.SHAPES)
    assert {s.color for s in scenes} == set(world.COLORS)
    assert {s.background for s in scenes} == set(world.COLORS)
    assert {s.position for s in scenes} == set(world.POSITIONS)
    assert {s.size for s in scenes} == set(world.SIZES)
    assert {s.style for s in scenes} == {"solid"}
    assert all(s.color != s.background for s in scenes)
    assert {s.style for s in (sample_scene(rng, styles=world.STYLES) for _ in range(200))} == set(world.STYLES)


def test_render_geometry():
    scene = Scene("square", "red", "blue", "left", "large")
    pixels = _pixels(scene)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[0, 0]) == world.COLORS["blue"]
    cx, cy = world.POSITION_CENTERS["left"]
    assert tuple(pixels[cy, cx]) == world.COLORS["red"]
    red = np.all(pixels == world.COLORS["red"], axis=-1)
    side = 2 * world.HALF_EXTENT["large"]
    assert red.sum() == side * side  # pixel-aligned square: exactly covered, nothing else red
    ys, xs = np.nonzero(red)
    assert (xs.min() + xs.max() + 1) / 2 == cx and (ys.min() + ys.max() + 1) / 2 == cy


@pytest.mark.parametrize("shape, expected_fill", [("square", 1.0), ("circle", np.pi / 4), ("triangle", 0.5)])
def test_shapes_fill_their_box_as_expected(shape, expected_fill):
    pixels = _pixels(Scene(shape, "white", "black", "center", "large")).astype(float)
    coverage = (pixels[..., 0] - 25) / (245 - 25)
    side = 2 * world.HALF_EXTENT["large"]
    assert coverage.sum() / side**2 == pytest.approx(expected_fill, abs=0.02)


def test_offset_moves_the_shape():
    base = Scene("circle", "yellow", "black", "center", "small")
    moved = Scene("circle", "yellow", "black", "center", "small", offset=(2, -1))
    assert np.array_equal(np.roll(_pixels(base), (-1, 2), axis=(0, 1)), _pixels(moved))


def test_styles_differ_from_solid_and_render_at_other_sizes():
    solid = _pixels(Scene("circle", "green", "white", "center", "large"))
    for style in ("outlined", "striped", "bullseye", "narrow"):
        assert not np.array_equal(solid, _pixels(Scene("circle", "green", "white", "center", "large", style)))
    assert render(Scene("triangle", "red", "blue", "top", "small"), 128).size == (128, 128)


def test_narrow_halves_the_width_and_keeps_the_height():
    def extent(style: str) -> tuple[int, int]:
        mask = world.coverage(Scene("circle", "red", "white", "center", "large", style)) > 0.5
        return int(mask.any(0).sum()), int(mask.any(1).sum())  # width, height

    (width, height), (narrow_width, narrow_height) = extent("solid"), extent("narrow")
    assert narrow_height == height and abs(narrow_width - width * world.NARROW_WIDTH) <= 1


def test_invalid_scenes_are_refused():
    with pytest.raises(ValueError, match="same colour"):
        Scene("circle", "red", "red", "left", "small")
    with pytest.raises(ValueError, match="unknown shape"):
        Scene("hexagon", "red", "blue", "left", "small")
    with pytest.raises(ValueError, match="offset"):
        Scene("circle", "red", "blue", "left", "small", offset=(5, 0))


def test_captions():
    scene = Scene("circle", "red", "blue", "center", "small")
    assert caption(scene, template=0) == "a red circle on a blue background"
    assert [caption(scene, template=t) for t in world.PARTIAL_TEMPLATES] == ["a red circle", "a blue background"]
    assert caption(scene) == "a small red circle in the center on a blue background"
    assert caption(Scene("triangle", "yellow", "orange", "top", "small"), template=1) == "a small yellow triangle at the top"
    assert caption(Scene("square", "orange", "white", "left", "large"), template=0) == "an orange square on a white background"
    assert caption(Scene("square", "pink", "black", "right", "large", "striped"), template=0) == "a pink striped square on a black background"
    rng = random.Random(3)
    assert len({caption(scene, rng) for _ in range(100)}) == len(world.TEMPLATES)


def test_every_caption_names_its_scene():
    rng = random.Random(1)
    for _ in range(200):
        scene = sample_scene(rng, styles=world.STYLES)
        for template in range(len(world.TEMPLATES)):
            text = caption(scene, template=template)
            named = parse_prompt_attributes(text)
            if template == world.PARTIAL_TEMPLATES[1]:
                assert named == {"background": scene.background}, text
                continue
            assert named["color"] == scene.color and named["shape"] == scene.shape, text
            assert {k: v for k, v in named.items() if k != "style"} .items() <= scene.attributes().items(), text
            assert named.get("style", "solid") == scene.style, text
        assert parse_prompt_attributes(caption(scene)) == {k: v for k, v in scene.attributes().items()
                                                           if k != "style" or v != "solid"}


def test_parse_prompt_attributes_free_text():
    assert parse_prompt_attributes("A Big RED Circle, centre, (blue background:1.2)") == {
        "color": "red", "shape": "circle", "position": "center", "background": "blue"}
    assert parse_prompt_attributes("masterpiece") == {}


# The training recipe's view of the world (modules.train_default_model): data and settings checks, no training.

def test_training_data_is_deterministic_per_index():
    from modules.train_default_model import render_images, scene_for

    assert scene_for(0, 5) == scene_for(0, 5) != scene_for(1, 5)
    images = render_images(seed=0, count=6, resolution=64, workers=1)
    assert images.shape == (6, 3, 64, 64) and str(images.dtype) == "torch.uint8"
    assert np.array_equal(images[5].permute(1, 2, 0).numpy(), _pixels(scene_for(0, 5)))


@pytest.mark.parametrize("override, message", [
    ({"vae_steps": 0}, "--vae-steps must be at least 1"),
    ({"unet_steps": 0}, "--unet-steps must be at least 1"),
    ({"resolution": 72}, "not divisible by {factor}"),
    ({"empty_caption_prob": 1.0}, "must be in"),
    ({"break_prob": 1.0}, "--break-prob"),
    ({"stages": "vae,lora"}, "unknown lora"),
    ({"syntax_from_step": -1}, "--syntax-from-step must be 0"),
])
def test_training_refuses_impossible_settings(tmp_path, override, message):
    from modules.train_default_model import UNET_FACTOR, VAE_FACTOR, Settings, SettingsError, validate

    message = message.format(factor=VAE_FACTOR * UNET_FACTOR)

    with pytest.raises(SettingsError, match=message):
        validate(Settings(out=tmp_path / "run", **override))


def test_recipe_runs_resumes_and_turns_the_additions_on_at_their_steps(tmp_path):
    """The smoke preset end to end, stopped after 10 UNet steps and resumed to 20: no stage or step runs twice, and
    each addition joins at its step (smoke: layout from 5, syntax from 10, colour token from 15)."""
    import json

    from modules.train_default_model import PRESETS, Settings, run

    settings = Settings(out=tmp_path / "run", **{**PRESETS["smoke"], "unet_steps": 10})
    first = run(settings)
    assert first is not None and first.exists()
    exported = run(replace(settings, unet_steps=20))
    assert exported == first and exported.stat().st_size <= 40 * 1024 * 1024
    entries = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    trained = {stage: [e["step"] for e in entries if e.get("stage") == stage and e["kind"] == "train"]
               for stage in ("vae", "decoder", "unet")}
    assert trained == {"vae": [5, 10, 15, 20], "decoder": [5, 10], "unet": [5, 10, 15, 20]}
    additions = [e["additions"] for e in entries if e.get("stage") == "unet" and e["kind"] == "train"]
    assert additions == [[], ["layout"], ["layout", "syntax"], ["layout", "syntax", "colour_token"]]


def test_training_refuses_unwritable_output(tmp_path):
    from modules.train_default_model import Settings, SettingsError, validate

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SettingsError, match="cannot write there"):
        validate(Settings(out=blocker / "run"))


def test_two_chunk_captions_split_like_break():
    import torch

    from modules.train_default_model import load_tokenizer, tokenize, two_chunk_captions

    tokenizer = load_tokenizer()
    texts = ["a small yellow triangle at the top on a blue background", "a red circle", ""]
    ids, empty = tokenize(tokenizer, texts), tokenize(tokenizer, [""])[0]
    seen_split = set()
    for seed in range(20):
        chunks = two_chunk_captions(ids, empty, torch.Generator().manual_seed(seed))
        assert chunks.shape == (3, 2, 77)
        assert torch.equal(chunks[2, 0], empty) and torch.equal(chunks[2, 1], empty)
        for row, text in zip(chunks[:2], texts):
            parts = [tokenizer.decode(c, skip_special_tokens=True).strip() for c in row]
            assert " ".join(p for p in parts if p) == text  # nothing lost, nothing repeated, order kept
            assert all(c[0] == empty[0] for c in row)  # each chunk has its own BOS
            seen_split.add(all(parts))
    assert seen_split == {True, False}  # some captions are cut, others padded with the empty chunk




def test_first_step_pairs_target_the_training_image_from_pure_noise():
    import torch
    from diffusers import DDPMScheduler

    from modules.train_default_model import BETA_END, BETA_START, first_step_pairs

    ab = DDPMScheduler(beta_start=BETA_START, beta_end=BETA_END, beta_schedule="scaled_linear").alphas_cumprod
    latents = torch.randn(3, 4, 16, 16)
    start, target, weight = first_step_pairs(latents, ab, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert abs(float(start.std()) - 1) < 0.1 and abs(float((start * latents).mean())) < 0.05  # noise, no image in it
    estimate = (start - (1 - ab[-1]).sqrt() * target) / ab[-1].sqrt()  # what a sampler computes at t=999
    torch.testing.assert_close(estimate, latents, atol=1e-3, rtol=1e-3)
    wrong = target + 0.01
    estimate_error = ((start - (1 - ab[-1]).sqrt() * wrong) / ab[-1].sqrt() - latents).square().mean()
    torch.testing.assert_close(weight * (wrong - target).square().mean(), estimate_error, rtol=1e-3, atol=1e-6)


def test_colour_token_swap_keeps_only_the_colour_token_true():
    import torch

    from modules.train_default_model import ColourTokenSwap, load_tokenizer, scene_for, tokenize

    tokenizer = load_tokenizer()
    swap = ColourTokenSwap(tokenizer, seed=0)
    templates = torch.tensor([0, 1, 2, 3, 4, 5, world.PARTIAL_TEMPLATES[1], 2])
    ids = tokenize(tokenizer, [caption(scene_for(0, row), template=int(t)) for row, t in enumerate(templates)])
    rows, swapped, positions = swap.pick(torch.arange(8), templates, ids, torch.arange(8),
                                         torch.Generator().manual_seed(0))
    assert 6 not in rows  # the background-only caption names no object colour
    for k, (row, pos) in enumerate(zip(rows, positions)):
        scene = scene_for(0, row)
        true_ids = ids[row]
        assert tokenizer.decode([int(true_ids[pos])]).strip() == scene.color
        differs = (swapped[k] != true_ids).nonzero()[:, 0].tolist()
        assert differs == [pos]  # the same caption with another colour word, in the same place
        assert tokenizer.decode([int(swapped[k][pos])]).strip() not in (scene.color, scene.background)
    context, other = torch.zeros(8, 77, 4), torch.ones(len(rows), 77, 4)
    mixed = ColourTokenSwap.apply(context, other, rows, positions)
    for row, pos in zip(rows, positions):
        assert mixed[row, pos].eq(0).all() and mixed[row].sum() == 4 * 76
