"""The extra-networks cards under the prompt of txt2img and img2img, with A1111's element ids.

An "Extra networks" accordion holds the tabs ``{tab}_extra_tabs``: Textual Inversion, Hypernetworks (when
``models/hypernetworks`` exists), Checkpoints, Lora. Each tab has a search box (``{tab}_{page}_extra_search``,
filtering as you type, in ``javascript/extra_networks.js``), a sort order and the cards (``{tab}_{page}_cards``);
``{tab}_extra_refresh`` reads the folders again. Clicking a card adds its tag (``<lora:name:W>`` with its activation
text, an embedding's name) to the prompt, or removes it when it is there; a checkpoint card loads that checkpoint.
On a card, ✎ opens the user-metadata editor (saved to ``name.json`` beside the file) and 🖼 makes the image selected
in the gallery the card's preview (``name.preview.png``).

The page sends card actions as JSON (``{"page", "name", ...}``) through a hidden textbox and hidden buttons; the
server looks the card up by page and name (``modules.network_cards``), so nothing the page sends becomes a path.
Pictures are served by ``/sd_extra_networks/thumb?page=..&name=..`` (behind the page's login).
"""
from __future__ import annotations

import html
import json
import logging
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlencode

import gradio as gr
from PIL import Image

from modules import network_cards
from modules.network_cards import CHECKPOINTS, LORA, SORT_CHOICES, Card, CardError, Cards

if TYPE_CHECKING:
    from modules.runtime import Runtime

log = logging.getLogger(__name__)

CSS = """
.extra-network-cards {display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px;
  max-height: 480px; overflow-y: auto; padding: 4px}
.extra-network-card {position: relative; aspect-ratio: 3 / 4; border-radius: 8px; overflow: hidden; cursor: pointer;
  background: linear-gradient(135deg, #334155, #1e293b); box-shadow: 0 1px 3px rgba(0,0,0,.35);
  border: 2px solid transparent; transition: border-color .15s, transform .15s}
.extra-network-card:hover {border-color: #f97316; transform: translateY(-1px)}
.extra-network-card.in-prompt {border-color: #22c55e}
.extra-network-card img.preview {position: absolute; inset: 0; width: 100%; height: 100%; object-fit: cover}
.extra-network-card .placeholder {position: absolute; inset: 0; display: flex; align-items: center;
  justify-content: center; font-size: 42px; color: rgba(255,255,255,.25); font-weight: 700; user-select: none}
.extra-network-card .actions {position: absolute; top: 4px; right: 4px; display: flex; gap: 4px; opacity: 0;
  transition: opacity .15s}
.extra-network-card:hover .actions {opacity: 1}
.extra-network-card .actions button {background: rgba(0,0,0,.6); color: #fff; border: none; border-radius: 4px;
  padding: 2px 6px; font-size: 14px; cursor: pointer}
.extra-network-card .actions button:hover {background: #f97316}
.extra-network-card .caption {position: absolute; left: 0; right: 0; bottom: 0; padding: 22px 8px 6px;
  background: linear-gradient(transparent, rgba(0,0,0,.85))}
.extra-network-card .caption .name {font-weight: 600; font-size: 14px; word-break: break-word; color: #fff !important;
  text-shadow: 0 1px 2px #000}
.extra-network-card .caption .description {font-size: 11px; color: #e5e7eb !important; max-height: 3.6em;
  overflow: hidden}
.extra-network-empty {padding: 16px; opacity: .7}
.extra-network-card.hidden-by-search {display: none}
"""


def thumb_url(card: Card) -> str | None:
    picture = card.preview()
    if picture is None:
        return None
    try:
        version = picture.stat().st_mtime_ns
    except OSError:
        return None
    return "sd_extra_networks/thumb?" + urlencode({"page": card.page, "name": card.name, "t": version})


def card_html(card: Card, default_multiplier: float) -> str:
    esc = lambda text: html.escape(str(text), quote=True)  # noqa: E731
    url = thumb_url(card)
    picture = (f"<img class='preview' loading='lazy' src='{esc(url)}' alt=''>" if url else
               f"<div class='placeholder'>{esc(card.name[:1].upper() or '?')}</div>")
    description = str(card.metadata.get("description") or "")
    actions = ("<button class='edit-metadata' title='Edit the user metadata of this card'>✎</button>"
               "<button class='replace-preview' title='Replace preview: use the image selected in the gallery'>"
               "▣</button>")
    data = {"page": card.page, "name": card.name, "prompt": card.prompt(default_multiplier),
            "negative": card.negative_prompt(), "search": card.search_text(), "tag": card.kind_tag,
            "checkpoint": card.title}
    attributes = " ".join(f"data-{key}='{esc(value)}'" for key, value in data.items())
    return (f"<div class='extra-network-card' {attributes} title='{esc(card.filename.name)}'>{picture}"
            f"<div class='actions'>{actions}</div><div class='caption'><div class='name'>{esc(card.name)}</div>"
            + (f"<div class='description'>{esc(description)}</div>" if description else "") + "</div></div>")


