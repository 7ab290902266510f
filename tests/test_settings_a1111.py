"""A1111's settings through /sdapi/v1/options on a real Runtime with a tiny checkpoint: each option set is read back
and has its effect on what is generated and saved; A1111 settings whose feature does not exist here are refused
saying so; the page's Settings tab shows A1111's sections."""
from __future__ import annotations

import base64
import datetime
import io
import json

import gradio as gr
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from modules import settings_ui, ui
from modules.a1111 import settings_catalog
from modules.api import create_api_app
from modules.options import Options
from tests.test_api_live import start_runtime

API = "/sdapi/v1"
SIZE = 64


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, tiny_models_dir, tiny_configs_dir):
    rt = start_runtime(tmp_path_factory.mktemp("settings"), tiny_models_dir, tiny_configs_dir)
    yield rt
    rt.queue.close()


@pytest.fixture(scope="module")
def client(runtime):
    with TestClient(create_api_app(runtime)) as c:
        yield c


@pytest.fixture(autouse=True)
def fresh_options(runtime):
    """Every test starts from the defaults (the options object is the runtime's, shared by the API)."""
    defaults = Options()
    for key in Options.model_fields:
        if key != "sd_model_checkpoint":
            setattr(runtime.opts, key, getattr(defaults, key))
    yield


def txt2img(client, **fields):
    body = {"prompt": "a red circle", "steps": 2, "width": SIZE, "height": SIZE, "seed": 7, "sampler_name": "Euler a",
            "save_images": True, **fields}
    r = client.post(f"{API}/txt2img", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def set_options(client, **values):
    r = client.post(f"{API}/options", json=values)
    assert r.status_code == 200, r.text


def new_files(root, before: set) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file() and p not in before and not p.name.startswith("."))


