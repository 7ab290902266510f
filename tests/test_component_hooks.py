"""A1111's component hooks while the page is built: ``script_callbacks.on_before_component`` /
``on_after_component``, ``Script.before_component`` / ``after_component`` and ``Script.on_before_component`` /
``on_after_component(elem_id=)`` see every component of the page (the app's own by A1111's elem_ids), can wire events
to them and add components beside them; a hook that raises is reported and the page is still built."""
from __future__ import annotations

import sys

import gradio as gr
import pytest

from modules import cmd_args, extensions, scripts, ui
from modules.runtime import Runtime
from tests.test_extensions import write_extension

HOOKS_EXTENSION = """
    import gradio as gr
    from modules import script_callbacks, scripts

    seen = []            # (elem_id, label, built?) of every after_component call
    before_seen = []
    wired = {}

    def before(component, **kwargs):
        before_seen.append(kwargs.get("elem_id"))
        if kwargs.get("elem_id") == "txt2img_generate":
            wired["extra_button"] = gr.Button("Extra", elem_id="hooks_extra_button")

    def after(component, **kwargs):
        seen.append((kwargs.get("elem_id"), kwargs.get("label"), getattr(component, "elem_id", "?")))
        if kwargs.get("elem_id") == "txt2img_prompt":
            wired["prompt"] = component
            wired["echo"] = gr.Textbox(label="Echo", elem_id="hooks_echo")
            component.change(lambda text: text.upper(), inputs=[component], outputs=[wired["echo"]])

    script_callbacks.on_before_component(before)
    script_callbacks.on_after_component(after)


    class Hooks(scripts.Script):
        def __init__(self):
            self.mine = []
            self.generate, self.gallery = [], None
            for tab in ("txt2img", "img2img"):     # before the tab exists: its runner calls the one of its tab
                self.on_after_component(lambda on: self.generate.append(on.component), elem_id=f"{tab}_generate")

        def title(self):
            return "Hooks"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):          # the gallery comes after the scripts' controls
            self.on_after_component(self.got_gallery, elem_id=f"{self.tabname}_gallery")
            return []

        def got_gallery(self, on_component):
            self.gallery = on_component.component

        def after_component(self, component, **kwargs):
            self.mine.append(kwargs.get("elem_id"))
"""

