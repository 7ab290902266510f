"""Extras: the postprocessing scripts (A1111's ``scripts_postprocessing`` contract) through the extras API and the
Extras tab; upscaler models in /sdapi/v1/upscalers, Extras and hires fix."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from modules import postprocessing, scripts, shared
from modules.api import create_api_app
from modules.builtin_scripts.postprocessing_upscale import ScriptPostprocessingUpscale
from modules.options import Options
from modules.scripts_postprocessing import (PostprocessedImage, PostprocessingError, ScriptPostprocessing,
                                            ScriptPostprocessingRunner)
from tests.test_api import API, decode, error_text, make_runtime, png_b64
from tests.test_upscalers import write_esrgan

A1111_SCRIPTS = Path(__file__).resolve().parents[2] / "shared" / "third-party" / "a1111-extensions" / \
    "a1111-v1.10.1-scripts"
if not A1111_SCRIPTS.is_dir():
    A1111_SCRIPTS = Path("/work/shared/third-party/a1111-extensions/a1111-v1.10.1-scripts")


def known_image(w: int = 40, h: int = 24) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(autouse=True)
def no_loaded_scripts():
    scripts.unload_scripts()
    yield
    scripts.unload_scripts()


@pytest.fixture
def runtime(tmp_path):
    rt = make_runtime(tmp_path)
    shared.bind(rt)  # as the app does: extensions' scripts see this runtime's upscalers
    yield rt
    shared.bind(None)
    rt.queue.close()


@pytest.fixture
def client(runtime):
    with TestClient(create_api_app(runtime)) as c:
        yield c
        runtime.queue.close()


# ---------------------------------------------------------------------------------------------------------------------
# the API
# ---------------------------------------------------------------------------------------------------------------------
def test_lanczos_x2_equals_pillow_through_the_api(client, runtime):
    source = known_image()
    r = client.post(f"{API}/extra-single-image", json={"image": png_b64(source), "upscaler_1": "Lanczos",
                                                       "upscaling_resize": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    out = decode(body["image"]).convert("RGB")
    assert np.array_equal(np.asarray(out), np.asarray(source.resize((80, 48), Image.Resampling.LANCZOS)))
    assert "Postprocess upscale by: 2" in body["html_info"] and "Postprocess upscaler: Lanczos" in body["html_info"]
    assert not (runtime.paths.outputs_dir / "extras-images").exists()  # A1111's API does not save extras
    assert runtime.queue.history()[0].kind == "extras"


def test_saved_extras_keep_the_source_parameters_and_add_the_extras_infotext(client, runtime):
    r = client.post(f"{API}/extra-single-image", json={
        "image": png_b64(known_image(), parameters="a red circle\nSteps: 4, Seed: 1"), "upscaler_1": "Nearest",
        "upscaling_resize": 2, "upscaler_2": "Lanczos", "extras_upscaler_2_visibility": 0.5, "save_images": True})
    assert r.status_code == 200, r.text
    files = list((runtime.paths.outputs_dir / "extras-images").glob("*.png"))
    assert len(files) == 1
    with Image.open(files[0]) as saved:
        assert saved.size == (80, 48)
        assert saved.text["parameters"] == "a red circle\nSteps: 4, Seed: 1"
        assert saved.text["extras"] == ("Postprocess upscale by: 2.0, Postprocess upscaler: Nearest, "
                                        "Postprocess upscaler 2: Lanczos")
        blend = Image.blend(known_image().resize((80, 48), Image.Resampling.NEAREST),
                            known_image().resize((80, 48), Image.Resampling.LANCZOS), 0.5)
        assert np.abs(np.asarray(saved.convert("RGB"), dtype=int) - np.asarray(blend, dtype=int)).max() <= 1


def test_batch_scale_to_with_and_without_crop(client):
    images = [{"data": png_b64(known_image(40, 24)), "name": "a.png"},
              {"data": png_b64(known_image(30, 30)), "name": "b.png"}]
    r = client.post(f"{API}/extra-batch-images", json={"imageList": images, "resize_mode": 1, "upscaler_1": "Lanczos",
                                                       "upscaling_resize_w": 100, "upscaling_resize_h": 60})
    assert r.status_code == 200, r.text
    assert [decode(b).size for b in r.json()["images"]] == [(100, 60), (100, 60)]
    assert "Postprocess upscale to: 100x60" in r.json()["html_info"]
    r = client.post(f"{API}/extra-batch-images", json={"imageList": images[:1], "resize_mode": 1,
                                                       "upscaler_1": "Lanczos", "upscaling_crop": False,
                                                       "upscaling_resize_w": 100, "upscaling_resize_h": 40})
    assert decode(r.json()["images"][0]).size == (96, 56)  # 2.5x (covers 100x40), multiples of 8 as A1111


BAD_EXTRAS = [
    ({"upscaling_resize": 0}, "upscaling_resize"),
    ({"upscaling_resize": 100}, "upscaling_resize"),
    ({"upscaler_1": "Magic"}, "upscaler_1"),
    ({"upscaler_2": "Magic"}, "upscaler_2"),
    ({"gfpgan_visibility": 0.5}, "face restoration"),
    ({"codeformer_visibility": 1}, "codeformer_visibility"),
    ({"resize_mode": 2}, "resize_mode"),
    ({"image": "not base64!"}, "image"),
    ({"image": ""}, "image"),
]


@pytest.mark.parametrize("fields, named", BAD_EXTRAS, ids=[repr(f)[:30] for f, _ in BAD_EXTRAS])
def test_bad_extras_input_is_a_422_naming_the_field(client, runtime, fields, named):
    r = client.post(f"{API}/extra-single-image", json={"image": png_b64(known_image()), "upscaler_1": "Lanczos",
                                                       **fields})
    assert r.status_code == 422 and named in error_text(r), r.text
    assert runtime.queue.history() == []
    r = client.post(f"{API}/extra-batch-images", json={"imageList": []})
    assert r.status_code == 422 and "imageList" in error_text(r)


def test_upscaler_model_in_the_list_and_in_extras(client, runtime):
    path = write_esrgan(runtime.paths.data_dir / "models" / "ESRGAN", "tiny-2x", 2)
    realesrgan = write_esrgan(runtime.paths.data_dir / "models" / "RealESRGAN", "RealESRGAN_x2plus", 2)
    assert client.get(f"{API}/realesrgan-models").json() == [{"name": "RealESRGAN_x2plus", "path": str(realesrgan),
                                                              "scale": 2}]
    realesrgan.unlink()
    listed = client.get(f"{API}/upscalers").json()
    assert listed[-1] == {"name": "tiny-2x", "model_name": "ESRGAN", "model_path": str(path), "model_url": None,
                          "scale": 2}
    r = client.post(f"{API}/extra-single-image", json={"image": png_b64(known_image()), "upscaler_1": "tiny-2x"})
    assert r.status_code == 200, r.text
    out = np.asarray(decode(r.json()["image"]).convert("RGB"), dtype=float)
    assert out.shape == (48, 80, 3)
    lanczos = np.asarray(known_image().resize((80, 48), Image.Resampling.LANCZOS), dtype=float)
    assert np.abs(out - lanczos).mean() > 5  # the model's picture, not a resize
    (path.parent / "broken.safetensors").write_bytes(b"not a model at all")
    r = client.post(f"{API}/extra-single-image", json={"image": png_b64(known_image()), "upscaler_1": "broken"})
    assert r.status_code == 422 and "broken.safetensors: not a readable model file" in error_text(r)


# ---------------------------------------------------------------------------------------------------------------------
# the contract and the runner
# ---------------------------------------------------------------------------------------------------------------------
class Invert(ScriptPostprocessing):
    name = "Invert"
    order = 2000

    def ui(self):
        import gradio as gr

        return {"amount": gr.Slider(0, 1, value=1, label="Invert")}

    def process_firstpass(self, pp, amount=1):
        pp.info["Target"] = f"{pp.shared.target_width}x{pp.shared.target_height}"

    def process(self, pp, amount=1):
        if amount:
            pp.image = Image.eval(pp.image, lambda v: 255 - v)
            pp.info["Inverted"] = "Inverted"
            pp.extra_images.append(Image.new("RGB", (8, 8), "green"))


class Broken(ScriptPostprocessing):
    name = "Broken"

    def process(self, pp):
        raise RuntimeError("boom")


def test_runner_orders_scripts_passes_their_args_and_saves_extra_images(tmp_path):
    runner = ScriptPostprocessingRunner([Invert(), ScriptPostprocessingUpscale()])
    assert [s.name for s in runner.scripts] == ["Upscale", "Invert"]
    args = runner.create_args_for_run({"Upscale": {"upscaler_1_name": "Nearest", "upscale_by": 2}})
    result = postprocessing.run_extras(runner, [postprocessing.ExtrasSource(known_image(), "src.png")], args,
                                       opts=Options(), outdir=tmp_path)
    expected = Image.eval(known_image().resize((80, 48), Image.Resampling.NEAREST), lambda v: 255 - v)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(expected))
    # every script's first pass (Invert reads the announced size) runs before any process
    assert result.infotexts[0] == ("Target: 80x48, Postprocess upscale by: 2, Postprocess upscaler: Nearest, "
                                   "Inverted")
    assert len(result.files) == 2 and all(Path(f).exists() and "src" in Path(f).name for f in result.files)
    off = runner.create_args_for_run({"Invert": {"amount": 0}, "Upscale": {"upscale_enabled": False}})
    assert postprocessing.run_extras(runner, [postprocessing.ExtrasSource(known_image())], off, opts=Options(),
                                     outdir=tmp_path, save=False).images[0].size == (40, 24)


def test_a_failing_postprocessing_script_is_an_error_naming_it():
    runner = ScriptPostprocessingRunner([Broken()])
    with pytest.raises(PostprocessingError, match="'Broken' failed in process.*boom"):
        runner.run(PostprocessedImage(known_image()), runner.create_args_for_run({}))


def test_batch_from_directory_stays_inside_allowed_folders(tmp_path, runtime):
    roots = postprocessing.allowed_roots(runtime.paths.data_dir, runtime.args)
    inside = runtime.paths.data_dir / "to-upscale"
    inside.mkdir()
    known_image().save(inside / "one.png")
    (inside / "notes.txt").write_text("not a picture")
    sources, target = postprocessing.collect_sources(2, None, None, "to-upscale", "done", roots)
    assert [s.name for s in sources] == ["one.png"] and target == runtime.paths.data_dir / "done"
    outside = tmp_path.parent / "elsewhere"
    outside.mkdir(exist_ok=True)
    for input_dir, output_dir, field in ((str(outside), "", "input_dir"), ("../..", "", "input_dir"),
                                         ("to-upscale", str(outside), "output_dir")):
        with pytest.raises(postprocessing.ExtrasError, match=f"{field}: .* outside the folders"):
            postprocessing.collect_sources(2, None, None, input_dir, output_dir, roots)
    allowed = postprocessing.allowed_roots(runtime.paths.data_dir, type("A", (), {"gradio_allowed_path": [outside]}))
    assert postprocessing.allowed_dir(str(outside), allowed, "input_dir") == outside.resolve()
    with pytest.raises(postprocessing.ExtrasError, match="files: notes.txt is not a readable image"):
        postprocessing.collect_sources(1, None, [inside / "notes.txt"], "", "", roots)


# ---------------------------------------------------------------------------------------------------------------------
# the Extras tab
# ---------------------------------------------------------------------------------------------------------------------
def _blocks_components(demo) -> dict[str, object]:
    return {getattr(c, "elem_id", None): c for c in demo.blocks.values() if getattr(c, "elem_id", None)}


def test_extras_tab_runs_the_upscale_script_and_saves(runtime):
    import gradio as gr

    from modules import ui

    write_esrgan(runtime.paths.data_dir / "models" / "ESRGAN", "tiny-2x", 2)
    with gr.Blocks() as demo:
        with gr.Tabs():
            with gr.Tab("Extras", id="extras"):
                ui.extras_tab(runtime)
    found = _blocks_components(demo)
    for elem_id in ("extras_image", "extras_image_batch", "extras_batch_input_dir", "extras_generate",
                    "extras_upscaler_1", "extras_upscaler_2", "extras_upscaler_2_visibility",
                    "extras_upscaling_resize", "extras_upscaling_resize_w", "extras_upscaling_crop"):
        assert elem_id in found, elem_id
    assert "tiny-2x" in [c[0] for c in found["extras_upscaler_1"].choices]
    click = next(fn for fn in demo.fns.values() if fn.name == "do_extras")
    runner = scripts.postprocessing_runner()
    args = runner.create_args_for_run({"Upscale": {"upscaler_1_name": "tiny-2x", "upscale_by": 2}})
    images, info = click.fn(0, known_image(), None, "", "", True, *args)
    assert images[0].size == (80, 48) and "Postprocess upscaler: tiny-2x" in info
    saved = list((runtime.paths.outputs_dir / "extras-images").glob("*.png"))
    assert len(saved) == 1 and Image.open(saved[0]).text["extras"].startswith("Postprocess upscale by: 2")
    shown, message = click.fn(2, None, None, str(runtime.paths.data_dir.parent), "", True, *args)
    assert "outside the folders" in message


# ---------------------------------------------------------------------------------------------------------------------
# A1111's own postprocessing_upscale.py as an extension
# ---------------------------------------------------------------------------------------------------------------------
def test_a1111_postprocessing_upscale_runs_through_the_extras_api(tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(A1111_SCRIPTS, data_dir / "extensions" / "a1111-scripts")
    runtime = make_runtime(data_dir)
    shared.bind(runtime)
    try:
        scripts.load_scripts(runtime.paths.extensions_dir)
        runner = scripts.postprocessing_runner()
        upscale = next(s for s in runner.scripts if s.name == "Upscale")
        assert "a1111-scripts" in upscale.filename, [e.message for e in scripts.extensions.failures]
        assert "Simple Upscale" in [s.name for s in runner.scripts]
        with TestClient(create_api_app(runtime)) as client:
            r = client.post(f"{API}/extra-single-image", json={"image": png_b64(known_image()),
                                                               "upscaler_1": "Lanczos", "upscaling_resize": 2})
        assert r.status_code == 200, r.text
        assert decode(r.json()["image"]).size == (80, 48)
        assert "Postprocess upscaler: Lanczos" in r.json()["html_info"]
        # ... and in the Extras tab, with its own controls (its width/height switch button is not in the built-in)
        import gradio as gr

        from modules import ui

        with gr.Blocks() as demo:
            ui.extras_tab(runtime)
        assert "upscaling_res_switch_btn" in _blocks_components(demo)
        click = next(fn for fn in demo.fns.values() if fn.name == "do_extras")
        args = runner.create_args_for_run({"Upscale": {"upscaler_1_name": "Nearest", "upscale_by": 2,
                                                       "upscale_mode": 0}})
        images, info = click.fn(0, known_image(), None, "", "", True, *args)
        assert images[0].size == (80, 48) and "Postprocess upscaler: Nearest" in info, info
    finally:
        shared.bind(None)
        runtime.queue.close()
