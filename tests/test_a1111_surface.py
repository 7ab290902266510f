"""A1111's module surface for extensions (modules/a1111): names, settings API, ``shared.state``, the lifecycle
(preload.py, install.py, per-file loading), Gradio 3 idioms, and what the real third-party extensions import."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
import torch

from modules import cmd_args, extensions, script_callbacks, scripts, shared, ui
from modules.a1111 import lifecycle
from modules.a1111 import options as a1111_options
from modules.options import Options
from modules.paths import Paths
from modules.progress import JobState
from modules.runtime import Runtime
from tests.test_extensions import ext_dir, write_extension  # noqa: F401 - ext_dir is a fixture
from tests.test_scripts import make_p
from tests.third_party import A1111_EXTENSIONS, install_extension


@pytest.fixture(autouse=True)
def forget_a1111_state():
    """What a test registered through the A1111 surface (``ext_dir`` unloads the scripts)."""
    yield
    a1111_options.forget_registered()
    lifecycle.problems.clear()
    shared.bind(None)


def bind_runtime(data_dir: Path, models=None, args: list[str] | None = None) -> Runtime:
    paths = Paths.from_args(data_dir)
    runtime = Runtime(args=cmd_args.parse_args(["--data-dir", str(data_dir), *(args or [])]), paths=paths,
                      opts=Options.load(paths.config_file), models=models)
    shared.bind(runtime)
    return runtime


# ---------------------------------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------------------------------
def test_a1111_modules_resolve_with_real_behaviour(ext_dir):
    scripts.load_scripts(ext_dir)
    from modules import devices, errors, sd_schedulers, ui_components
    from modules.infotext_utils import parse_generation_parameters
    from modules.paths import models_path, script_path
    from modules.sd_samplers import samplers_map
    from modules.shared import cmd_opts, latent_upscale_modes, sd_upscalers

    assert devices.device.type in ("cpu", "cuda") and devices.cpu == torch.device("cpu")
    devices.torch_gc()
    assert [s.label for s in sd_schedulers.schedulers][:3] == ["Automatic", "Uniform", "Karras"]
    assert issubclass(ui_components.ToolButton, gr.Button)
    assert parse_generation_parameters("a cat\nSteps: 7, Sampler: Euler, Seed: 3")["Steps"] == "7"
    assert Path(script_path).is_dir() and models_path.endswith("models")
    assert samplers_map["k_euler_a"] == "Euler a"
    assert latent_upscale_modes["Latent (bicubic)"] == {"mode": "bicubic", "antialias": False}
    assert Path(cmd_opts.embeddings_dir).name == "embeddings" and cmd_opts.allow_code is False
    image = __import__("PIL.Image", fromlist=["Image"]).new("RGB", (8, 8))
    lanczos = next(u for u in sd_upscalers if u.name == "Lanczos")
    assert lanczos.scaler.upscale(image, 2, lanczos.data_path).size == (16, 16)
    errors.report("reported on purpose", exc_info=True)


def test_a_missing_a1111_name_is_named(ext_dir):
    with pytest.raises(AttributeError, match=r"modules.shared has no attribute 'foo_bar' \(an A1111 name"):
        shared.foo_bar  # noqa: B018
    with pytest.raises(AttributeError, match=r"modules.shared.opts has no attribute 'no_such_option'"):
        shared.opts.no_such_option  # noqa: B018
    write_extension(ext_dir, "uses-missing", "from modules.shared import interrogator_of_doom\n")
    write_extension(ext_dir, "missing-module", "from modules import hypernetworks_of_doom\n")
    scripts.load_scripts(ext_dir)
    problems = {ext.name: ext.problems[0] for ext in extensions.extensions}
    assert "'interrogator_of_doom'" in problems["uses-missing"]
    assert "an A1111 name this web UI does not provide" in problems["uses-missing"]
    assert "No module named 'modules.hypernetworks_of_doom' (an A1111 name" in problems["missing-module"]


# ---------------------------------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------------------------------
OPTION_EXTENSION = """
    import gradio as gr
    from modules import script_callbacks, shared

    def on_ui_settings():
        section = ("myext", "My extension")
        shared.opts.add_option("myext_level", shared.OptionInfo(
            3, "Level of detail", gr.Slider, {"minimum": 1, "maximum": 5, "step": 1}, section=section
        ).info("how much").needs_restart())
        shared.opts.add_option("myext_name", shared.OptionInfo("plain", "Name", section=section))

    script_callbacks.on_ui_settings(on_ui_settings)