def cards_html(cards: Cards, page: network_cards.Page, default_multiplier: float, sort: str = "Name",
               reverse: bool = False) -> str:
    try:
        listed = cards.sorted(page.id, sort, reverse)
    except Exception as error:  # noqa: BLE001 - a broken folder must not break the page
        log.error("extra networks: listing %s failed: %s", page.title, error)
        return f"<div class='extra-network-empty error-box'>Could not list {html.escape(page.title)}: " \
               f"{html.escape(str(error))}</div>"
    if not listed:
        where = {"textual_inversion": "models/embeddings", "checkpoints": "models/Stable-diffusion",
                 "lora": "models/Lora", "hypernetworks": "models/hypernetworks"}.get(page.id, "its folder")
        return (f"<div class='extra-network-empty'>Nothing here yet: put files in {where} and press "
                "Refresh.</div>")
    body = "".join(card_html(card, default_multiplier) for card in listed)
    note = ("<div class='extra-network-empty'>Hypernetworks are listed for their cards only: this app does not apply "
            "<code>&lt;hypernet:…&gt;</code> tags (a job says it skipped them).</div>"
            if page.id == network_cards.HYPERNETWORKS.id else "")
    return f"{note}<div class='extra-network-cards'>{body}</div>"


def parse_request(text: str) -> dict[str, Any]:
    try:
        request = json.loads(text or "")
    except ValueError:
        raise CardError("the page sent a request that is not JSON") from None
    if not isinstance(request, dict) or not isinstance(request.get("page"), str) \
            or not isinstance(request.get("name"), str):
        raise CardError("the page sent a request without page and name")
    return request


def gallery_image(gallery: Any, index: Any) -> Image.Image:
    """The picture at ``index`` of a Gradio gallery value (the first one when nothing is selected)."""
    items = list(gallery or [])
    if not items:
        raise CardError("Generate an image first: the preview is taken from the image selected in the gallery")
    i = index if isinstance(index, int) and 0 <= index < len(items) else 0
    item = items[i]
    picture = item[0] if isinstance(item, (tuple, list)) else item
    if isinstance(picture, dict):
        picture = picture.get("image") or picture.get("path")
    if isinstance(picture, dict):
        picture = picture.get("path")
    if isinstance(picture, Image.Image):
        return picture
    with Image.open(picture) as opened:
        opened.load()
        return opened.copy()


