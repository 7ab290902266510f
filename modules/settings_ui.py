"""The Settings tab: the options grouped in A1111's sections, a search box, Apply, and the list of changed settings.

Sections and their order come from ``modules.a1111.settings_catalog.SECTIONS``; options of the app that are in no
section are shown under "Other"; options added by extensions keep their own sections (``modules.a1111.options``).
The search box (A1111's ``settings_search``) filters in the page, by label and by option name; a section whose
title matches shows all its settings.
"""
from __future__ import annotations

import html
import typing
from typing import Any, Callable

import gradio as gr

from modules.a1111 import options as extension_options
from modules.a1111 import settings_catalog
from modules.options import Options

# Filters the settings in the page: every element whose id starts with "setting_" is shown when its option name or
# its text contains the query (or its section's title does); sections with nothing left are hidden.
SEARCH_JS = """
(query) => {
    const q = (query || '').trim().toLowerCase();
    const root = document.getElementById('tab_settings') || document;
    root.querySelectorAll('.settings-section').forEach((section) => {
        const title = (section.querySelector('.settings-section-title, button, .label-wrap') || {}).innerText || '';
        const titleMatches = q !== '' && title.toLowerCase().includes(q);
        let shown = 0;
        section.querySelectorAll('[id^="setting_"]').forEach((el) => {
            const text = (el.id.slice(8) + ' ' + el.innerText).toLowerCase();
            const show = q === '' || titleMatches || text.includes(q);
            el.style.display = show ? '' : 'none';
            if (show) shown += 1;
        });
        section.style.display = shown > 0 ? '' : 'none';
    });
    return [];
}
"""

TAB_NAMES = ["txt2img", "img2img", "Extras", "PNG Info", "Checkpoint Merger", "Train", "Extensions"]
"""The top tabs ``hidden_tabs`` can hide (A1111's labels; Settings cannot be hidden, so it can always be undone)."""


_TAGS = "tags: [seed] [prompt] [prompt_spaces] [prompt_words] [date] [datetime] [steps] [cfg] [sampler] [width] " \
        "[height] [model_name] [model_hash]"
HINTS = {
    "samples_filename_pattern": _TAGS,
    "directories_filename_pattern": _TAGS + "; / makes nested folders",
    "CLIP_stop_at_last_layers": "1 uses CLIP's last layer, 2 the one before it, ...",
    "eta_noise_seed_delta": "changes the extra noise of ancestral/SDE samplers; only useful to reproduce an image",
    "show_progress_every_n_steps": "-1: only when the batch is finished",
    "sd_vae": "Automatic: a VAE file named like the checkpoint, else the checkpoint's own; None: the checkpoint's own",
    "hidden_tabs": "the Settings tab cannot be hidden",
    "quicksettings_list": "sd_model_checkpoint is always there",
    "n_rows": "-1: about square; 0: one row per batch",
    "export_for_4chan": "for PNG and WEBP images",
}
"""Help shown under a setting's label, after its option name."""


def _choices(runtime: Any, key: str) -> list[str] | None:
    if key == "sd_vae":
        from modules import sd_vae

        try:
            vaes = [v.name for v in runtime.models.list_vaes()]
        except Exception:  # noqa: BLE001 - a broken VAE folder must not break the page
            vaes = []
        return [sd_vae.AUTOMATIC, sd_vae.NONE, *vaes]
    if key == "hidden_tabs":
        return [*TAB_NAMES, *(t for t in runtime.opts.hidden_tabs if t not in TAB_NAMES)]
    if key == "quicksettings_list":
        return ["sd_model_checkpoint", *(k for k in Options.model_fields if k not in settings_catalog.NOT_IN_SETTINGS_TAB
                                         and k != "quicksettings_list")]
    if key == "hide_samplers":
        from modules import sd_samplers

        return sd_samplers.visible_sampler_names()
    return None


def _widget(runtime: Any, key: str, field: Any) -> gr.components.Component:
    label = field.description or key
    value = getattr(runtime.opts, key)
    ann = field.annotation
    elem_id = f"setting_{key}"
    info = f"{key} — {HINTS[key]}" if key in HINTS else key
    choices = _choices(runtime, key)
    if typing.get_origin(ann) is list:
        return gr.Dropdown(choices or [], value=list(value), multiselect=True, label=label, info=info,
                           elem_id=elem_id, allow_custom_value=choices is None)
    if choices is not None:
        return gr.Dropdown(choices, value=value, label=label, info=info, elem_id=elem_id, allow_custom_value=True)
    if ann is bool:
        return gr.Checkbox(value=value, label=label, info=info, elem_id=elem_id)
    if typing.get_origin(ann) is typing.Literal:
        return gr.Dropdown(list(typing.get_args(ann)), value=value, label=label, info=info, elem_id=elem_id)
    if ann in (int, float):
        return gr.Number(value=value, label=label, info=info, precision=0 if ann is int else None, elem_id=elem_id)
    return gr.Textbox(value=str(value), label=label, info=info, elem_id=elem_id)


