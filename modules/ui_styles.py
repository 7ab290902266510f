"""The styles controls beside the Styles dropdown of txt2img and img2img, and A1111's style editor.

Buttons under the dropdown: ↻ reads ``styles.csv`` again (``{tab}_styles_refresh``), ✎ opens the editor
(``{tab}_styles_edit_button``), ⇩ (A1111's 📋) applies the selected styles to the prompt boxes and clears the selection
(``{tab}_style_apply``). The editor (``{tab}_styles_editor``): pick a style or type a new name, edit its prompt and
negative prompt, Save (writes ``styles.csv``), Delete, "Apply style to prompt" (its texts put into the prompt boxes).
A ``styles.csv`` that cannot be read is reported under the dropdown and the styles read before stay in use; it is
never overwritten while broken.
"""
from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import gradio as gr

if TYPE_CHECKING:
    from modules.runtime import Runtime

CSS = """
.styles-buttons {gap: 4px !important}
.styles-buttons button {min-width: 36px !important; padding: 2px 4px !important}
"""


def style_buttons(tab: str) -> dict[str, gr.Button]:
    """The three small buttons under the Styles dropdown (built inside the dropdown's column)."""
    with gr.Row(elem_classes="styles-buttons"):
        buttons = {
            "refresh": gr.Button("↻", elem_id=f"{tab}_styles_refresh", scale=0, min_width=36,
                                 elem_classes="tool"),
            "edit": gr.Button("✎", elem_id=f"{tab}_styles_edit_button", scale=0, min_width=36, elem_classes="tool"),
            "apply": gr.Button("⇩", elem_id=f"{tab}_style_apply", scale=0, min_width=36, elem_classes="tool"),
        }
    buttons["message"] = gr.HTML(elem_id=f"{tab}_styles_message")
    return buttons


def _names(runtime: "Runtime") -> list[str]:
    runtime.prompt_styles.reload_if_changed()
    return list(runtime.prompt_styles.styles)


def _error_html(runtime: "Runtime") -> str:
    error = runtime.prompt_styles.error
    return f"<div class='error-box'>{html.escape(error)}</div>" if error else ""


class StyleEditor:
    """The editor for one tab, under its prompt row; ``controls`` is the tab's ``GenerationControls`` (its
    ``style_buttons`` made by ``style_buttons``)."""

    def __init__(self, runtime: "Runtime", controls: Any) -> None:
        self.runtime = runtime
        tab = controls.tab
        buttons = controls.style_buttons
        with gr.Group(visible=False, elem_id=f"{tab}_styles_editor") as self.group:
            with gr.Row():
                self.name = gr.Dropdown(_names(runtime), value=None, allow_custom_value=True, scale=3,
                                        label="Style (pick one to edit, or type a new name)",
                                        elem_id=f"{tab}_edit_style_name")
                self.apply_to_prompt = gr.Button("Apply style to prompt", scale=1, elem_id=f"{tab}_edit_style_apply")
            self.prompt = gr.Textbox(label="Prompt", lines=2, elem_id=f"{tab}_edit_style_prompt")
            self.negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{tab}_edit_style_neg_prompt")
            with gr.Row():
                self.save = gr.Button("Save", variant="primary", elem_id=f"{tab}_edit_style_save")
                self.delete = gr.Button("Delete", variant="stop", elem_id=f"{tab}_edit_style_delete")
                self.close = gr.Button("Close", elem_id=f"{tab}_edit_style_close")
            self.message = gr.HTML(elem_id=f"{tab}_edit_style_message")
        styles = controls.styles
        database = runtime.prompt_styles

        def refresh(selected):
            names = _names(runtime)
            return (gr.update(choices=names, value=[s for s in (selected or []) if s in names]),
                    gr.update(choices=names), _error_html(runtime))

        buttons["refresh"].click(refresh, styles, [styles, self.name, buttons["message"]], queue=False)
        root = gr.context.Context.root_block
        if root is not None:     # a page (re)load shows the styles as the file has them now
            # choices only: setting the multiselect's value on load kept the page's renderer busy (100 % CPU)
            root.load(lambda: (gr.update(choices=_names(runtime)), gr.update(choices=_names(runtime)),
                               _error_html(runtime)),
                      None, [styles, self.name, buttons["message"]], queue=False, show_progress="hidden")
        buttons["edit"].click(lambda: (gr.update(visible=True), gr.update(choices=_names(runtime)),
                                       _error_html(runtime)),
                              None, [self.group, self.name, self.message], queue=False)
        self.close.click(lambda: gr.update(visible=False), None, self.group, queue=False)

        def pick(name):
            style = database.styles.get(name or "")
            if style is None:
                return gr.update(), gr.update(), ""
            return style.prompt, style.negative_prompt, ""

        self.name.change(pick, self.name, [self.prompt, self.negative, self.message], queue=False)

        def save(name, prompt, negative, selected):
            try:
                style = database.save_style(name, prompt, negative)
            except (ValueError, OSError) as error:
                return gr.update(), gr.update(), f"<div class='error-box'>Not saved: {html.escape(str(error))}</div>"
            names = list(database.styles)
            return (gr.update(choices=names, value=style.name), gr.update(choices=names, value=list(selected or [])),
                    f"Saved style {html.escape(style.name)} to {html.escape(database.path.name)}")

        self.save.click(save, [self.name, self.prompt, self.negative, styles], [self.name, styles, self.message],
                        queue=False)

        def delete(name, selected):
            try:
                database.delete_style(name or "")
            except (KeyError, ValueError, OSError) as error:
                text = error.args[0] if isinstance(error, KeyError) else str(error)
                return gr.update(), gr.update(), "", "", f"<div class='error-box'>Not deleted: {html.escape(text)}</div>"
            names = list(database.styles)
            return (gr.update(choices=names, value=None),
                    gr.update(choices=names, value=[s for s in (selected or []) if s in names]), "", "",
                    f"Deleted style {html.escape(name)}")

        self.delete.click(delete, [self.name, styles], [self.name, styles, self.prompt, self.negative, self.message],
                          queue=False)

        def apply_editor(prompt_box, negative_box, style_prompt, style_negative):
            """The editor's texts merged into the prompt boxes as a job would apply the style."""
            from modules.styles import merge_prompts

            return merge_prompts(style_prompt or "", prompt_box or ""), \
                merge_prompts(style_negative or "", negative_box or "")

        self.apply_to_prompt.click(apply_editor, [controls.prompt, controls.negative_prompt, self.prompt, self.negative],
                                   [controls.prompt, controls.negative_prompt], queue=False)

        def apply_selected(prompt_box, negative_box, selected):
            """⇩: the selected styles written into the prompt boxes, and unselected (they are applied now)."""
            selected = list(selected or [])
            return (database.apply_styles_to_prompt(prompt_box or "", selected),
                    database.apply_negative_styles_to_prompt(negative_box or "", selected), [])

        buttons["apply"].click(apply_selected, [controls.prompt, controls.negative_prompt, styles],
                               [controls.prompt, controls.negative_prompt, styles], queue=False)