BROKEN_EXTENSION = """
    from modules import script_callbacks

    def after(component, **kwargs):
        if kwargs.get("elem_id") == "txt2img_steps":
            raise RuntimeError("cannot handle the steps slider")

    script_callbacks.on_after_component(after)
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("component-hooks")
    ext_dir = data_dir / "extensions"
    write_extension(ext_dir, "hooks", HOOKS_EXTENSION)
    write_extension(ext_dir, "broken-hook", BROKEN_EXTENSION)
    runtime = Runtime.create(cmd_args.parse_args(["--data-dir", str(data_dir)]))
    scripts.load_scripts(ext_dir)
    try:
        demo = ui.create_ui(runtime)
        module = next(m for name, m in sys.modules.items() if name.startswith("ext_hooks_"))
        yield demo, module
    finally:
        scripts.unload_scripts()
        extensions.discover(None)


def by_elem_id(demo: gr.Blocks) -> dict[str, gr.blocks.Block]:
    return {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}


def test_after_component_sees_the_apps_components_by_a1111_elem_id(page):
    demo, module = page
    seen = {elem_id: label for elem_id, label, _ in module.seen}
    for elem_id in ("txt2img_prompt", "txt2img_neg_prompt", "txt2img_generate", "txt2img_gallery", "txt2img_steps",
                    "txt2img_sampling", "txt2img_seed", "txt2img_cfg_scale", "txt2img_width", "txt2img_styles",
                    "img2img_prompt", "img2img_neg_prompt", "img2img_generate", "img2img_gallery", "img2img_image",
                    "img2img_denoising_strength", "setting_sd_model_checkpoint"):
        assert elem_id in seen, elem_id
    assert seen["txt2img_prompt"] == "Prompt"                       # kwargs as the constructor got them
    # after_component gets the built component; a component with no elem_id still comes with elem_id=None
    assert all(built == elem_id for elem_id, _, built in module.seen)
    assert None in seen
    components = [b for b in demo.blocks.values() if isinstance(b, gr.components.Component)]
    assert len(module.seen) >= len(components) - 2   # every component of the page (bar its own two, seen too)


def test_a_change_event_wired_to_the_apps_prompt_box(page):
    demo, module = page
    prompt, echo = module.wired["prompt"], module.wired["echo"]
    assert by_elem_id(demo)["txt2img_prompt"] is prompt
    deps = [d for d in demo.fns.values() if (prompt._id, "change") in [(t[0], t[1]) for t in d.targets]
            and [o._id for o in d.outputs] == [echo._id]]
    assert len(deps) == 1
    assert deps[0].fn("a red circle") == "A RED CIRCLE"
    assert echo._id in demo.blocks                               # its own component is in the page


def test_a_component_made_in_before_component_lands_right_before_it(page):
    demo, module = page
    blocks = by_elem_id(demo)
    extra, generate = blocks["hooks_extra_button"], blocks["txt2img_generate"]
    assert extra is module.wired["extra_button"]
    assert extra.parent is generate.parent
    siblings = generate.parent.children
    assert siblings.index(extra) == siblings.index(generate) - 1
    assert "txt2img_generate" in module.before_seen


def test_script_hooks_see_their_own_tab_only(page):
    _, _ = page
    for runner, tab, other in ((scripts.scripts_txt2img, "txt2img", "img2img"),
                               (scripts.scripts_img2img, "img2img", "txt2img")):
        script = next(s for s in runner.scripts if s.title() == "Hooks")
        assert f"{tab}_prompt" in script.mine and f"{tab}_gallery" in script.mine
        assert not any(str(e).startswith(f"{other}_") for e in script.mine)
        assert "setting_sd_model_checkpoint" not in script.mine       # outside both tabs: no script hooks (A1111)
        assert [c.elem_id for c in script.generate] == [f"{tab}_generate"]
        assert isinstance(script.gallery, gr.Gallery) and script.gallery.elem_id == f"{tab}_gallery"


def test_a_hook_that_raises_is_reported_and_the_page_is_built(page):
    demo, _ = page
    failure = next(f for f in extensions.failures if f.extension == "broken-hook")
    assert "after_component" in failure.where and "cannot handle the steps slider" in failure.error
    assert "txt2img_steps" in by_elem_id(demo) and "img2img_steps" in by_elem_id(demo)
    hooks = next(e for e in extensions.extensions if e.name == "hooks")
    assert hooks.active


def test_no_hooks_outside_a_page_build(page):
    _, module = page
    count = len(module.seen)
    with gr.Blocks():
        gr.Textbox(elem_id="txt2img_prompt")
    assert len(module.seen) == count


def test_a_subclass_of_a_gradio_component_keeps_its_properties_in_the_page():
    """sd-webui-ar's ``class ARButton(ToolButton): def __init__(self, ar=1.0, **kwargs)``: Gradio 6 reads a
    component's page properties from its own ``__init__`` signature, which hides the button's text and id."""
    from modules import a1111

    a1111.install()
    from modules.ui_components import FormRow, InputAccordion, ToolButton

    class ARButton(ToolButton):
        def __init__(self, ar=1.0, **kwargs):
            super().__init__(**kwargs)
            self.ar = ar

    with gr.Blocks() as demo:
        with FormRow(elem_id="ar_row"):
            ARButton(ar=1.5, value="3:2", elem_id="ar_button", visible=False)
        with InputAccordion(True, label="Options", elem_id="ar_accordion"):
            gr.Textbox()
    props = {c["props"].get("elem_id"): (c["type"], c["props"]) for c in demo.get_config_file()["components"]}
    kind, button = props["ar_button"]
    assert kind == "button" and button["value"] == "3:2" and button["visible"] is False
    assert "tool" in button["elem_classes"]
    kind, row = props["ar_row"]
    assert kind == "row" and "form" in row["elem_classes"]
    kind, accordion = props["ar_accordion"]
    assert kind == "checkbox" and accordion["value"] is True and accordion["label"] == "Enable"


def test_the_swap_button_swaps_width_and_height(page):
    """A1111's ⇅ (``<tab>_res_switch_btn``; the aspect-ratio-helper extension's page code builds on it)."""
    demo, _ = page
    blocks = by_elem_id(demo)
    for tab in ("txt2img", "img2img"):
        button, width, height = (blocks[f"{tab}_{name}"] for name in ("res_switch_btn", "width", "height"))
        dep = next(d for d in demo.fns.values() if (button._id, "click") in [(t[0], t[1]) for t in d.targets])
        assert [c._id for c in dep.inputs] == [width._id, height._id] == [c._id for c in dep.outputs]
        assert dep.fn(512, 768) == (768, 512)
