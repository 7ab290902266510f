"""A1111 v1.10.1's own bundled scripts, installed unmodified as one extension folder, on the shipped default model.

Each test runs a script the way the page and the API do (``ScriptRunner.bind_api_args`` + ``Runtime.run``) and checks
what it is for: loopback feeds each output back in, the outpainting scripts grow the canvas and keep the original,
SD upscale doubles the picture through tiles, A1111's prompt matrix / prompts from file / X/Y/Z plot make their grids
and images beside the built-in ones. The scripts are test data (../shared/third-party); they are never edited.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules import analyser, cmd_args, extensions, processing, scripts, shared, world
from modules.job_queue import JobQueue
from modules.options import Options
from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img
from modules.progress import JobState
from modules.runtime import Runtime
from modules.sd_models import ModelManager
from tests.fixtures_models import SHIPPED, paths_with_shipped_models

A1111_SCRIPTS = Path(__file__).resolve().parents[1].parent / "shared" / "third-party" / "a1111-extensions" / \
    "a1111-v1.10.1-scripts"
if not A1111_SCRIPTS.is_dir():   # the worktree layout (/work/wt/<branch>) and the main checkout (/work/main)
    A1111_SCRIPTS = Path("/work/shared/third-party/a1111-extensions/a1111-v1.10.1-scripts")
STEPS = 4           # img2img: the picture is mostly there already
TXT2IMG_STEPS = 12  # enough for the default model to draw the prompt's colour and shape

pytestmark = pytest.mark.skipif(not SHIPPED or not A1111_SCRIPTS.is_dir(),
                                reason="needs the shipped model and the A1111 scripts test data")


def make_runtime(data_dir: Path, *flags: str) -> Runtime:
    paths = paths_with_shipped_models(data_dir)
    shutil.copytree(A1111_SCRIPTS, paths.extensions_dir / "a1111")
    opts = Options(samples_save=False, grid_save=False, live_previews_enable=False)
    runtime = Runtime(args=cmd_args.parse_args(["--nowebui", "--data-dir", str(data_dir), *flags]), paths=paths,
                      opts=opts, models=ModelManager(paths, opts), queue=JobQueue(data_dir / "history.db"))
    runtime.models.select_default()
    return runtime


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """The app's runtime on a temp data dir whose extensions/ holds A1111's scripts folder, started with --allow-code."""
    rt = make_runtime(tmp_path_factory.mktemp("a1111-scripts"), "--allow-code")
    shared.bind(rt)
    scripts.load_scripts(rt.paths.extensions_dir)
    yield rt
    scripts.unload_scripts()
    extensions.discover(None)
    shared.bind(None)
    rt.queue.close()


def red_circle(size: int = 64, grain: int = 0) -> Image.Image:
    """The world's red circle; ``grain``: that much pixel noise, as a photo has (outpainting mk2's noise matching
    divides by the picture's spectrum, which a flat synthetic picture has holes in)."""
    image = world.render(world.Scene("circle", "red", "white", "center", "large"), size)
    if not grain:
        return image
    noise = np.random.default_rng(0).integers(-grain, grain + 1, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def job(tab: str = "img2img", **kw) -> processing.StableDiffusionProcessing:
    kw = {"prompt": "a red circle on a white background", "steps": STEPS if tab == "img2img" else TXT2IMG_STEPS,
          "width": 64, "height": 64, "seed": 1, "cfg_scale": 6, **kw}
    if tab == "img2img":
        kw.setdefault("init_images", [red_circle()])
        kw.setdefault("denoising_strength", 0.4)
        return StableDiffusionProcessingImg2Img(**kw)
    return StableDiffusionProcessingTxt2Img(**kw)


def run_script(runtime: Runtime, title: str | None, args: list, p: processing.StableDiffusionProcessing):
    scripts.runner_for(p.tab).bind_api_args(p, title, args, {})
    return runtime.run(p, JobState())


def diff(a: Image.Image, b: Image.Image) -> np.ndarray:
    return np.abs(np.asarray(a.convert("RGB"), dtype=np.int16) - np.asarray(b.convert("RGB"), dtype=np.int16))


# ---------------------------------------------------------------------------------------------------------------------
def test_each_file_loads_and_img2imgalt_reports_what_is_missing(runtime):
    listed = scripts.api_scripts_list()
    assert {"loopback", "outpainting mk2", "poor man's outpainting", "sd upscale", "custom code"} <= \
        set(listed["img2img"])
    # A1111's copies of the built-in scripts are reachable under their own titles; no title is listed twice.
    for tab in ("txt2img", "img2img"):
        for title in ("prompt matrix", "prompts from file or textbox", "x/y/z plot"):
            assert title in listed[tab] and f"{title} (a1111)" in listed[tab]
        assert len(listed[tab]) == len(set(listed[tab]))
    failures = [f.message for f in extensions.failures if "img2imgalt.py" in f.message]
    assert failures and "k_diffusion" in failures[0]


def test_loopback_feeds_each_output_back_with_the_denoising_curve(runtime, monkeypatch):
    calls = []
    real = processing.process_images

    def spy(p):
        calls.append((p.init_images[0], p.denoising_strength))
        result = real(p)
        calls[-1] += (result.images[0],)
        return result

    monkeypatch.setattr(processing, "process_images", spy)
    # loops, final denoising strength, curve, interrogation
    processed = run_script(runtime, "loopback", [3, 0.6, "Linear", "None"], job(denoising_strength=0.3))
    assert [round(strength, 3) for _, strength, _ in calls] == [0.3, 0.45, 0.6]
    for (_, _, output), (next_input, _, _) in zip(calls, calls[1:]):
        assert next_input is output                   # each output is the next loop's input
    assert len(processed.images) == 4                 # the grid of the 3 loops, then the loops
    assert processed.images[0].size == (3 * 64, 64)
    assert "Final denoising strength: 0.6" in processed.info and "Denoising curve: Linear" in processed.info
    assert analyser.analyse(processed.images[-1]).color == "red"


def test_loopback_colour_correction_keeps_the_first_inputs_colours(runtime):
    """With A1111's option img2img_color_correction, loopback sets p.color_corrections from its first input: the
    result's colours are matched back to that input's."""
    def mean_colour(image):
        return np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(0)

    source = red_circle()
    args = [1, 0.9, "Linear", "None"]
    p = job(prompt="a blue square on a green background", denoising_strength=0.9, init_images=[source])
    plain = run_script(runtime, "loopback", args, p).images[-1]
    runtime.opts.img2img_color_correction = True
    try:
        p = job(prompt="a blue square on a green background", denoising_strength=0.9, init_images=[source])
        corrected = run_script(runtime, "loopback", args, p).images[-1]
    finally:
        runtime.opts.img2img_color_correction = False
    off_plain = np.abs(mean_colour(plain) - mean_colour(source)).sum()
    off_corrected = np.abs(mean_colour(corrected) - mean_colour(source)).sum()
    assert off_plain > 60 and off_corrected < 0.75 * off_plain


@pytest.mark.parametrize("title, args, kept", [
    # pixels, mask blur, direction, fall-off, colour variation (after the info text)
    ("outpainting mk2", ["", 32, 8, ["left", "right"], 1.0, 0.05], (8, 56)),
    # pixels, mask blur, masked content (fill), direction
    ("poor man's outpainting", [32, 4, "fill", ["left", "right"]], (8, 56)),
])
def test_outpainting_grows_the_canvas_and_keeps_the_original(runtime, title, args, kept):
    source = red_circle(grain=4)
    processed = run_script(runtime, title, args, job(init_images=[source], denoising_strength=0.8))
    result = processed.images[-1]
    assert result.size == (128, 64)                   # 32 px more on the left and on the right
    lo, hi = kept                                     # the original, minus the blurred seam, is unchanged
    assert diff(result.crop((32 + lo, 0, 32 + hi, 64)), source.crop((lo, 0, hi, 64))).max() <= 2
    new_area = np.asarray(result.crop((0, 0, 24, 64)).convert("RGB"), dtype=np.float32)
    assert new_area.std() > 1 or new_area.mean() > 16  # drawn, not the black padding the script starts from


def test_sd_upscale_doubles_through_tiles(runtime, monkeypatch):
    tiles = []
    real = processing.process_images
    monkeypatch.setattr(processing, "process_images", lambda p: tiles.append(p.init_images[0].size) or real(p))
    # info, tile overlap, upscaler (from shared.sd_upscalers, by name), scale factor
    processed = run_script(runtime, "sd upscale", ["", 32, "Lanczos", 2.0], job(denoising_strength=0.2))
    result = processed.images[0]
    assert result.size == (128, 128)
    assert tiles == [(64, 64)] * 9                   # 3 x 3 tiles of the UI size, overlapping by 32
    assert "SD upscale overlap: 32" in processed.info and "SD upscale upscaler: Lanczos" in processed.info
    reading = analyser.analyse(result)
    assert (reading.color, reading.shape) == ("red", "circle")
    lanczos = red_circle().resize((128, 128), Image.Resampling.LANCZOS)
    assert diff(result, lanczos).mean() < 40          # the same picture, refined tile by tile


def test_a1111_prompt_matrix_makes_every_combination_and_its_grid(runtime):
    p = job("txt2img", prompt="a circle on a white background|red|blue")
    # put at start, different seeds, prompt type, delimiter, margin
    processed = run_script(runtime, "prompt matrix (a1111)", [False, False, "positive", "comma", 0], p)
    assert processed.all_prompts == ["a circle on a white background", "a circle on a white background, red",
                                     "a circle on a white background, blue",
                                     "a circle on a white background, red, blue"]
    assert processed.index_of_first_image == 1 and len(processed.images) == 5
    grid = processed.images[0]
    assert grid.width > 2 * 64 and grid.height > 2 * 64        # 2 x 2 cells plus the labels
    cells = processed.images[1:]
    for text, prompt in zip(processed.infotexts[1:], processed.all_prompts):
        assert text.startswith(prompt + "\n")
    assert all(diff(a, b).mean() > 1 for i, a in enumerate(cells) for b in cells[i + 1:])  # same seed, own prompt


def test_a1111_prompts_from_file_runs_each_line(runtime):
    lines = "a red circle on a white background\n--prompt \"a blue square on a white background\" --seed 5"
    processed = run_script(runtime, "prompts from file or textbox (a1111)", [False, False, "start", lines],
                           job("txt2img", prompt=""))
    assert len(processed.images) == 2
    assert "Seed: 5," in processed.infotexts[1]
    colors = [analyser.analyse(image).color for image in processed.images]
    assert colors == ["red", "blue"]


def test_a1111_xyz_plot_steps_by_cfg(runtime):
    runner = scripts.runner_for("txt2img")
    script = next(s for s in runner.selectable_scripts if s.name == "x/y/z plot (a1111)")
    labels = [getattr(c, "label", None) for c in script.controls]
    args = runner.default_args()[script.args_from:script.args_to]
    x_type = labels.index("X type")
    args[x_type], args[x_type + 1] = "Steps", "2, 6"
    y_type = labels.index("Y type")
    args[y_type], args[y_type + 1] = "CFG Scale", "3, 6"
    args[labels.index("Include Sub Images")] = True
    processed = run_script(runtime, "x/y/z plot (a1111)", args, job("txt2img"))
    assert len(processed.images) >= 5                  # the grid, then the 4 cells
    steps = sorted(str(t).split("Steps: ")[1].split(",")[0] for t in processed.infotexts[1:5])
    assert steps == ["2", "2", "6", "6"]
    assert processed.images[0].width >= 2 * 64 and processed.images[0].height >= 2 * 64


def test_custom_code_runs_with_allow_code(runtime):
    code = ("from modules.processing import process_images\n"
            "p.prompt = 'a blue circle on a white background'\nreturn process_images(p)")
    processed = run_script(runtime, "custom code", [code, 2], job("txt2img"))
    assert analyser.analyse(processed.images[0]).color == "blue"


# ---------------------------------------------------------------------------------------------------------------------
# Through the API
def test_api_runs_a_script_by_name_and_a_failing_selected_script_fails_the_job(runtime):
    from fastapi.testclient import TestClient

    from modules.api import create_api_app
    from modules.api.codec import decode_image, encode_image

    base = {"prompt": "a red circle on a white background", "steps": STEPS, "width": 64, "height": 64, "seed": 1,
            "cfg_scale": 6, "init_images": [encode_image(red_circle())], "denoising_strength": 0.3}
    with TestClient(create_api_app(runtime)) as client:
        r = client.post("/sdapi/v1/img2img", json={**base, "script_name": "loopback",
                                                   "script_args": [2, 0.5, "Linear", "None"]})
        assert r.status_code == 200, r.text
        pictures = [decode_image(data) for data in r.json()["images"]]
        assert [im.size for im in pictures] == [(128, 64), (64, 64), (64, 64)]   # grid of the 2 loops, the loops
        assert "Final denoising strength: 0.5" in r.json()["info"]

        r = client.post("/sdapi/v1/img2img", json={**base, "script_name": "custom code", "force_task_id": "boom",
                                                   "script_args": ["raise RuntimeError('boom')", 2]})
        assert r.status_code == 500
        assert "Custom code" in r.json()["detail"] and "RuntimeError: boom" in r.json()["detail"]
        entry = client.get("/sdapi/v1/history/boom").json()
        assert entry["status"] == "failed" and "Custom code" in entry["error"]


ALWAYS_ON_FAILS = '''
import modules.scripts as scripts


class Script(scripts.Script):
    def title(self):
        return "Fails in process"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        raise ZeroDivisionError("always-on went wrong")
'''


def test_api_always_on_failure_is_reported_and_the_job_goes_on(tmp_path):
    from fastapi.testclient import TestClient

    from modules.api import create_api_app

    rt = make_runtime(tmp_path)
    (rt.paths.extensions_dir / "fails" / "scripts").mkdir(parents=True)
    (rt.paths.extensions_dir / "fails" / "scripts" / "fails.py").write_text(ALWAYS_ON_FAILS)
    shared.bind(rt)
    try:
        scripts.load_scripts(rt.paths.extensions_dir)
        with TestClient(create_api_app(rt)) as client:
            r = client.post("/sdapi/v1/txt2img", json={"prompt": "a red circle on a white background", "steps": 4,
                                                       "width": 64, "height": 64, "force_task_id": "on"})
            assert r.status_code == 200, r.text
            assert len(r.json()["images"]) == 1
            import json

            comments = json.loads(r.json()["info"])["comments"]
            assert "Fails in process" in comments and "always-on went wrong" in comments
            entry = client.get("/sdapi/v1/history/on").json()
            assert entry["status"] == "done" and "always-on went wrong" in entry["error"]
    finally:
        scripts.unload_scripts()
        extensions.discover(None)
        shared.bind(None)
        rt.queue.close()


def test_custom_code_is_refused_without_allow_code(tmp_path):
    rt = make_runtime(tmp_path)
    shared.bind(rt)
    try:
        scripts.load_scripts(rt.paths.extensions_dir)
        assert "custom code" not in scripts.api_scripts_list()["txt2img"]
        with pytest.raises(ValueError, match="--allow-code"):
            scripts.runner_for("txt2img").bind_api_args(job("txt2img"), "custom code", ["return None", 2], {})
    finally:
        scripts.unload_scripts()
        extensions.discover(None)
        shared.bind(None)
        rt.queue.close()
