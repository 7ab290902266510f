"""The generation path on a tiny random-weight SD1 model: seeds, samplers, img2img, inpaint, interrupt, saving."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from modules import infotext, sd_samplers
from modules.options import Options
from modules.processing import (GenerationError, StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img,
                                process_images)
from modules.progress import JobState

SIZE = 64


@pytest.fixture
def opts(tmp_path):
    return Options(outdir_samples=str(tmp_path / "out"), outdir_grids=str(tmp_path / "grids"))


def run(model, opts, cls=StableDiffusionProcessingTxt2Img, state=None, **kw):
    kw.setdefault("prompt", "a red circle")
    kw.setdefault("steps", 4)
    kw.setdefault("width", SIZE)
    kw.setdefault("height", SIZE)
    kw.setdefault("seed", 1234)
    kw.setdefault("do_not_save_samples", True)
    kw.setdefault("do_not_save_grid", True)
    p = cls(**kw)
    p.sd_model, p.opts, p.state = model, opts, state or JobState()
    return process_images(p)


def arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.int16)


def test_same_seed_same_image_and_different_seed_differs(tiny_sd1_model, opts):
    a = run(tiny_sd1_model, opts).images[0]
    b = run(tiny_sd1_model, opts).images[0]
    c = run(tiny_sd1_model, opts, seed=99).images[0]
    assert np.array_equal(arr(a), arr(b))
    assert np.abs(arr(a) - arr(c)).mean() > 1.0


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M"])
def test_batch_image_equals_single_run_with_next_seed(tiny_sd1_model, opts, sampler):
    batch = run(tiny_sd1_model, opts, sampler_name=sampler, batch_size=2, seed=500)
    single = run(tiny_sd1_model, opts, sampler_name=sampler, seed=501)
    assert batch.all_seeds == [500, 501]
    second = batch.images[batch.index_of_first_image + 1]
    assert np.abs(arr(second) - arr(single.images[0])).max() <= 1


def test_every_sampler_makes_an_image(tiny_sd1_model, opts):
    for name in sd_samplers.visible_sampler_names():
        out = run(tiny_sd1_model, opts, sampler_name=name, steps=3)
        a = arr(out.images[0])
        assert a.shape == (SIZE, SIZE, 3), name
        assert a.std() > 0, f"{name} produced a flat image"


def test_random_seed_is_reported(tiny_sd1_model, opts):
    out = run(tiny_sd1_model, opts, seed=-1, n_iter=2)
    assert out.all_seeds[0] >= 0 and out.all_seeds[1] == out.all_seeds[0] + 1
    assert f"Seed: {out.all_seeds[0]}" in out.infotexts[out.index_of_first_image]


def test_interrupt_stops_within_a_step_and_keeps_no_half_finished_image(tiny_sd1_model, opts):
    calls = []
    handle = tiny_sd1_model.unet.register_forward_hook(lambda *a: calls.append(1))

    class InterruptAtStep3(JobState):
        def __setattr__(self, name, value):
            super().__setattr__(name, value)
            if name == "sampling_step" and value == 3:
                self.interrupt()

    try:
        out = run(tiny_sd1_model, opts, steps=20, n_iter=3, state=InterruptAtStep3())
    finally:
        handle.remove()
    assert out.interrupted
    assert len(calls) == 3          # three UNet calls, then it stopped: no further batches either
    assert out.images == [] and out.files == []  # the half-denoised image is neither returned nor saved as done


def test_an_interrupt_keeps_the_batches_that_were_complete(tiny_sd1_model, opts):
    class InterruptInBatch2(JobState):
        def __setattr__(self, name, value):
            super().__setattr__(name, value)
            if name == "sampling_step" and value == 2 and self.job_no == 1:
                self.interrupt()

    out = run(tiny_sd1_model, opts, steps=4, n_iter=3, state=InterruptInBatch2())
    assert out.interrupted and len(out.images) == 1 and len(out.infotexts) == 1
    assert out.images[0].getextrema() != ((0, 0), (0, 0), (0, 0))


def test_skip_abandons_current_batch_and_continues(tiny_sd1_model, opts):
    class SkipFirst(JobState):
        def __setattr__(self, name, value):
            super().__setattr__(name, value)
            if name == "sampling_step" and value == 2 and self.job_no == 0:
                self.skip()

    out = run(tiny_sd1_model, opts, steps=6, n_iter=2, state=SkipFirst())
    assert not out.interrupted
    assert len(out.infotexts) == 2  # the second batch still ran


def test_saved_png_carries_infotext(tiny_sd1_model, opts, tmp_path):
    out = run(tiny_sd1_model, opts, do_not_save_samples=False, negative_prompt="blurry", cfg_scale=5,
              sampler_name="Euler a")
    assert len(out.files) == 1 and out.files[0].endswith(".png")
    saved = Image.open(out.files[0])
    text = saved.info["parameters"]
    assert text == out.infotexts[0]
    params = infotext.parse_generation_parameters(text)
    assert params["Prompt"] == "a red circle"
    assert params["Negative prompt"] == "blurry"
    assert params["Sampler"] == "Euler a"
    assert str(params["Seed"]) == "1234"
    assert str(params["Steps"]) == "4"
    assert f"Model hash: {tiny_sd1_model.sd_model_hash}" in text
    assert "-1234.png" in out.files[0]


def test_grid_is_first_when_several_images(tiny_sd1_model, opts):
    no_grid = run(tiny_sd1_model, opts, batch_size=2)   # do_not_save_grid: no grid at all, as A1111's API
    assert no_grid.index_of_first_image == 0 and len(no_grid.images) == 2
    out = run(tiny_sd1_model, opts, batch_size=2, n_iter=2, do_not_save_grid=False)
    assert out.index_of_first_image == 1
    assert len(out.images) == 5
    assert out.images[0].size[0] >= 2 * SIZE


def test_img2img_low_denoising_keeps_the_picture(tiny_sd1_model, opts):
    from modules.processing import decode_latents, encode_images

    init = Image.new("RGB", (SIZE, SIZE), (200, 30, 30))
    init.paste((30, 30, 200), (16, 16, 48, 48))
    with torch.inference_mode():   # the random tiny VAE is lossy: compare with its own round trip of the image
        roundtrip = arr(decode_latents(tiny_sd1_model, encode_images(tiny_sd1_model, [init]))[0])

    def img2img(strength):
        out = run(tiny_sd1_model, opts, cls=StableDiffusionProcessingImg2Img, init_images=[init],
                  denoising_strength=strength)
        return out, np.abs(arr(out.images[0]) - roundtrip).mean()

    zero, d_zero = img2img(0.0)
    low, d_low = img2img(0.1)
    high, d_high = img2img(1.0)
    assert d_zero < 0.5
    assert d_low < d_high
    assert "Denoising strength: 0.1" in low.infotexts[0]


def test_inpaint_keeps_pixels_outside_the_mask(tiny_sd1_model, opts):
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    for full_res in (False, True):
        out = run(tiny_sd1_model, opts, cls=StableDiffusionProcessingImg2Img, init_images=[init], mask=mask,
                  mask_blur=0, denoising_strength=1.0, inpaint_full_res=full_res, inpainting_fill=1)
        result = arr(out.images[0])
        outside = np.asarray(mask) == 0
        assert np.abs(result[outside] - arr(init)[outside]).max() <= 1, f"full_res={full_res}"
        inside = ~outside
        assert np.abs(result[inside] - arr(init)[inside]).mean() > 5, "the masked area was regenerated"


def test_inpaint_mask_of_another_size_is_a_clear_error(tiny_sd1_model, opts):
    init = Image.new("RGB", (SIZE, SIZE))
    with pytest.raises(GenerationError, match="mask"):
        run(tiny_sd1_model, opts, cls=StableDiffusionProcessingImg2Img, init_images=[init],
            mask=Image.new("L", (32, 32)))


def test_variation_seed_moves_between_seeds(tiny_sd1_model, opts):
    base = arr(run(tiny_sd1_model, opts, seed=1).images[0])
    other = arr(run(tiny_sd1_model, opts, seed=2).images[0])
    half = run(tiny_sd1_model, opts, seed=1, subseed=2, subseed_strength=0.5)
    h = arr(half.images[0])
    assert 0 < np.abs(h - base).mean() and 0 < np.abs(h - other).mean()
    assert "Variation seed: 2" in half.infotexts[0]
    full = arr(run(tiny_sd1_model, opts, seed=1, subseed=2, subseed_strength=1.0).images[0])
    assert np.abs(full - other).max() <= 1


def test_hires_fix_doubles_the_size(tiny_sd1_model, opts):
    out = run(tiny_sd1_model, opts, enable_hr=True, hr_scale=2.0, denoising_strength=0.5, steps=3)
    assert out.images[0].size == (2 * SIZE, 2 * SIZE)
    assert "Hires upscaler: Latent" in out.infotexts[0]


def test_override_settings_do_not_leak(tiny_sd1_model, opts):
    out = run(tiny_sd1_model, opts, override_settings={"CLIP_stop_at_last_layers": 2})
    assert "Clip skip: 2" in out.infotexts[0]
    assert opts.CLIP_stop_at_last_layers == 1


@pytest.mark.parametrize("field,value", [("width", 65), ("height", 0), ("steps", 0), ("steps", 100000),
                                         ("cfg_scale", -1), ("cfg_scale", float("nan")), ("batch_size", 0)])
def test_bad_parameters_name_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        StableDiffusionProcessingTxt2Img(**{field: value})


def test_denoising_outside_unit_interval_is_rejected():
    with pytest.raises(ValidationError, match="denoising_strength"):
        StableDiffusionProcessingImg2Img(init_images=[Image.new("RGB", (8, 8))], denoising_strength=1.5)


def test_img2img_without_image_is_rejected():
    with pytest.raises(ValidationError, match="init_images"):
        StableDiffusionProcessingImg2Img()


def test_unknown_sampler_lists_valid_ones(tiny_sd1_model, opts):
    with pytest.raises(ValueError) as e:
        run(tiny_sd1_model, opts, sampler_name="Nope 3000")
    assert "Euler a" in str(e.value)


def test_saved_files_are_complete(tiny_sd1_model, opts, tmp_path):
    out = run(tiny_sd1_model, opts, do_not_save_samples=False, n_iter=2)
    for f in out.files:
        Image.open(f).load()   # a half-written file would fail here
    folder = tmp_path / "out"
    assert not [p for p in folder.rglob("*") if p.is_file() and p.suffix not in (".png",)]
