"""A1111's ``modules.ui_common``: helpers that build small parts of the page."""
from __future__ import annotations

import html
import json
from typing import Any, Callable

from modules.a1111.addons.ui import refresh_symbol


def plaintext_to_html(text: str, classname: str | None = None) -> str:
    content = "<br>\n".join(html.escape(line) for line in (text or "").split("\n"))
    return f"<p class='{classname}'>{content}</p>" if classname else f"<p>{content}</p>"


def create_refresh_button(refresh_component: Any, refresh_method: Callable[[], None],
                          refreshed_args: dict[str, Any] | Callable[[], dict[str, Any]], elem_id: str) -> Any:
    """A 🔄 button that calls ``refresh_method`` and then updates ``refresh_component`` with ``refreshed_args``."""
    import gradio as gr

    from modules.a1111.ui_components import ToolButton

    components = refresh_component if isinstance(refresh_component, list) else [refresh_component]

    def refresh() -> Any:
        refresh_method()
        args = refreshed_args() if callable(refreshed_args) else refreshed_args
        updates = [gr.update(**(args or {})) for _ in components]
        return updates if len(updates) > 1 else updates[0]

    button = ToolButton(value=refresh_symbol, elem_id=elem_id)
    button.click(refresh, [], components)
    return button


def setup_dialog(button_show: Any, dialog: Any, *, button_close: Any = None) -> None:
    """A1111 shows ``dialog`` as a popup when ``button_show`` is clicked (and hides it with ``button_close``)."""
    import gradio as gr

    dialog.visible = False
    button_show.click(lambda: gr.update(visible=True), [], [dialog], show_progress="hidden")
    if button_close is not None:
        button_close.click(lambda: gr.update(visible=False), [], [dialog], show_progress="hidden")


def update_generation_info(generation_info: str, html_info: str, img_index: int) -> tuple[str, str]:
    """The infotext of the gallery image ``img_index`` from the job's JSON info."""
    try:
        info = json.loads(generation_info)
        texts = info.get("infotexts") or []
        if 0 <= img_index < len(texts):
            return plaintext_to_html(texts[img_index]), ""
    except (ValueError, TypeError):
        pass
    return html_info, ""