def changed_settings_html(runtime: Any) -> str:
    """A table of the settings whose value differs from the default (A1111's "Defaults" view)."""
    rows = []
    for key in Options.model_fields:
        if key == "sd_model_checkpoint":       # the loaded model, not a preference
            continue
        value, default = getattr(runtime.opts, key), runtime.opts.get_default(key)
        if value != default:
            rows.append(f"<tr><td><code>{html.escape(key)}</code></td><td>{html.escape(repr(value))}</td>"
                        f"<td>{html.escape(repr(default))}</td></tr>")
    for key, info in extension_options.registered.items():
        if info.do_not_save:
            continue
        value = (runtime.opts.model_extra or {}).get(key, info.default)
        if value != info.default:
            rows.append(f"<tr><td><code>{html.escape(key)}</code></td><td>{html.escape(repr(value))}</td>"
                        f"<td>{html.escape(repr(info.default))}</td></tr>")
    if not rows:
        return "<p>Every setting has its default value.</p>"
    return (f"<p>{len(rows)} setting(s) differ from the default:</p><table class='settings-changed'>"
            "<tr><th>setting</th><th>value</th><th>default</th></tr>" + "".join(rows) + "</table>")


def quicksettings(runtime: Any) -> dict[str, gr.components.Component]:
    """A1111's ``quicksettings_list``: the listed options (besides the checkpoint, which has its own dropdown) as
    widgets in the row at the top of the page (call inside that row). Each applies and saves as soon as it is
    changed; the Settings tab then leaves them out."""
    fields = Options.model_fields
    widgets: dict[str, gr.components.Component] = {}
    for key in runtime.opts.quicksettings_list:
        if key in fields and key not in settings_catalog.NOT_IN_SETTINGS_TAB and key not in widgets:
            widgets[key] = _widget(runtime, key, fields[key])

    def apply_one(key: str) -> Callable[[Any], str]:
        def apply(value: Any) -> str:
            try:
                if value != getattr(runtime.opts, key):
                    runtime.opts.set(key, value)
                    runtime.opts.save()
                return ""
            except ValueError as e:
                return f"<div class='error-box'>{html.escape(str(e))}</div>"
        return apply

    if widgets:
        status = gr.HTML(elem_id="quicksettings_status")
        for key, widget in widgets.items():
            widget.input(apply_one(key), widget, status, queue=False, show_progress="hidden")
    return widgets


def settings_tab(runtime: Any, quick: dict[str, gr.components.Component] | None = None,
                 ) -> tuple[Any, Callable[[], list[Any]], list[gr.components.Component]]:
    """The settings; returns the Apply event (the page's ``opts`` are refreshed after it), a function giving the
    saved values of its widgets (for each page load), and the widgets. ``quick``: the quicksettings widgets (shown at
    the top of the page, not here; Apply and page loads include them)."""
    quick = quick or {}
    extension_options.register_extension_settings(force=True)     # runs the on_ui_settings callbacks
    fields = Options.model_fields
    widgets: dict[str, gr.components.Component] = {}
    opts = extension_options.OptionsFacade(lambda: runtime.opts)   # extensions' options (A1111's API)
    with gr.Column(elem_id="settings"):
        with gr.Row():
            apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit", scale=2)
            show_changed = gr.Button("Show changed settings", elem_id="settings_show_changed", scale=1)
        search = gr.Textbox(placeholder="Search settings by label or name, e.g. seed, samples_format", max_lines=1,
                            show_label=False, elem_id="settings_search", container=False)
        result = gr.HTML(elem_id="settings_result")
        changed = gr.HTML(elem_id="settings_changed")
        sections = [(sid, title, [k for k in keys if k in fields and k not in settings_catalog.NOT_IN_SETTINGS_TAB])
                    for sid, title, keys in settings_catalog.SECTIONS]
        placed = {k for _, _, keys in settings_catalog.SECTIONS for k in keys}
        other = [k for k in fields if k not in placed and k not in settings_catalog.NOT_IN_SETTINGS_TAB]
        if other:
            sections.append(("other", "Other", other))
        gr.HTML("<div class='settings-index'>" + " · ".join(
            f"<a href='#settings_section_{sid}'>{html.escape(title)}</a>" for sid, title, keys in sections if keys)
            + "</div>", elem_id="settings_index")
        for section_id, title, keys in sections:
            if not keys:
                continue
            with gr.Group(elem_id=f"settings_section_{section_id}", elem_classes="settings-section"):
                gr.HTML(f"<h3 class='settings-section-title'>{html.escape(title)}</h3>")
                for key in keys:
                    if key not in quick:
                        widgets[key] = _widget(runtime, key, fields[key])
        widgets.update(extension_options.settings_components(opts))
    widgets.update(quick)
    search.change(None, search, None, js=SEARCH_JS, queue=False)
    show_changed.click(lambda: changed_settings_html(runtime), None, changed, queue=False)

    names = list(widgets)

    def save(*values):
        errors, changed_names = [], []
        for name, value in zip(names, values):
            if value == opts._value(name):
                continue
            try:
                opts.set(name, value)
                changed_names.append(name)
            except ValueError as e:
                errors.append(str(e))
        runtime.opts.save()
        text = f"{len(changed_names)} setting(s) changed: {', '.join(changed_names) or 'none'}."
        restart = [n for n in changed_names if n in settings_catalog.NEEDS_RESTART]
        if restart:
            text += f" Restart the app to see {', '.join(restart)} take effect."
        if errors:
            text += "".join(f"<div class='error-box'>{html.escape(e)}</div>" for e in errors)
        return text

    def current_values() -> list[Any]:
        """The saved value of every widget, as the page shows it (the page loads them: not the values at startup)."""
        values = [opts._value(name) for name in names]
        return [("" if v is None else str(v)) if isinstance(widgets[n], gr.Textbox) else v
                for n, v in zip(names, values)]

    return apply.click(save, [widgets[n] for n in names], result), current_values, [widgets[n] for n in names]
