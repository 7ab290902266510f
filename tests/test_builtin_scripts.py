"""The built-in scripts (Prompt matrix, X/Y/Z plot, Prompts from file or textbox) through the API path."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from modules import infotext, scripts, shared
from modules.builtin_scripts.prompt_matrix import matrix_prompts
from modules.builtin_scripts.prompts_from_file import parse_options, parse_prompt_inputs
from modules.builtin_scripts.xyz_grid import axis_options, options_for, parse_values
from modules.processing import GenerationError
from tests.test_scripts import SIZE, make_p

AXES = {opt.label: opt for opt in axis_options}


@pytest.fixture(scope="module")
def runner():
    scripts.load_scripts(None)
    yield scripts.scripts_txt2img
    scripts.unload_scripts()


def params(text: str) -> dict[str, str]:
    return {key: str(value) for key, value in infotext.parse_generation_parameters(text).items()}


# ---------------------------------------------------------------------------------------------------------------------
# Prompt matrix
# ---------------------------------------------------------------------------------------------------------------------
def test_matrix_prompts_follow_a1111():
    assert matrix_prompts("a busy city street|illustration|cinematic lighting") == [
        "a busy city street", "a busy city street, illustration", "a busy city street, cinematic lighting",
        "a busy city street, illustration, cinematic lighting"]
    assert matrix_prompts("a cat | red") == ["a cat ", "a cat , red"]          # the base is kept as written
    assert matrix_prompts("cat|red,|big", put_at_start=True, delimiter=" ") == ["cat", "red cat", "big cat",
                                                                                "red big cat"]
    assert len(matrix_prompts("a|b|c|d|e")) == 16


def test_prompt_matrix_makes_every_combination_and_a_labelled_grid(runner, tiny_sd1_model):
    out = runner.run_from_api(make_p(tiny_sd1_model, prompt="a circle|red|on a blue background"), "Prompt matrix",
                              [], {})
    assert out.index_of_first_image == 1 and len(out.images) == 5
    expected = ["a circle", "a circle, red", "a circle, on a blue background", "a circle, red, on a blue background"]
    assert out.all_prompts == expected
    assert [params(t)["Prompt"] for t in out.infotexts[1:]] == expected
    assert out.all_seeds == [1234] * 4
    grid = out.images[0]
    assert grid.width > 2 * SIZE and grid.height > 2 * SIZE            # 2x2 cells plus label bands
    assert out.infotexts[0] == out.infotexts[1]


def test_prompt_matrix_different_seeds_and_negative_prompt(runner, tiny_sd1_model):
    p = make_p(tiny_sd1_model, prompt="a circle", negative_prompt="blurry|dark", batch_size=2)
    out = runner.run_from_api(p, "prompt matrix", [True, True, "negative", "space"], {})
    assert out.all_seeds == [1234, 1235]
    assert out.all_negative_prompts == ["blurry", "dark blurry"]
    assert out.all_prompts == ["a circle", "a circle"]
    assert len(out.images) == 3


# ---------------------------------------------------------------------------------------------------------------------
# X/Y/Z plot
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("label, text, expected", [
    ("Steps", "1-5", [1, 2, 3, 4, 5]),
    ("Steps", "1-5 (+2)", [1, 3, 5]),
    ("Steps", "10-5 (-3)", [10, 7]),
    ("Steps", "1-10 [5]", [1, 3, 5, 7, 10]),
    ("Steps", "2, 4,8", [2, 4, 8]),
    ("Seed", "-5-5 (+5)", [-5, 0, 5]),
    ("CFG Scale", "0-1 (+0.25)", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("CFG Scale", "1-2 [3]", [1.0, 1.5, 2.0]),
    ("CFG Scale", "7, 7.5", [7.0, 7.5]),
    ("Sampler", 'Euler a, "DPM++ 2M"', ["Euler a", "DPM++ 2M"]),
    ("Prompt order", "red, circle", [["red", "circle"], ["circle", "red"]]),
    ("Nothing", "", [0]),
])
def test_axis_values_and_ranges(label, text, expected):
    assert parse_values(AXES[label], text) == expected


@pytest.mark.parametrize("text", ["abc", "5-1", "1-5 (+0)", ""])
def test_bad_axis_values(text):
    with pytest.raises(ValueError):
        parse_values(AXES["Steps"], text)


def xyz_args(x_type: str, x_values: str, y_type: str = "Nothing", y_values: str = "", z_type: str = "Nothing",
             z_values: str = "", **flags) -> list:
    """The X/Y/Z plot's args in A1111's order (axis types by label; text values)."""
    return [x_type, x_values, [], y_type, y_values, [], z_type, z_values, [], flags.get("draw_legend", True),
            flags.get("include_lone_images", False), flags.get("include_sub_grids", False),
            flags.get("no_fixed_seeds", False), False, False, False, 0, True]


def test_xyz_plot_cfg_by_steps_gives_a_labelled_grid_with_matching_cells(runner, tiny_sd1_model):
    out = runner.run_from_api(make_p(tiny_sd1_model), "x/y/z plot",
                              xyz_args("CFG Scale", "3, 7", "Steps", "2-3", include_lone_images=True), {})
    assert len(out.images) == 1 + 4
    grid = out.images[0]
    assert grid.width > 2 * SIZE and grid.height > 2 * SIZE
    cells = [params(text) for text in out.infotexts[1:]]
    assert [(c["CFG scale"], c["Steps"]) for c in cells] == [("3.0", "2"), ("7.0", "2"), ("3.0", "3"), ("7.0", "3")]
    assert {c["Seed"] for c in cells} == {"1234"}
    grid_info = params(out.infotexts[0])
    assert grid_info["Script"] == "X/Y/Z plot" and grid_info["X Type"] == "CFG Scale"
    assert grid_info["X Values"] == "3, 7" and grid_info["Y Type"] == "Steps"

    only_grid = runner.run_from_api(make_p(tiny_sd1_model, seed=-1), "x/y/z plot",
                                    xyz_args("Steps", "2", "Nothing", "", "CFG Scale", "3, 5"), {})
    assert len(only_grid.images) == 1
    assert len(set(only_grid.all_seeds)) == 1            # -1 was fixed once for every cell


def test_xyz_prompt_search_replace_and_sampler(runner, tiny_sd1_model):
    out = runner.run_from_api(make_p(tiny_sd1_model), "x/y/z plot",
                              xyz_args("Prompt S/R", "red, green", "Sampler", "Euler a, DDIM",
                                       include_lone_images=True), {})
    cells = [params(t) for t in out.infotexts[1:]]
    assert [(c["Prompt"], c["Sampler"]) for c in cells] == [
        ("a red circle", "Euler a"), ("a green circle", "Euler a"), ("a red circle", "DDIM"),
        ("a green circle", "DDIM")]


@pytest.mark.parametrize("axis, values, message", [
    ("Steps", "2, zero", "X values (Steps): 'zero' is not an integer"),
    ("Steps", "0", "X values (Steps): 0 is not a valid steps"),
    ("Sampler", "Nope", "X values (Sampler): unknown sampler 'Nope'"),
    ("Prompt S/R", "purple, blue", "did not find 'purple'"),
    ("Checkpoint name", "x", "checkpoints can only be switched in the running app"),
])
def test_xyz_bad_values_are_refused_before_generating(runner, tiny_sd1_model, axis, values, message, monkeypatch):
    monkeypatch.setattr(shared, "_runtime", None)
    p = make_p(tiny_sd1_model)
    with pytest.raises(GenerationError) as e:
        runner.run_from_api(p, "x/y/z plot", xyz_args(axis, values), {})
    assert message in str(e.value)
    assert p.state.job_no == 0


def test_xyz_checkpoint_axis_switches_and_restores_the_model(runner, tiny_models_dir, make_manager, monkeypatch):
    manager = make_manager(tiny_models_dir)
    monkeypatch.setattr(shared, "_runtime", SimpleNamespace(models=manager))
    first = manager.load("sd1.safetensors")
    p = make_p(first)
    out = runner.run_from_api(p, "x/y/z plot",
                              xyz_args("Checkpoint name", "sd1-diffusers, sd1.safetensors", include_lone_images=True),
                              {})
    assert [params(t)["Model"] for t in out.infotexts[1:]] == ["sd1-diffusers", "sd1"]
    assert manager.current.sd_checkpoint_info.title == first.sd_checkpoint_info.title
    assert p.sd_model is manager.current


# ---------------------------------------------------------------------------------------------------------------------
# Prompts from file or textbox
# ---------------------------------------------------------------------------------------------------------------------
def test_prompt_file_options_are_parsed_shell_style():
    assert parse_options('--prompt "a red, circle" --steps 10 --cfg_scale 5.5 --tiling true') == {
        "prompt": "a red, circle", "steps": 10, "cfg_scale": 5.5, "tiling": True}
    assert parse_options("--prompt a red circle --negative_prompt dark blurry --seed 7") == {
        "prompt": "a red circle", "negative_prompt": "dark blurry", "seed": 7}
    assert parse_options("--styles 'one, two' --sampler_name 'Euler a'") == {"styles": ["one", "two"],
                                                                              "sampler_name": "Euler a"}
    assert parse_prompt_inputs("a cat\n\n  --prompt dog --n_iter 2  \n") == [(1, {"prompt": "a cat"}),
                                                                             (3, {"prompt": "dog", "n_iter": 2})]


@pytest.mark.parametrize("text, message", [
    ("ok\n--steps ten", "line 2: --steps 'ten'"),
    ("--stesp 10", "line 1: unknown option --stesp"),
    ("--steps 1 2", "line 1: expected an --option, got '2'"),
    ("--tiling yes", "expects true or false"),
    ("--prompt", "--prompt needs a value"),
    ('--prompt "unclosed', "No closing quotation"),
])
def test_bad_prompt_file_lines_name_the_line(text, message):
    with pytest.raises(GenerationError) as e:
        parse_prompt_inputs(text)
    assert message in str(e.value)


def test_prompts_from_file_runs_one_job_per_line(runner, tiny_sd1_model):
    text = 'red circle\n--prompt "blue square" --steps 3 --seed 99 --negative_prompt dark'
    out = runner.run_from_api(make_p(tiny_sd1_model, prompt="photo"), "prompts from file or textbox",
                              [False, False, "end", text], {})
    assert len(out.images) == 2
    first, second = (params(t) for t in out.infotexts)
    assert (first["Prompt"], first["Steps"], first["Seed"]) == ("photo red circle", "2", "1234")
    assert (second["Prompt"], second["Steps"], second["Seed"], second["Negative prompt"]) == (
        "photo blue square", "3", "99", "dark")

    iterated = runner.run_from_api(make_p(tiny_sd1_model, prompt=""), "prompts from file or textbox",
                                   [True, False, "start", "one\ntwo"], {})
    assert iterated.all_prompts == ["one", "two"] and iterated.all_seeds == [1234, 1235]
    with pytest.raises(GenerationError, match="line 2: 0 is not a valid steps"):
        runner.run_from_api(make_p(tiny_sd1_model), "prompts from file or textbox",
                            [False, False, "start", "fine\n--steps 0"], {})


# ---------------------------------------------------------------------------------------------------------------------
# UI
# ---------------------------------------------------------------------------------------------------------------------
def test_builtin_scripts_build_their_controls_in_a_page(runner):
    import gradio as gr

    with gr.Blocks():
        inputs = runner.setup_ui()
    assert len(inputs) == len(runner.default_args())
    sizes = {s.name: s.args_to - s.args_from for s in runner.selectable_scripts}
    assert sizes == {"prompt matrix": 5, "prompt-to-prompt": 7, "prompts from file or textbox": 4, "x/y/z plot": 18}
    assert "Hires steps" in [o.label for o in options_for(False)] and \
        "Hires steps" not in [o.label for o in options_for(True)]
