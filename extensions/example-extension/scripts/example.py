"""Example extension: one selectable script, one always-on script and one app callback.

Copy this folder to ``<data dir>/extensions/<your-name>/`` and edit. Everything here uses only the public
contract: ``modules.scripts`` (Script, AlwaysVisible), ``modules.script_callbacks`` and ``process_images``.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import ImageOps

from modules import script_callbacks, scripts
from modules.processing import Processed, StableDiffusionProcessing, process_images

EXTENSION_DIR = scripts.basedir()   # this extension's folder (only meaningful while the file is loaded)


class PromptSuffix(scripts.Script):
    """Always on: when enabled, appends a suffix to every prompt of the job and records it in the infotext."""

    def title(self) -> str:
        return "Example: prompt suffix"

    def show(self, is_img2img: bool) -> object:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        enabled = gr.Checkbox(False, label="Enable", elem_id=self.elem_id("enabled"))
        suffix = gr.Textbox("on a blue background", label="Suffix", elem_id=self.elem_id("suffix"))
        return [enabled, suffix]

    def process(self, p: StableDiffusionProcessing, enabled: bool, suffix: str) -> None:
        # Prompts are already expanded to one per image here: change p.all_prompts, not p.prompt.
        if enabled and suffix:
            p.all_prompts = [f"{prompt}, {suffix}" for prompt in p.all_prompts]
            p.extra_generation_params["Example suffix"] = suffix


class Mirror(scripts.Script):
    """Selectable: generates normally, then mirrors every image."""

    def title(self) -> str:
        return "Example: mirror"

    def ui(self, is_img2img: bool) -> list[Any]:
        direction = gr.Radio(["horizontal", "vertical"], value="horizontal", label="Direction",
                             elem_id=self.elem_id("direction"))
        return [direction]

    def run(self, p: StableDiffusionProcessing, direction: str) -> Processed:
        processed = process_images(p)
        flip = ImageOps.mirror if direction == "horizontal" else ImageOps.flip
        processed.images = [flip(image) for image in processed.images]
        return processed


def add_routes(demo: Any, app: Any) -> None:
    """App callback: an extension can add its own HTTP routes once the server app exists."""

    @app.get("/example-extension/hello")
    def hello() -> dict[str, str]:
        return {"extension": "example-extension", "folder": EXTENSION_DIR}


script_callbacks.on_app_started(add_routes, name="example-extension routes")