"""


def test_an_extension_option_shows_in_settings_is_saved_and_read_back(ext_dir, tmp_path):
    write_extension(ext_dir, "myext", OPTION_EXTENSION)
    runtime = bind_runtime(tmp_path)
    scripts.load_scripts(ext_dir)
    assert shared.opts.myext_level == 3                       # registered without a page (API-only works)
    with gr.Blocks() as demo:
        ui.settings_tab(runtime)
    by_id = {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    slider = by_id["setting_myext_level"]
    assert isinstance(slider, gr.Slider) and slider.label == "Level of detail" and slider.maximum == 5
    assert isinstance(by_id["setting_myext_name"], gr.Textbox)
    assert any(isinstance(b, gr.Accordion) and b.label == "My extension" for b in demo.blocks.values())

    save = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "save")
    names = [block.elem_id.removeprefix("setting_") for block in (demo.fns[save_index(demo)].inputs)]
    values = [5 if name == "myext_level" else getattr(runtime.opts, name) for name in names]
    assert "myext_level" in save(*values)
    assert json.loads((tmp_path / "config.json").read_text())["myext_level"] == 5

    scripts.unload_scripts()                                   # a restart: nothing registered yet
    a1111_options.forget_registered()
    bind_runtime(tmp_path)
    assert shared.opts.myext_level == 5
    assert shared.opts.data["myext_name"] == "plain"
    shared.opts.myext_name = "fancy"
    shared.opts.save()
    assert json.loads((tmp_path / "config.json").read_text())["myext_name"] == "fancy"


def save_index(demo: gr.Blocks) -> int:
    return next(i for i, f in demo.fns.items() if getattr(f.fn, "__name__", "") == "save")


def test_the_settings_page_loads_the_saved_values_not_those_at_startup(tmp_path):
    """A page (re)load shows what was saved since the server started, so its next Apply reverts nothing."""
    runtime = bind_runtime(tmp_path)
    with gr.Blocks() as demo:
        _, saved_values, widgets = ui.settings_tab(runtime)
    save = demo.fns[save_index(demo)].fn
    names = [w.elem_id.removeprefix("setting_") for w in widgets]
    runtime.opts.jpeg_quality, runtime.opts.enable_pnginfo = 55, False       # saved by an earlier Apply
    values = dict(zip(names, saved_values()))
    assert (values["jpeg_quality"], values["enable_pnginfo"], values["sd_vae"]) == (55, False, "Automatic")
    assert save(*values.values()).startswith("0 setting(s) changed")
    values["CLIP_stop_at_last_layers"] = 2
    assert save(*values.values()).startswith("1 setting(s) changed: CLIP_stop_at_last_layers")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["jpeg_quality"], saved["enable_pnginfo"], saved["CLIP_stop_at_last_layers"]) == (55, False, 2)


def test_onchange_runs_when_the_option_changes(tmp_path):
    bind_runtime(tmp_path)
    seen = []
    shared.opts.add_option("myext_mode", shared.OptionInfo("a", "Mode", onchange=lambda: seen.append(
        shared.opts.myext_mode)))
    assert shared.opts.set("myext_mode", "b") and not shared.opts.set("myext_mode", "b")
    assert seen == ["b"]
    shared.opts.onchange("samples_format", lambda: seen.append(shared.opts.samples_format), call=False)
    shared.opts.set("samples_format", "jpg")
    assert seen == ["b", "jpg"]
    with pytest.raises(ValueError, match="samples_format"):
        shared.opts.set("samples_format", "bmp")


# ---------------------------------------------------------------------------------------------------------------------
# shared.state
# ---------------------------------------------------------------------------------------------------------------------
STATE_EXTENSION = """
    from modules import script_callbacks
    from modules.shared import state          # imported once, before any job, as extensions do

    SEEN = []

    def on_step(params):
        SEEN.append((state.job_count, state.sampling_step, state.job_no))
        if params.sampling_step == 1:
            state.interrupt()

    script_callbacks.on_cfg_denoiser(on_step)