def all_files(root) -> set:
    return {p for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------------
# GET / POST
# ---------------------------------------------------------------------------------------------------------------------
def test_get_lists_a1111_options_with_a1111_defaults_and_cmd_flags_are_unchanged(client):
    opts = client.get(f"{API}/options").json()
    expected = {"send_seed": True, "send_size": True, "samples_format": "png", "samples_filename_pattern": "",
                "save_images_add_number": True, "grid_save": True, "n_rows": -1, "export_for_4chan": True,
                "img_downscale_threshold": 4.0, "target_side_length": 4000, "grid_save_to_dirs": True,
                "directories_filename_pattern": "[date]", "directories_max_prompt_words": 8, "save_to_dirs": True,
                "CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic", "eta_noise_seed_delta": 0, "return_grid": True,
                "do_not_show_images": False, "keyedit_precision_attention": 0.1, "keyedit_precision_extra": 0.05,
                "extra_networks_default_multiplier": 1.0, "hidden_tabs": [], "hide_samplers": [],
                "quicksettings_list": ["sd_model_checkpoint"], "add_model_hash_to_info": True,
                "live_previews_enable": True, "sd_checkpoint_cache": 0, "img2img_color_correction": False,
                "outdir_txt2img_samples": "outputs/txt2img-images", "save_txt": False, "webp_lossless": False}
    assert {k: opts.get(k, "MISSING") for k in expected} == expected
    for refused in settings_catalog.REFUSED:
        assert refused not in opts
    flags = client.get(f"{API}/cmd-flags").json()
    assert "api" in flags and "send_seed" not in flags


def test_post_sets_saves_and_reads_back_a1111_options(client, runtime):
    values = {"send_seed": False, "samples_format": "jpg", "n_rows": 2, "hidden_tabs": ["Train"],
              "hide_samplers": ["DDIM"], "keyedit_precision_attention": 0.05, "extra_networks_default_multiplier": 0.8,
              "samples_filename_pattern": "[seed]-[prompt_words]", "show_progress_every_n_steps": 3}
    set_options(client, **values)
    got = client.get(f"{API}/options").json()
    assert {k: got[k] for k in values} == values
    saved = json.loads(runtime.paths.config_file.read_text())
    assert {k: saved[k] for k in values} == values


def test_reading_all_options_and_writing_them_back_works(client):
    """What a client does to change one setting: GET every option, change one, POST them all."""
    opts = client.get(f"{API}/options").json()
    opts["jpeg_quality"] = 61
    r = client.post(f"{API}/options", json=opts)
    assert r.status_code == 200, r.text
    assert client.get(f"{API}/options").json()["jpeg_quality"] == 61


def test_unknown_and_refused_options_are_4xx_naming_them(client):
    before = client.get(f"{API}/options").json()
    r = client.post(f"{API}/options", json={"jpeg_quality": 50, "no_such_option": 1})
    assert r.status_code == 422 and "no_such_option" in r.text and "unknown option" in r.text
    r = client.post(f"{API}/options", json={"js_modal_lightbox": False})
    assert r.status_code == 422
    assert "js_modal_lightbox" in r.text and "does not exist in this web UI" in r.text
    r = client.post(f"{API}/options", json={"interrogate_clip_num_beams": 3})
    assert r.status_code == 422 and "interrogate" in r.json()["detail"][0]["msg"]
    # a fixed one: its own value is fine, another is refused with the reason
    assert client.post(f"{API}/options", json={"sd_checkpoint_cache": 0}).status_code == 200
    r = client.post(f"{API}/options", json={"sd_checkpoint_cache": 3})
    assert r.status_code == 422 and "sd_checkpoint_cache" in r.text and "sd_checkpoints_limit" in r.text
    # in override_settings too
    r = client.post(f"{API}/txt2img", json={"prompt": "x", "steps": 1, "width": SIZE, "height": SIZE,
                                           "override_settings": {"face_restoration_model": "CodeFormer"}})
    assert r.status_code == 422 and "face_restoration_model" in r.text and "face restoration" in r.text
    assert client.get(f"{API}/options").json() == before


def test_every_section_key_is_an_option_and_no_option_is_also_refused():
    fields = set(Options.model_fields)
    for _, _, keys in settings_catalog.SECTIONS:
        assert set(keys) <= fields, set(keys) - fields
    assert not (fields & set(settings_catalog.REFUSED)) and not (fields & set(settings_catalog.FIXED))
    assert not (set(settings_catalog.REFUSED) & set(settings_catalog.FIXED))


# ---------------------------------------------------------------------------------------------------------------------
# effects
# ---------------------------------------------------------------------------------------------------------------------
def test_samples_format_jpg_saves_a_jpg(client, runtime):
    out = runtime.paths.data_dir / "outputs"
    before = all_files(runtime.paths.data_dir)
    set_options(client, samples_format="jpg")
    txt2img(client)
    files = new_files(runtime.paths.data_dir, before)
    assert [f.suffix for f in files] == [".jpg"], files
    assert Image.open(files[0]).format == "JPEG" and str(files[0]).startswith(str(out))


def test_save_to_dirs_and_directory_pattern_put_images_in_a_dated_folder(client, runtime):
    set_options(client, save_to_dirs=True, directories_filename_pattern="[date]/[prompt_words]",
                directories_max_prompt_words=2)
    before = all_files(runtime.paths.data_dir)
    txt2img(client, prompt="a red circle on grey")
    (image,) = new_files(runtime.paths.data_dir, before)
    today = datetime.date.today().strftime("%Y-%m-%d")
    assert image.parent.name == "a red" and image.parent.parent.name == today, image
    set_options(client, save_to_dirs=False)
    before = all_files(runtime.paths.data_dir)
    txt2img(client)
    (image,) = new_files(runtime.paths.data_dir, before)
    assert image.parent.name == "txt2img-images", image


def test_filename_pattern_without_number(client, runtime):
    set_options(client, samples_filename_pattern="[seed]-[prompt_words]", save_images_add_number=False)
    before = all_files(runtime.paths.data_dir)
    txt2img(client, seed=1234)
    txt2img(client, seed=1234)                       # the same name again: never overwritten
    names = sorted(f.name for f in new_files(runtime.paths.data_dir, before))
    assert names == ["1234-a red circle-1.png", "1234-a red circle.png"], names


def test_clip_skip_changes_the_image_and_the_infotext(client):
    one = txt2img(client, prompt="a blue square at the top left")
    set_options(client, CLIP_stop_at_last_layers=2)
    two = txt2img(client, prompt="a blue square at the top left")
    assert np.abs(pixels(one["images"][0]) - pixels(two["images"][0])).max() > 0
    assert "Clip skip: 2" in json.loads(two["info"])["infotexts"][0]
    assert "Clip skip" not in json.loads(one["info"])["infotexts"][0]


def test_eta_noise_seed_delta_changes_the_sampler_noise(client):
    plain = txt2img(client)
    set_options(client, eta_noise_seed_delta=31337)
    ensd = txt2img(client)
    assert np.abs(pixels(plain["images"][0]) - pixels(ensd["images"][0])).max() > 0
    assert "ENSD: 31337" in json.loads(ensd["info"])["infotexts"][0]


def test_infotext_options_leave_out_model_hash_and_version(client):
    full = json.loads(txt2img(client)["info"])["infotexts"][0]
    assert "Model hash: " in full and "Version: " in full
    set_options(client, add_model_hash_to_info=False, add_version_to_infotext=False)
    short = json.loads(txt2img(client)["info"])["infotexts"][0]
    assert "Model hash: " not in short and "Version: " not in short and "Model: " in short


def test_large_images_get_a_jpg_copy(client, runtime):
    set_options(client, img_downscale_threshold=0.0)     # every file is "large"
    before = all_files(runtime.paths.data_dir)
    txt2img(client)
    assert sorted(f.suffix for f in new_files(runtime.paths.data_dir, before)) == [".jpg", ".png"]
    set_options(client, export_for_4chan=False)
    before = all_files(runtime.paths.data_dir)
    txt2img(client)
    assert [f.suffix for f in new_files(runtime.paths.data_dir, before)] == [".png"]


def test_grid_rows_and_single_image_grids(client, runtime):
    set_options(client, n_rows=1)
    before = all_files(runtime.paths.data_dir)
    txt2img(client, batch_size=4)
    grids = [f for f in new_files(runtime.paths.data_dir, before) if f.name.startswith("grid-")]
    assert len(grids) == 1 and Image.open(grids[0]).size == (4 * SIZE, SIZE)
    set_options(client, grid_only_if_multiple=False, grid_extended_filename=True)
    before = all_files(runtime.paths.data_dir)
    txt2img(client, seed=99)
    grids = [f for f in new_files(runtime.paths.data_dir, before) if f.name.startswith("grid-")]
    assert len(grids) == 1 and "-99" in grids[0].name, grids


def test_send_seed_and_send_size_keep_the_targets_seed_and_size(runtime):
    import gradio as gr
    from modules import ui_habits

    names, values = ["prompt", "seed", "width", "height", "steps"], ["x", 5, 64, 64, 3]
    assert ui_habits._sent_fields(runtime, names, values) == values
    runtime.opts.send_seed = False
    runtime.opts.send_size = False
    assert ui_habits._sent_fields(runtime, names, values) == ["x", gr.update(), gr.update(), gr.update(), 3]


# ---------------------------------------------------------------------------------------------------------------------
# the Settings tab
# ---------------------------------------------------------------------------------------------------------------------
def test_settings_tab_has_sections_search_and_a_vae_dropdown(runtime):
    with gr.Blocks() as demo:
        ui.settings_tab(runtime)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    for section in ("saving-images", "saving-paths", "saving-to-dirs", "sd", "sampler-params", "live-previews",
                    "ui", "infotext", "upscaling", "system"):
        assert f"settings_section_{section}" in by_id, section
    assert "settings_search" in by_id
    vae = by_id["setting_sd_vae"]
    assert isinstance(vae, gr.Dropdown) and [c[0] for c in vae.choices][:2] == ["Automatic", "None"]
    assert isinstance(by_id["setting_hidden_tabs"], gr.Dropdown) and by_id["setting_hidden_tabs"].multiselect
    for refused in ("js_modal_lightbox", "face_restoration_model", "sd_checkpoint_cache"):
        assert f"setting_{refused}" not in by_id
    assert "setting_send_seed" in by_id and "setting_samples_format" in by_id


def test_changed_settings_lists_what_differs_from_the_default(runtime):
    assert "default value" in settings_ui.changed_settings_html(runtime)
    runtime.opts.jpeg_quality = 42
    text = settings_ui.changed_settings_html(runtime)
    assert "jpeg_quality" in text and "42" in text and "80" in text and "samples_format" not in text


def test_page_options_hidden_tabs_hide_samplers_token_counters_and_quicksettings(runtime, client):
    set_options(client, hidden_tabs=["Train"], hide_samplers=["DDIM"], disable_token_counters=True,
                quicksettings_list=["sd_model_checkpoint", "CLIP_stop_at_last_layers"])
    demo = ui.create_ui(runtime)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert by_id["tab_train"].visible is False and by_id["tab_txt2img"].visible is not False
    samplers = [c[0] for c in by_id["txt2img_sampling"].choices]
    assert "DDIM" not in samplers and "Euler a" in samplers
    assert by_id["txt2img_token_counter"].visible is False
    # the quick setting sits in the top row (once: not in the Settings tab too) and applies when changed
    quick = by_id["setting_CLIP_stop_at_last_layers"]
    row = by_id["quicksettings"]
    assert quick in _descendants(row)
    assert sum(1 for b in demo.blocks.values() if getattr(b, "elem_id", None) == "setting_CLIP_stop_at_last_layers") == 1
    apply = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "apply"
                 and f.inputs == [quick])
    assert apply(2) == "" and runtime.opts.CLIP_stop_at_last_layers == 2
    assert json.loads(runtime.paths.config_file.read_text())["CLIP_stop_at_last_layers"] == 2
    assert "CLIP_stop_at_last_layers" in apply(99)          # refused, saying which


def _descendants(block):
    for child in getattr(block, "children", []):
        yield child
        yield from _descendants(child)
