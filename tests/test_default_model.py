"""Effects on the shipped default model, through the normal checkpoint path and the project's generation path.

Its world is known (modules.world), so the analyser can check that a prompt was followed: "a red circle" must come out
red and round, and each piece of prompt syntax must move the picture the way it says.
"""
from __future__ import annotations

import numpy as np
import pytest

from modules import analyser, world
from modules.options import Options
from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img, process_images
from modules.progress import JobState
from modules.sd_models import ModelManager
from tests.fixtures_models import SHIPPED, paths_with_shipped_models

SEEDS = [1, 2, 3, 4]


def test_a_default_model_is_shipped_with_its_checksum():
    assert SHIPPED, "models/Stable-diffusion/ holds no shipped model"
    for path in SHIPPED:
        assert path.stat().st_size <= 40 * 1024 * 1024
        assert path.with_name(path.name + ".sha256").exists()


@pytest.fixture(scope="module")
def manager(tmp_path_factory) -> ModelManager:
    if not SHIPPED:
        pytest.skip("no shipped model")
    data_dir = tmp_path_factory.mktemp("default-model")
    return ModelManager(paths_with_shipped_models(data_dir), Options())


@pytest.fixture(scope="module")
def model(manager):
    return manager.select_default()


@pytest.fixture(scope="module")
def opts():
    return Options(samples_save=False, live_previews_enable=False)


def generate(model, opts, prompt: str, seeds=SEEDS, cls=StableDiffusionProcessingTxt2Img, **kw):
    images = []
    for seed in seeds:
        kw.setdefault("steps", 15)
        p = cls(prompt=prompt, seed=seed, width=model.native_size, height=model.native_size, cfg_scale=6,
                do_not_save_samples=True, do_not_save_grid=True, **kw)
        p.sd_model, p.opts, p.state = model, opts, JobState()
        images.append(process_images(p).images[0])
    return images


def share(images, wanted) -> float:
    return float(np.mean([wanted(analyser.analyse(im)) for im in images]))


def redness(images) -> float:
    """How red the drawn pictures are: mean over images of the share of pixels nearest to the palette's red."""
    red = np.array(world.COLORS["red"], dtype=np.float32)
    others = np.array([c for n, c in world.COLORS.items() if n != "red"], dtype=np.float32)
    values = []
    for im in images:
        px = np.asarray(im.convert("RGB"), dtype=np.float32).reshape(-1, 3)
        d_red = ((px - red) ** 2).sum(-1)
        d_other = ((px[:, None, :] - others[None]) ** 2).sum(-1).min(1)
        values.append(float((d_red < d_other).mean()))
    return float(np.mean(values))


def test_loads_through_the_checkpoint_path_and_infotext_names_it(model, opts, manager):
    info = manager.default_checkpoint()
    assert model.sd_checkpoint_info.filename == info.filename
    assert model.native_size == world.IMAGE_SIZE
    p = StableDiffusionProcessingTxt2Img(prompt="a red circle", steps=4, width=64, height=64, seed=1,
                                         do_not_save_samples=True)
    p.sd_model, p.opts, p.state = model, opts, JobState()
    text = process_images(p).infotexts[0]
    assert f"Model hash: {info.shorthash}" in text
    assert f"Model: {info.model_name}" in text


def test_a_red_circle_on_a_blue_background(model, opts):
    images = generate(model, opts, "a red circle on a blue background")
    assert share(images, lambda a: a.color == "red") >= 0.75
    assert share(images, lambda a: a.background == "blue") >= 0.75
    assert share(images, lambda a: a.shape == "circle") >= 0.75


def test_a_green_triangle_on_a_white_background(model, opts):
    images = generate(model, opts, "a green triangle on a white background")
    assert share(images, lambda a: (a.color, a.background, a.shape) == ("green", "white", "triangle")) >= 0.75


def test_img2img_at_low_denoising_keeps_the_colours(model, opts):
    scene = world.Scene(shape="square", color="yellow", background="purple", position="center", size="large")
    init = world.render(scene)
    images = generate(model, opts, "a yellow square on a purple background", cls=StableDiffusionProcessingImg2Img,
                      init_images=[init], denoising_strength=0.3)
    assert share(images, lambda a: (a.color, a.background) == ("yellow", "purple")) == 1.0


def test_attention_weight_moves_redness(model, opts):
    strong = generate(model, opts, "a (red:1.5) circle on a white background")
    weak = generate(model, opts, "a (red:0.5) circle on a white background")
    assert redness(strong) > redness(weak)


def test_prompt_editing_switches_at_its_step(model, opts):
    """[red:blue:when] follows red until `when`, then blue: switching late keeps more red than switching early."""
    red = redness(generate(model, opts, "a red square on a white background"))
    blue = redness(generate(model, opts, "a blue square on a white background"))
    early = redness(generate(model, opts, "a [red:blue:0.1] square on a white background"))
    late = redness(generate(model, opts, "a [red:blue:0.9] square on a white background"))
    assert red > blue
    assert late - early > 0.5 * (red - blue)
    assert min(red, blue) <= early <= late <= max(red, blue)


def test_and_shows_both_prompts(model, opts):
    images = generate(model, opts, "a red circle AND a blue background")
    assert share(images, lambda a: a.color == "red") >= 0.75
    assert share(images, lambda a: a.background == "blue") >= 0.75


def test_break_keeps_both_chunks(model, opts):
    images = generate(model, opts, "a red circle BREAK on a blue background")
    assert share(images, lambda a: a.color == "red") >= 0.75
    assert share(images, lambda a: a.background == "blue") >= 0.75


def test_api_request_without_a_size_draws_at_the_models_native_size(manager, model, tmp_path):
    """A1111 clients often leave width/height out (A1111: 512×512); here that means the checkpoint's own size."""
    from fastapi.testclient import TestClient

    from modules import cmd_args
    from modules.api import create_api_app
    from modules.api.codec import decode_image
    from modules.job_queue import JobQueue
    from modules.runtime import Runtime

    paths = manager.paths
    runtime = Runtime(args=cmd_args.parse_args(["--nowebui", "--data-dir", str(tmp_path)]), paths=paths,
                      opts=Options(samples_save=False, live_previews_enable=False), models=manager,
                      queue=JobQueue(tmp_path / "history.db"))
    with TestClient(create_api_app(runtime)) as client:
        images = []
        for seed in SEEDS:
            r = client.post("/sdapi/v1/txt2img", json={"prompt": "a green triangle on a white background",
                                                       "seed": seed, "steps": 15, "cfg_scale": 6})
            assert r.status_code == 200, r.text
            images.append(decode_image(r.json()["images"][0]))
    runtime.queue.close()
    assert {im.size for im in images} == {(model.native_size, model.native_size)}
    assert share(images, lambda a: (a.color, a.background, a.shape) == ("green", "white", "triangle")) >= 0.75