class ExtraNetworksUI:
    """The accordion under one tab's prompt. Build inside the tab (``ExtraNetworksUI(runtime, controls)``), then
    ``wire(gallery, switch_checkpoint, outputs)`` once the gallery and the checkpoint dropdown exist."""

    def __init__(self, runtime: "Runtime", controls: Any) -> None:
        self.runtime = runtime
        self.tab = tab = controls.tab
        self.prompt, self.negative_prompt = controls.prompt, controls.negative_prompt
        self.cards = cards_of(runtime)
        self.pages = network_cards.pages(runtime)
        self.html: dict[str, gr.HTML] = {}
        self.sort: dict[str, gr.Dropdown] = {}
        self.reverse: dict[str, gr.Checkbox] = {}
        with gr.Accordion("Extra networks", open=False, elem_id=f"{tab}_extra_networks"):
            with gr.Group(visible=False, elem_id=f"{tab}_extra_metadata_editor") as self.editor:
                self.editor_title = gr.HTML(elem_id=f"{tab}_extra_metadata_title")
                with gr.Row():
                    self.description = gr.Textbox(label="Description", lines=2, elem_id=f"{tab}_extra_description")
                    self.notes = gr.Textbox(label="Notes", lines=2, elem_id=f"{tab}_extra_notes")
                with gr.Row():
                    self.activation = gr.Textbox(label="Activation text", elem_id=f"{tab}_extra_activation_text")
                    self.negative = gr.Textbox(label="Negative prompt", elem_id=f"{tab}_extra_negative_text")
                    self.weight = gr.Slider(0, 2, value=0, step=0.05, label="Preferred weight (0 = the default)",
                                            elem_id=f"{tab}_extra_preferred_weight")
                with gr.Row():
                    self.save = gr.Button("Save", variant="primary", elem_id=f"{tab}_extra_metadata_save")
                    self.cancel = gr.Button("Cancel", elem_id=f"{tab}_extra_metadata_cancel")
                self.editing = gr.State(None)
            with gr.Row():
                self.status = gr.HTML(elem_id=f"{tab}_extra_status")
                self.refresh = gr.Button("↻ Refresh", elem_id=f"{tab}_extra_refresh", scale=0, min_width=120)
            with gr.Tabs(elem_id=f"{tab}_extra_tabs"):
                for page in self.pages:
                    with gr.Tab(page.title, id=f"{tab}_{page.id}", elem_id=f"{tab}_{page.id}"):
                        with gr.Row():
                            gr.Textbox(show_label=False, placeholder="Search…", container=False, scale=4,
                                       elem_id=f"{tab}_{page.id}_extra_search", elem_classes="extra-network-search")
                            self.sort[page.id] = gr.Dropdown(SORT_CHOICES, value="Name", show_label=False,
                                                             container=False, scale=1,
                                                             elem_id=f"{tab}_{page.id}_extra_sort")
                            self.reverse[page.id] = gr.Checkbox(label="Reverse", value=False, scale=0, min_width=90,
                                                                elem_id=f"{tab}_{page.id}_extra_sort_dir")
                        self.html[page.id] = gr.HTML(self._render(page.id, "Name", False),
                                                     elem_id=f"{tab}_{page.id}_cards")
            # what the page's script sends: {"page", "name", "gallery_index"} and the action's button
            self.request = gr.Textbox(visible="hidden", elem_id=f"{tab}_extra_request")
            self.edit_button = gr.Button(visible="hidden", elem_id=f"{tab}_extra_edit_button")
            self.preview_button = gr.Button(visible="hidden", elem_id=f"{tab}_extra_preview_button")
            self.checkpoint_button = gr.Button(visible="hidden", elem_id=f"{tab}_extra_checkpoint_button")
        self._wire_own()

    # -- rendering ------------------------------------------------------------------------------------------------
    def _multiplier(self) -> float:
        return float(getattr(self.runtime.opts, "extra_networks_default_multiplier", 1.0))

    def _render(self, page_id: str, sort: str, reverse: bool) -> str:
        page = next(p for p in self.pages if p.id == page_id)
        return cards_html(self.cards, page, self._multiplier(), sort or "Name", bool(reverse))

    def _sort_inputs(self) -> list[Any]:
        return [c for page in self.pages for c in (self.sort[page.id], self.reverse[page.id])]

    def _render_all(self, *sorts: Any) -> list[str]:
        return [self._render(page.id, sorts[2 * i], sorts[2 * i + 1]) for i, page in enumerate(self.pages)]

    # -- events ---------------------------------------------------------------------------------------------------
    def _wire_own(self) -> None:
        all_html = [self.html[page.id] for page in self.pages]
        for page in self.pages:
            for control in (self.sort[page.id], self.reverse[page.id]):
                control.change(lambda sort, reverse, page_id=page.id: self._render(page_id, sort, reverse),
                               [self.sort[page.id], self.reverse[page.id]], self.html[page.id], queue=False,
                               show_progress="hidden")

        def refresh(*sorts):
            try:
                self.cards.refresh()
            except Exception as error:  # noqa: BLE001 - say why; the old cards stay
                log.error("extra networks: refresh failed: %s", error)
                return [gr.update() for _ in all_html] + [f"<div class='error-box'>Refresh failed: "
                                                          f"{html.escape(str(error))}</div>"]
            return [*self._render_all(*sorts), ""]

        self.refresh.click(refresh, self._sort_inputs(), [*all_html, self.status], show_progress="hidden")

        def on_page_load(*sorts):
            self.cards.refresh(rescan_models=False)     # metadata, previews and the embeddings folder read again
            return self._render_all(*sorts)

        root = gr.context.Context.root_block
        if root is not None:
            root.load(on_page_load, self._sort_inputs(), all_html, queue=False, show_progress="hidden")

        def open_editor(text):
            try:
                request = parse_request(text)
                card = self.cards.find(request["page"], request["name"])
            except CardError as error:
                return [gr.update()] * 8 + [f"<div class='error-box'>{html.escape(str(error))}</div>"]
            m = card.metadata
            is_lora_like = bool(card.kind_tag)
            return [gr.update(visible=True),
                    f"<h3>{html.escape(card.name)}</h3><p>{html.escape(card.filename.name)} — saved to "
                    f"{html.escape(card.metadata_path.name)}</p>",
                    str(m.get("description") or ""), str(m.get("notes") or ""),
                    gr.update(value=str(m.get("activation text") or ""), visible=is_lora_like),
                    gr.update(value=str(m.get("negative text") or ""), visible=is_lora_like),
                    gr.update(value=min(max(network_cards._number(m.get("preferred weight")), 0.0), 2.0),
                              visible=is_lora_like),
                    {"page": card.page, "name": card.name}, ""]

        self.edit_button.click(open_editor, self.request,
                               [self.editor, self.editor_title, self.description, self.notes, self.activation,
                                self.negative, self.weight, self.editing, self.status], queue=False)

        def save(editing, description, notes, activation, negative, weight, *sorts):
            try:
                if not editing:
                    raise CardError("no card is being edited")
                card = self.cards.find(editing["page"], editing["name"])
                values = {"description": description, "notes": notes}
                if card.kind_tag:
                    values |= {"activation text": activation, "negative text": negative, "preferred weight": weight}
                network_cards.save_user_metadata(card, values)
            except (CardError, OSError) as error:
                return [gr.update(), *(gr.update() for _ in all_html),
                        f"<div class='error-box'>Not saved: {html.escape(str(error))}</div>"]
            return [gr.update(visible=False), *self._render_all(*sorts),
                    f"Saved {html.escape(card.metadata_path.name)}"]

        self.save.click(save, [self.editing, self.description, self.notes, self.activation, self.negative,
                               self.weight, *self._sort_inputs()], [self.editor, *all_html, self.status],
                        queue=False)
        self.cancel.click(lambda: gr.update(visible=False), None, self.editor, queue=False)

    def wire(self, gallery: Any, switch_checkpoint: Callable[[str], Any], checkpoint_outputs: list[Any]) -> None:
        """Replace preview (from ``gallery``) and checkpoint cards (``switch_checkpoint(title)`` -> outputs)."""
        all_html = [self.html[page.id] for page in self.pages]

        def replace_preview(text, gallery_value, *sorts):
            try:
                request = parse_request(text)
                card = self.cards.find(request["page"], request["name"])
                picture = gallery_image(gallery_value, request.get("gallery_index"))
                target = network_cards.save_preview(card, picture)
            except (CardError, OSError) as error:
                return [*(gr.update() for _ in all_html),
                        f"<div class='error-box'>Preview not replaced: {html.escape(str(error))}</div>"]
            return [*self._render_all(*sorts), f"Preview saved: {html.escape(target.name)}"]

        self.preview_button.click(replace_preview, [self.request, gallery, *self._sort_inputs()],
                                  [*all_html, self.status], queue=False)

        def checkpoint(text):
            try:
                request = parse_request(text)
                if request["page"] != CHECKPOINTS.id:
                    raise CardError("not a checkpoint card")
                card = self.cards.find(CHECKPOINTS.id, request["name"])
            except CardError:
                return [gr.update() for _ in checkpoint_outputs]
            return switch_checkpoint(card.title or card.name)

        self.checkpoint_button.click(checkpoint, self.request, checkpoint_outputs, concurrency_limit=1)


