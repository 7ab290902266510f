"""The Script contract, the per-tab ScriptRunner (hooks, arg layout, UI, API) and script_callbacks on the tiny model."""
from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from modules import extensions, infotext, script_callbacks, scripts
from modules.options import Options
from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.progress import JobState

SIZE = 64


def make_p(model: Any, runner: scripts.ScriptRunner | None = None, **kw: Any) -> StableDiffusionProcessingTxt2Img:
    """A small txt2img job on ``model`` that saves nothing, bound to ``runner`` when given."""
    kw = {"prompt": "a red circle", "steps": 2, "width": SIZE, "height": SIZE, "seed": 1234,
          "do_not_save_samples": True, "do_not_save_grid": True, **kw}
    p = StableDiffusionProcessingTxt2Img(**kw)
    p.sd_model, p.opts, p.state = model, Options(samples_save=False, grid_save=False), JobState()
    if runner is not None:
        p.scripts, p.script_args = runner, runner.default_args()
    return p


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


class Suffix(scripts.Script):
    """Always on: appends a suffix to every prompt when enabled."""

    def title(self):
        return "Test suffix"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Checkbox(False, label="Enabled"), gr.Textbox("blue background", label="Suffix"),
                gr.Slider(0, 10, value=3, step=1, label="Strength"), gr.Dropdown(["a", "b"], value="b", type="index",
                                                                               label="Pick")]

    def process(self, p, enabled, suffix, strength, pick):
        if enabled:
            p.all_prompts = [f"{prompt}, {suffix}" for prompt in p.all_prompts]
            p.extra_generation_params["Test suffix"] = suffix


class Recorder(scripts.Script):
    """Always on: records every hook call with its arguments; replaces each image by a grey one."""
    calls: list[tuple[str, tuple, dict]] = []

    def title(self):
        return "Recorder"

    def show(self, is_img2img):
        return scripts.AlwaysVisible if not is_img2img else False

    def ui(self, is_img2img):
        return [gr.Number(value=7, label="Value")]

    def _record(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))

    def setup(self, p, *args):
        self._record("setup", *args)

    def before_process(self, p, *args):
        self._record("before_process", *args)

    def process(self, p, *args):
        self._record("process", *args)

    def before_process_batch(self, p, *args, **kwargs):
        self._record("before_process_batch", *args, **kwargs)

    def process_batch(self, p, *args, **kwargs):
        self._record("process_batch", *args, **kwargs)

    def postprocess_batch(self, p, *args, **kwargs):
        self._record("postprocess_batch", *args, images=len(kwargs["images"]), batch_number=kwargs["batch_number"])

    def postprocess_image(self, p, pp, *args):
        self._record("postprocess_image", *args)
        pp.image = Image.new("RGB", pp.image.size, (128, 128, 128))

    def postprocess(self, p, processed, *args):
        self._record("postprocess", *args, images=len(processed.images))


class Twice(scripts.Script):
    """Selectable: runs the job twice with consecutive seeds."""

    def title(self):
        return "Twice"

    def ui(self, is_img2img):
        return [gr.Slider(1, 100, value=1, step=1, label="Seed step"), gr.Checkbox(True, label="Keep")]

    def run(self, p, seed_step, keep):
        first = process_images(p.model_copy())
        second_p = p.model_copy()
        second_p.seed = p.seed + int(seed_step)
        second = process_images(second_p)
        first.images += second.images
        first.infotexts += second.infotexts
        return first


class Plain(scripts.Script):
    """Selectable without run(): generates normally."""

    def title(self):
        return "Plain"


class Hidden(scripts.Script):
    def title(self):
        return "Hidden"

    def show(self, is_img2img):
        return False


def runner(is_img2img: bool = False) -> scripts.ScriptRunner:
    return scripts.ScriptRunner([Suffix(), Recorder(), Twice(), Plain(), Hidden()], is_img2img)


@pytest.fixture(autouse=True)
def fresh_registry():
    """No callbacks, no failures: a failure switches off the file that caused it (here: this test file)."""
    script_callbacks.clear_callbacks()
    extensions.discover(None)
    yield
    script_callbacks.clear_callbacks()
    extensions.discover(None)


# ---------------------------------------------------------------------------------------------------------------------
# contract and layout
# ---------------------------------------------------------------------------------------------------------------------
def test_runner_sorts_scripts_by_show_and_lays_out_args():
    r = runner()
    assert [s.name for s in r.alwayson_scripts] == ["test suffix", "recorder"]
    assert [s.name for s in r.selectable_scripts] == ["twice", "plain"]
    assert [s.name for s in runner(is_img2img=True).alwayson_scripts] == ["test suffix"]
    args = r.default_args()
    assert args == [0, False, "blue background", 3, 1, 7, 1, True]   # dropdown index: "b" -> 1
    suffix, recorder, twice, plain = r.scripts
    assert (suffix.args_from, suffix.args_to, recorder.args_from, twice.args_from, plain.args_from, plain.args_to) == \
        (1, 5, 5, 6, 8, 8)
    assert suffix.elem_id("suffix") == "script_txt2img_test_suffix_suffix"
    assert recorder.elem_id("value") == "script_recorder_value"   # shown on one tab only: no tab part