"""


def test_interrupt_through_shared_state_stops_the_running_job(ext_dir, tmp_path, tiny_models_dir, make_manager):
    write_extension(ext_dir, "stopper", STATE_EXTENSION)
    manager = make_manager(tiny_models_dir)
    manager.load("sd1.safetensors")
    runtime = bind_runtime(tmp_path, models=manager)
    scripts.load_scripts(ext_dir)
    job_state = JobState()
    job_state.begin("txt2img", 1)
    p = make_p(manager.current, scripts.scripts_txt2img, n_iter=3, steps=4)
    p.state = None
    processed = runtime.run(p, job_state)
    module = sys.modules["ext_stopper_stopper"]
    assert job_state.interrupted and shared.state.current() is job_state
    # 3 asked, stopped during the first: its half-denoised picture is not kept, and no later batch ran
    assert processed.images == [] and processed.interrupted
    assert module.SEEN[0][0] == 3 and [s[1] for s in module.SEEN] == [0, 1]
    shared.state.job_count = 7
    assert job_state.job_count == 7
    assert shared.state.stopping_generation is False
    shared.state.stop_generating()
    assert job_state.stopping_generation is True


# ---------------------------------------------------------------------------------------------------------------------
# lifecycle
# ---------------------------------------------------------------------------------------------------------------------
def test_each_script_file_loads_on_its_own(ext_dir):
    folder = write_extension(ext_dir, "half-broken", """
        from modules import scripts

        class Good(scripts.Script):
            def title(self):
                return "Good one"
    """)
    (folder / "scripts" / "a_bad.py").write_text("raise RuntimeError('bad file')\n")
    write_extension(ext_dir, "all-broken", "import no_such_module_here\n")
    scripts.load_scripts(ext_dir)
    status = {item["name"]: item for item in extensions.api_list()}
    assert status["half-broken"]["status"] == "enabled"
    assert "a_bad.py failed in import: RuntimeError: bad file" in status["half-broken"]["problems"][0]
    assert "good one" in scripts.api_scripts_list()["txt2img"]
    assert status["all-broken"]["status"] == "failed"


INSTALL_PY = """
    import os
    from pathlib import Path
    import launch

    Path("runs.txt").open("a").write("ran\\n")
    assert launch.is_installed("torch") and not launch.is_installed("surely_not_installed_pkg")
    Path("constraint.txt").write_text(Path(os.environ["PIP_CONSTRAINT"]).read_text())
    try:
        launch.run_pip("install --no-index --dry-run torch==2.1.0", "an older torch")
    except RuntimeError as e:
        Path("refused.txt").write_text(str(e))