def cards_of(runtime: "Runtime") -> Cards:
    """One card listing per runtime, shared by both tabs and the thumbnail route."""
    cards = runtime.__dict__.get("_network_cards")
    if cards is None:
        cards = runtime.__dict__["_network_cards"] = Cards(runtime)
    return cards


def add_routes(app: Any, runtime: "Runtime", gradio_app: Any = None) -> None:
    """``/sd_extra_networks/thumb?page=&name=``: a card's picture, behind the page's login."""
    from fastapi import Depends, HTTPException
    from fastapi.responses import FileResponse

    from modules import page as page_module

    def thumb(page: str, name: str) -> FileResponse:
        try:
            card = cards_of(runtime).find(page, name)
        except CardError as error:
            raise HTTPException(404, str(error)) from None
        picture = card.preview()
        if picture is None:
            raise HTTPException(404, f"{name}: no preview picture")
        return FileResponse(picture, headers={"Cache-Control": "max-age=60"})

    app.add_api_route("/sd_extra_networks/thumb", thumb, methods=["GET", "HEAD"], include_in_schema=False,
                      dependencies=[Depends(page_module._login_checker(gradio_app))])
    page_module.keep_page_mount_last(app)


__all__ = ["CSS", "ExtraNetworksUI", "LORA", "add_routes", "cards_of"]
