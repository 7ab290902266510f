"""A1111's ``modules.infotext_utils`` (formerly ``generation_parameters_copypaste``): reading infotexts and the
registry of fields that infotexts paste into."""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

from PIL import Image

from modules.infotext import parse_generation_parameters, quote, unquote  # noqa: F401 - A1111 names
from modules.images import read_info_from_image  # noqa: F401 - A1111 name


@dataclass
class ParamBinding:
    paste_button: Any
    tabname: str
    source_text_component: Any = None
    source_image_component: Any = None
    source_tabname: str | None = None
    override_settings_component: Any = None
    paste_field_names: list[str] | None = None


paste_fields: dict[str, dict[str, Any]] = {}
registered_param_bindings: list[ParamBinding] = []


def register_paste_params_button(binding: ParamBinding) -> None:
    registered_param_bindings.append(binding)


def add_paste_fields(tabname: str, init_img: Any, fields: list[tuple[Any, Any]] | None,
                     override_settings_component: Any = None) -> None:
    paste_fields[tabname] = {"init_img": init_img, "fields": fields or [],
                             "override_settings_component": override_settings_component}


def image_from_url_text(filedata: Any) -> Image.Image | None:
    """An image from a data URL / base64 text (what the page sends), or a dict/list holding one."""
    if filedata is None:
        return None
    if isinstance(filedata, list):
        filedata = filedata[0] if filedata else None
        return image_from_url_text(filedata)
    if isinstance(filedata, dict):
        filedata = filedata.get("name") or filedata.get("path") or filedata.get("url")
    if isinstance(filedata, Image.Image):
        return filedata
    if isinstance(filedata, str) and filedata.startswith("data:image/"):
        filedata = filedata.split(",", 1)[1]
        return Image.open(io.BytesIO(base64.b64decode(filedata)))
    if isinstance(filedata, str):
        return Image.open(filedata)
    raise ValueError(f"not an image: {type(filedata).__name__}")


def connect_paste(button: Any, paste_fields: list[tuple[Any, Any]], input_comp: Any,
                  override_settings_component: Any = None, tabname: str | None = None) -> None:
    """Clicking ``button`` parses the infotext in ``input_comp`` and fills each ``(component, key or fn)``."""
    def paste(text: str) -> list[Any]:
        params = parse_generation_parameters(text or "")
        values = []
        for _component, key in paste_fields:
            value = key(params) if callable(key) else params.get(key)
            values.append(value)
        return values

    button.click(paste, input_comp, [component for component, _ in paste_fields], show_progress="hidden")


def create_buttons(tabs_list: list[str]) -> dict[str, Any]:
    import gradio as gr

    return {tab: gr.Button(f"Send to {tab}", elem_id=f"{tab}_tab") for tab in tabs_list}


def bind_buttons(buttons: dict[str, Any], send_image: Any, send_generate_info: Any) -> None:
    for tabname, button in buttons.items():
        register_paste_params_button(ParamBinding(button, tabname, send_generate_info, send_image))


def quote_value(value: Any) -> str:
    return quote(value)


