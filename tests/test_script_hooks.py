"""Every A1111 Script hook and script_callbacks event at its call point, and what a script changes there takes effect
(tiny random model: the pictures do not matter, only that they are exactly what the change makes)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from modules import extensions, images, processing, script_callbacks, scripts
from modules.options import Options
from modules.processing import StableDiffusionProcessingImg2Img, process_images
from modules.progress import JobState
from tests.test_scripts import SIZE, make_p, pixels


class Hook(scripts.Script):
    """Always on; ``actions[hook](p, *args, **kwargs)`` runs at that hook; every call is recorded."""
    actions: dict[str, Callable[..., Any]] = {}
    calls: list[tuple[str, dict[str, Any]]] = []

    def title(self):
        return "Hook"

    def show(self, is_img2img):
        return scripts.AlwaysVisible


def _hook(name: str) -> Callable[..., Any]:
    def method(self, p, *args, **kwargs):
        Hook.calls.append((name, kwargs))
        if name in Hook.actions:
            Hook.actions[name](p, *args, **kwargs)
    return method


for _name in ("after_extra_networks_activate", "process_before_every_sampling", "before_hr", "post_sample",
              "on_mask_blend", "postprocess_batch", "postprocess_batch_list", "postprocess_maskoverlay",
              "postprocess_image_after_composite", "process_batch"):
    setattr(Hook, _name, _hook(_name))


@pytest.fixture(autouse=True)
def fresh():
    script_callbacks.clear_callbacks()
    extensions.discover(None)
    Hook.actions, Hook.calls = {}, []
    yield
    script_callbacks.clear_callbacks()
    extensions.discover(None)


def hooked(model, tab: str = "txt2img", **kw):
    runner = scripts.ScriptRunner([Hook()], is_img2img=tab == "img2img")
    if tab == "img2img":
        p = img2img(model, **kw)
        p.scripts, p.script_args = runner, runner.default_args()
        return runner, p
    return runner, make_p(model, runner, **kw)


def img2img(model, **kw) -> StableDiffusionProcessingImg2Img:
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (0, 0, SIZE // 2, SIZE))        # regenerate the left half
    kw = {"prompt": "a red circle", "steps": 4, "width": SIZE, "height": SIZE, "seed": 7, "denoising_strength": 0.75,
          "init_images": [Image.new("RGB", (SIZE, SIZE), (200, 30, 30))], "mask": mask, "mask_blur": 0, **kw}
    p = StableDiffusionProcessingImg2Img(**kw)
    p.sd_model, p.opts, p.state = model, Options(samples_save=False, grid_save=False), JobState()
    return p


def names() -> list[str]:
    return [name for name, _ in Hook.calls]


def same(a: Image.Image, b: Image.Image) -> bool:
    return np.array_equal(pixels(a), pixels(b))


# ---------------------------------------------------------------------------------------------------------------------
def test_batch_prompts_changed_after_networks_activate_or_in_process_batch_are_what_is_drawn(tiny_sd1_model):
    blue = process_images(make_p(tiny_sd1_model, prompt="a blue square")).images[0]
    for hook in ("after_extra_networks_activate", "process_batch"):
        Hook.actions = {hook: lambda p, **kw: setattr(p, "prompts", ["a blue square"])}
        runner, p = hooked(tiny_sd1_model)
        result = runner.run(p).images[0]
        assert same(result, blue), hook
    kwargs = dict(Hook.calls)["after_extra_networks_activate"]
    assert set(kwargs) == {"batch_number", "prompts", "seeds", "subseeds", "extra_network_data"}


def test_process_before_every_sampling_sees_the_start_latents_and_changes_take_effect(tiny_sd1_model):
    plain = process_images(make_p(tiny_sd1_model)).images[0]
    Hook.actions = {"process_before_every_sampling": lambda p, **kw: kw["x"].mul_(0)}   # no starting noise
    runner, p = hooked(tiny_sd1_model)
    result = runner.run(p).images[0]
    assert set(dict(Hook.calls)["process_before_every_sampling"]) == {"x", "noise", "c", "uc"}
    assert not same(result, plain)
    # with hires fix it runs before each of the two passes, and before_hr before the second
    Hook.calls = []
    Hook.actions = {"before_hr": lambda p: setattr(p, "denoising_strength", 0.0)}
    runner, p = hooked(tiny_sd1_model, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.7)
    runner.run(p)
    sampling = [n for n in names() if n in ("process_before_every_sampling", "before_hr")]
    assert sampling == ["process_before_every_sampling", "before_hr", "process_before_every_sampling"]
    assert p.state.sampling_steps == 2   # strength 0 set in before_hr: the hires pass sampled nothing new


def test_post_sample_replaces_the_latents_that_are_decoded(tiny_sd1_model):
    Hook.actions = {"post_sample": lambda p, ps: setattr(ps, "samples", torch.zeros_like(ps.samples))}
    runner, p = hooked(tiny_sd1_model)
    result = runner.run(p).images[0]
    side = SIZE // tiny_sd1_model.vae_scale_factor
    expected = processing.decode_latents(tiny_sd1_model, torch.zeros(1, 4, side, side))[0]
    assert same(result, expected)


def test_postprocess_batch_in_place_and_batch_list_replacement(tiny_sd1_model):
    Hook.actions = {"postprocess_batch": lambda p, **kw: kw["images"].fill_(1.0),
                    "postprocess_batch_list": lambda p, pp, **kw: pp.images.pop()}
    runner, p = hooked(tiny_sd1_model, batch_size=2)
    processed = runner.run(p)
    assert len(processed.images) == 1                       # one of the two was dropped
    assert (pixels(processed.images[0]) == 255).all()       # white from postprocess_batch
    assert dict(Hook.calls)["postprocess_batch_list"] == {"batch_number": 0}


def test_inpaint_hooks_mask_blend_maskoverlay_and_after_composite(tiny_sd1_model):
    blends = []

    def keep_original(p, mba):
        blends.append(mba.is_final_blend)
        mba.blended_latent = mba.init_latent

    Hook.actions = {"on_mask_blend": keep_original,
                    "postprocess_maskoverlay": lambda p, ppmo: setattr(ppmo, "overlay_image", None)}
    runner, p = hooked(tiny_sd1_model, "img2img")
    result = runner.run(p).images[0]
    assert blends and blends[-1] is True and not any(blends[:-1])
    init = p.init_images[0]
    roundtrip = processing.decode_latents(tiny_sd1_model, processing.encode_images(tiny_sd1_model, [init]))[0]
    assert same(result, roundtrip)      # every blend kept the init latents; no overlay pasted the original back

    seen = []
    Hook.actions = {"postprocess_image_after_composite":
                    lambda p, pp: (seen.append(pp.image.copy()), setattr(pp, "image", Image.new("RGB", pp.image.size)))}
    runner, p = hooked(tiny_sd1_model, "img2img")
    result = runner.run(p).images[0]
    right = (SIZE // 2 + 4, 0, SIZE, SIZE)
    assert same(seen[0].crop(right), init.crop(right))     # it sees the picture after the original was pasted back
    assert (pixels(result) == 0).all()


def test_image_mask_latent_mask_and_mask_blur_set_by_a_script(tiny_sd1_model):
    """Outpainting scripts set these on p after it was made: each is honoured."""
    p = img2img(tiny_sd1_model, mask=None)
    p.image_mask = Image.new("L", (SIZE, SIZE), 0)           # keep everything ...
    p.latent_mask = Image.new("L", (SIZE, SIZE), 255)        # ... but regenerate every latent
    p.mask_blur = 2
    assert (p.mask_blur_x, p.mask_blur_y) == (2, 2)
    p.opts.overlay_inpaint = False
    result = process_images(p).images[0]
    assert not same(result, p.init_images[0]) and "Mask blur: 2" in process_images(p).infotexts[0]
    p.opts.overlay_inpaint = True
    kept = process_images(p).images[0]
    assert same(kept, p.init_images[0])                      # the image mask says keep: pasted back everywhere


def test_color_corrections_match_the_result_to_the_reference(tiny_sd1_model):
    plain = process_images(make_p(tiny_sd1_model)).images[0]
    blue = Image.new("RGB", (SIZE, SIZE), (20, 40, 220))
    p = make_p(tiny_sd1_model)
    p.color_corrections = [processing.setup_color_correction(blue)]
    corrected = process_images(p).images[0]
    ratio = lambda im: pixels(im)[..., 2].mean() - pixels(im)[..., 0].mean()   # noqa: E731
    assert ratio(corrected) > ratio(plain) + 20


def test_extra_noise_callback_replaces_the_noise(tiny_sd1_model):
    def run(extra: float) -> Image.Image:
        p = img2img(tiny_sd1_model, mask=None)
        p.opts.img2img_extra_noise = extra
        return process_images(p).images[0]

    plain, noisy = run(0.0), run(0.5)
    assert not same(plain, noisy)
    seen = []
    script_callbacks.on_extra_noise(lambda params: (seen.append(params.x.shape),
                                                    setattr(params, "noise", params.noise * 0)))
    assert same(run(0.5), plain) and seen


def test_image_grid_callback_rearranges_the_grid():
    cells = [Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue", "white")]
    assert images.image_grid(cells).size == (16, 16)
    script_callbacks.on_image_grid(lambda params: (setattr(params, "cols", 4), setattr(params, "rows", 1)))
    assert images.image_grid(cells).size == (32, 8)


def test_before_token_counter_changes_what_is_counted(tiny_sd1_model):
    from types import SimpleNamespace

    from modules import ui

    styles = SimpleNamespace(apply_styles_to_prompt=lambda text, names: text,
                             apply_negative_styles_to_prompt=lambda text, names: text)
    runtime = SimpleNamespace(models=SimpleNamespace(current=tiny_sd1_model), prompt_styles=styles,
                              embeddings=SimpleNamespace(loaded_for=lambda model: None))
    assert ui.token_counter(runtime, "a cat") == "2/75"
    script_callbacks.on_before_token_counter(lambda params: setattr(params, "prompt", params.prompt + " and a dog"))
    assert ui.token_counter(runtime, "a cat") == "5/75"


def test_list_callbacks_collect_what_extensions_add():
    script_callbacks.on_list_optimizers(lambda found: found.append("my optimizer"))
    script_callbacks.on_list_unets(lambda found: found.append("my unet"))
    assert script_callbacks.list_optimizers_callback() == ["my optimizer"]
    assert script_callbacks.list_unets_callback() == ["my unet"]


def test_processed_positional_constructor_and_fix_seed(tiny_sd1_model):
    p = make_p(tiny_sd1_model, seed=-1)
    processing.fix_seed(p)
    assert p.seed >= 0
    first = process_images(p)
    rebuilt = processing.Processed(p, first.images, first.seed, first.info)
    assert rebuilt.images == first.images and rebuilt.seed == p.seed and rebuilt.info == first.infotexts[0]
    assert rebuilt.infotexts == [first.info] and rebuilt.width == SIZE and rebuilt.all_seeds == [p.seed]
    text = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds)
    assert text == first.infotexts[0]