def test_setup_ui_builds_dropdown_and_controls_in_a_page():
    r = runner()
    with gr.Blocks():
        inputs = r.setup_ui()
    dropdown = inputs[0]
    assert isinstance(dropdown, gr.Dropdown) and dropdown.type == "index"
    assert [c[0] for c in dropdown.choices] == ["None", "Twice", "Plain"]
    assert len(inputs) == 8 and all(c is not None for c in inputs)
    assert r.default_args()[1:] == [False, "blue background", 3, 1, 7, 1, True]


# ---------------------------------------------------------------------------------------------------------------------
# generation with scripts
# ---------------------------------------------------------------------------------------------------------------------
def test_always_on_process_hook_changes_the_result(tiny_sd1_model):
    r = runner()
    plain = r.run(make_p(tiny_sd1_model, r))
    p = make_p(tiny_sd1_model, r)
    p.script_args[1] = True
    changed = r.run(p)
    assert changed.all_prompts == ["a red circle, blue background"]
    assert "Test suffix: blue background" in changed.infotexts[0]
    assert infotext.parse_generation_parameters(changed.infotexts[0])["Prompt"] == "a red circle, blue background"
    assert plain.all_prompts == ["a red circle"]


def test_hooks_get_their_args_and_call_point_kwargs(tiny_sd1_model):
    Recorder.calls.clear()
    r = runner()
    p = make_p(tiny_sd1_model, r, batch_size=2)
    p.script_args[5] = 9
    processed = r.run(p)
    names = [name for name, _, _ in Recorder.calls]
    assert names == ["setup", "before_process", "process", "before_process_batch", "process_batch",
                     "postprocess_batch", "postprocess_image", "postprocess_image", "postprocess"]
    assert all(args == (9,) for _, args, _ in Recorder.calls)
    kwargs = dict((name, kw) for name, _, kw in Recorder.calls)
    assert kwargs["before_process_batch"] == {"batch_number": 0, "prompts": ["a red circle"] * 2,
                                              "seeds": [1234, 1235], "subseeds": processed.all_subseeds}
    assert kwargs["process_batch"]["seeds"] == [1234, 1235]
    assert kwargs["postprocess_batch"] == {"images": 2, "batch_number": 0}
    assert kwargs["postprocess"] == {"images": 2}   # no grid: do_not_save_grid, as A1111
    grey = processed.images[processed.index_of_first_image]
    assert (pixels(grey) == 128).all()   # postprocess_image replaced the image


def test_selected_script_runs_and_none_result_falls_back_to_process_images(tiny_sd1_model):
    r = runner()
    p = make_p(tiny_sd1_model, r)
    p.script_args[0] = 1                  # "Twice"
    p.script_args[6] = 5
    twice = r.run(p)
    assert len(twice.images) == 2
    assert [str(infotext.parse_generation_parameters(t)["Seed"]) for t in twice.infotexts] == ["1234", "1239"]
    p = make_p(tiny_sd1_model, r)
    plain = r.run(p, 2, *p.script_args[1:])   # "Plain" has no run(): a normal generation
    assert len(plain.images) == 1


def test_short_script_args_take_defaults(tiny_sd1_model):
    r = runner()
    p = make_p(tiny_sd1_model, r)
    p.script_args = [0, True]            # only the first always-on arg given
    out = r.run(p)
    assert out.all_prompts == ["a red circle, blue background"]


# ---------------------------------------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------------------------------------
def test_api_binding_selects_scripts_and_fills_defaults(tiny_sd1_model):
    r = runner()
    p = make_p(tiny_sd1_model)
    r.bind_api_args(p, "TWICE", [4], {"Test Suffix": {"args": [True, "green", 5, "a"]}})
    assert p.scripts is r
    assert p.script_args == [1, True, "green", 5, 0, 7, 4, True]
    out = r.run_from_api(make_p(tiny_sd1_model), None, [], {"test suffix": {"args": [True]}})
    assert out.all_prompts == ["a red circle, blue background"]