"""


def test_install_py_runs_once_and_again_after_a_change(ext_dir, tmp_path):
    folder = write_extension(ext_dir, "needs-deps", "", files={"install.py": textwrap.dedent(INSTALL_PY)})
    write_extension(ext_dir, "broken-installer", "", files={"install.py": "raise SystemExit('no network')\n"})
    first = lifecycle.run_installers(ext_dir, data_dir=tmp_path)
    assert first["needs-deps"] == "ran"
    assert first["broken-installer"].startswith("failed with exit code 1: no network")
    assert "torch==2.13.0" in (folder / "constraint.txt").read_text()
    assert "torchvision<0" in (folder / "constraint.txt").read_text()
    assert "(constraint) torch==2.13.0" in (folder / "refused.txt").read_text()   # pip could not replace torch
    assert torch.__version__.startswith("2.13.0")

    again = lifecycle.run_installers(ext_dir, data_dir=tmp_path)
    assert again["needs-deps"] == "unchanged" and again["broken-installer"].startswith("failed")
    assert (folder / "runs.txt").read_text() == "ran\n"
    (folder / "install.py").write_text((folder / "install.py").read_text() + "\n# changed\n")
    assert lifecycle.run_installers(ext_dir, data_dir=tmp_path)["needs-deps"] == "ran"
    assert (folder / "runs.txt").read_text() == "ran\nran\n"

    scripts.load_scripts(ext_dir)                              # reported on the extension, never fatal
    broken = next(ext for ext in extensions.extensions if ext.name == "broken-installer")
    assert any("install.py failed with exit code 1: no network" in p for p in broken.problems)


def test_an_installer_that_hangs_is_stopped(ext_dir, tmp_path):
    write_extension(ext_dir, "slow", "", files={"install.py": "import time\ntime.sleep(60)\n"})
    outcome = lifecycle.run_installers(ext_dir, data_dir=tmp_path, timeout=2)
    assert outcome == {"slow": "failed: did not finish within 2 s"}


def test_preload_adds_the_extensions_flags(tmp_path):
    ext_dir = tmp_path / "extensions"
    write_extension(ext_dir, "flags", "", files={"preload.py": textwrap.dedent("""
        def preload(parser):
            parser.add_argument("--flags-level", type=int, default=1, help="flags extension level")
    """)})
    write_extension(ext_dir, "bad-preload", "", files={"preload.py": "def preload(parser):\n    1 / 0\n"})
    write_extension(ext_dir, "off", "", files={"preload.py": "def preload(parser):\n    raise SystemExit(3)\n"})
    (tmp_path / "config.json").write_text(json.dumps({"disabled_extensions": ["off"]}))
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--flags-level", "4"], with_extensions=True)
    assert args.flags_level == 4
    assert any("ZeroDivisionError" in p for p in lifecycle.problems["bad-preload"])
    assert "off" not in lifecycle.problems                     # disabled in config.json: its preload never ran
    shared.bind(SimpleNamespace(args=args, paths=Paths.from_args(tmp_path)))
    assert shared.cmd_opts.flags_level == 4
    with pytest.raises(SystemExit):
        cmd_args.parse_args(["--data-dir", str(tmp_path), "--flags-level", "4"])   # without extensions


# ---------------------------------------------------------------------------------------------------------------------
# Gradio 3 idioms
# ---------------------------------------------------------------------------------------------------------------------
def test_gradio3_idioms_are_translated(ext_dir):
    write_extension(ext_dir, "old-gradio", """
        import gradio as gr
        from modules import scripts
        from modules.ui_components import FormRow, InputAccordion, ToolButton

        class Old(scripts.Script):
            def title(self):
                return "Old gradio"

            def ui(self, is_img2img):
                with gr.Box():
                    with FormRow(variant="compact"):
                        text = gr.Textbox(label="Text", show_copy_button=True).style(container=False)
                        button = ToolButton(value="x", tooltip="Press it")
                    gallery = gr.Gallery().style(grid=3, rounded=False)
                    image = gr.Image(source="upload", tool="sketch", type="pil")
                    with InputAccordion(False, label="Extra") as extra:
                        level = gr.Slider(1, 5, value=2, label="Level", tooltip="how much")
                button.click(fn=lambda: gr.Textbox.update(value="clicked"), outputs=[text], _js="() => []")
                return [text, extra, level, image]
    """)
    scripts.load_scripts(ext_dir)
    scripts.scripts_txt2img.default_args()                      # lays out the scripts' UI
    script = next(s for s in scripts.scripts_txt2img.scripts if s.title() == "Old gradio")
    assert script.source.active, script.source.extension.problems
    text, extra, level, _image = script.controls
    assert text.container is False and text.buttons == ["copy"] and level.info == "how much"
    assert extra.value is False and isinstance(extra, gr.Checkbox)
    assert gr.Dropdown.update(choices=["a"]) == {"__type__": "update", "choices": ["a"]}
    with gr.Blocks():
        with pytest.raises(TypeError):
            gr.Textbox(not_an_argument=1)            # anything else is still an error


# ---------------------------------------------------------------------------------------------------------------------
# the real extensions import
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not A1111_EXTENSIONS.is_dir(), reason="third-party test data not present")
def test_real_extensions_import(ext_dir):
    for name in ("a1111-v1.10.1-scripts", "a1111-sd-webui-tagcomplete"):
        install_extension(name, ext_dir)
    scripts.load_scripts(ext_dir)
    loaded = {Path(path).name for path, source in extensions.script_files.items() if source.error is None}
    failed = {Path(path).name: source.error for path, source in extensions.script_files.items() if source.error}
    assert {"loopback.py", "outpainting_mk_2.py", "poor_mans_outpainting.py", "sd_upscale.py", "custom_code.py",
            "prompt_matrix.py", "prompts_from_file.py", "xyz_grid.py", "tag_autocomplete_helper.py"} <= loaded
    assert set(failed) <= {"img2imgalt.py", "postprocessing_upscale.py"}, failed
    if "img2imgalt.py" in failed:
        assert "k_diffusion" in failed["img2imgalt.py"] and "diffusers schedulers" in failed["img2imgalt.py"]
    assert "tac_maxResults" in a1111_options.known_keys() or shared.opts.tac_maxResults == 5