@pytest.mark.parametrize("name, args, alwayson, message", [
    ("nope", [], {}, "script 'nope' not found on txt2img; available: 'twice', 'plain'"),
    ("test suffix", [], {}, "is an always-on script"),
    (None, [], {"twice": {"args": []}}, "is a selectable script"),
    (None, [], {"missing": {"args": []}}, "available: 'test suffix', 'recorder'"),
    ("twice", [1, True, 3], {}, "script 'twice': takes 2 argument(s), got 3"),
    ("twice", ["five"], {}, "script 'twice': argument 0 ('Seed step'): expected a number, got 'five'"),
    ("twice", [500], {}, "argument 0 ('Seed step'): expected a number from 1 to 100"),
    ("twice", [1, "yes"], {}, "script 'twice': argument 1 ('Keep'): expected true or false"),
    (None, [], {"test suffix": {"args": [True, 5]}}, "script 'test suffix': argument 1 ('Suffix'): expected a string"),
    (None, [], {"test suffix": {"args": [True, "x", 1, "c"]}}, "argument 3 ('Pick'): expected one of ['a', 'b']"),
    (None, [], {"test suffix": [True]}, "expected {\"args\": [...]}"),
])
def test_api_binding_rejects_bad_scripts_and_args(tiny_sd1_model, name, args, alwayson, message):
    with pytest.raises(ValueError) as e:
        runner().bind_api_args(make_p(tiny_sd1_model), name, args, alwayson)
    assert message in str(e.value)


def test_script_info_has_a1111_shape():
    info = {entry["name"]: entry for entry in runner().script_info()}
    assert set(info) == {"test suffix", "recorder", "twice", "plain"}
    assert info["test suffix"]["is_alwayson"] and not info["twice"]["is_alwayson"]
    assert info["twice"]["is_img2img"] is False
    assert info["twice"]["args"][0] == {"label": "Seed step", "value": 1, "minimum": 1, "maximum": 100, "step": 1,
                                        "choices": None}
    assert info["test suffix"]["args"][3]["choices"] == ["a", "b"]


# ---------------------------------------------------------------------------------------------------------------------
# callbacks
# ---------------------------------------------------------------------------------------------------------------------
def test_cfg_denoiser_sees_every_step_and_can_change_the_result(tiny_sd1_model):
    baseline = process_images(make_p(tiny_sd1_model, steps=3)).images[0]
    seen, denoised, after = [], [], []

    def record(params: script_callbacks.CFGDenoiserParams) -> None:
        seen.append((params.sampling_step, params.total_sampling_steps, tuple(params.x.shape),
                     tuple(params.text_cond.shape), tuple(params.text_uncond.shape), tuple(params.sigma.shape)))

    script_callbacks.on_cfg_denoiser(record, name="record")
    script_callbacks.on_cfg_denoised(lambda params: denoised.append(params.sampling_step))
    script_callbacks.on_cfg_after_cfg(lambda params: after.append(tuple(params.x.shape)))
    unchanged = process_images(make_p(tiny_sd1_model, steps=3)).images[0]
    assert [s[:2] for s in seen] == [(0, 3), (1, 3), (2, 3)]
    x_shape, cond_shape, uncond_shape, sigma_shape = seen[0][2:]
    assert x_shape[0] == 2 and cond_shape[0] == 1 and uncond_shape[0] == 1 and sigma_shape == (2,)
    assert denoised == [0, 1, 2] and after == [(1, 4, 16, 16)] * 3
    assert np.array_equal(pixels(unchanged), pixels(baseline))   # observing changes nothing

    def zero_prompt(params: script_callbacks.CFGDenoiserParams) -> None:
        params.text_cond = params.text_cond * 0

    script_callbacks.on_cfg_denoiser(zero_prompt)
    changed = process_images(make_p(tiny_sd1_model, steps=3)).images[0]
    assert np.abs(pixels(changed) - pixels(baseline)).mean() > 0.5


def test_failing_callback_is_removed_and_generation_finishes(tiny_sd1_model, caplog):
    calls = []

    def broken(params):
        calls.append(params.sampling_step)
        raise RuntimeError("boom")

    script_callbacks.on_cfg_after_cfg(broken, name="broken")
    out = process_images(make_p(tiny_sd1_model, steps=3))
    assert len(out.images) == 1 and calls == [0]
    assert "callback cfg_after_cfg (broken)" in caplog.text and "boom" in caplog.text
    assert not script_callbacks.cfg_callbacks_active()


def test_callback_registry_functions():
    results = []
    script_callbacks.on_app_started(lambda demo, app: results.append((demo, app)), name="started")
    with gr.Blocks() as tab:
        gr.Textbox()
    script_callbacks.on_ui_tabs(lambda: [(tab, "My tab", "my_tab"), "garbage"])
    script_callbacks.on_infotext_pasted(lambda text, params: params.update(Seen=text))
    script_callbacks.app_started_callback("demo", "app")
    assert results == [("demo", "app")]
    assert script_callbacks.ui_tabs_callback() == [(tab, "My tab", "my_tab")]
    params: dict[str, Any] = {}
    script_callbacks.infotext_pasted_callback("text", params)
    assert params == {"Seen": "text"}
    script_callbacks.remove_current_script_callbacks()   # everything above was registered from this file
    script_callbacks.app_started_callback("demo", "app")
    assert len(results) == 1
    assert script_callbacks.ui_tabs_callback() == []
    with pytest.raises(TypeError):
        script_callbacks.on_model_loaded("not callable")
