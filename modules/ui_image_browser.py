"""The Image Browser tab: the pictures in the output folders (``modules.image_browser``), newest first and paged,
filtered by prompt text, folder and date; the PNG info of the one clicked; send it to txt2img / img2img; delete it
(after a confirmation) into the trash folder inside the outputs folder."""
from __future__ import annotations

import html
from typing import Any

import gradio as gr
from PIL import Image

from modules.image_browser import DEFAULT_PAGE_SIZE, TRASH_DIR_NAME, BrowserError, BrowserPage, ImageBrowser

THUMB = 256
ALL_FOLDERS = "All folders"

CSS = """
#image_browser_gallery .caption-label {font-size: 0.75em}
/* six thumbnails a row however few there are (Gradio narrows the grid to the number of pictures) */
#image_browser_gallery .grid-container {grid-template-columns: repeat(6, minmax(0, 1fr)) !important}
#image_browser_confirm {border: 1px solid #f59e0b; border-radius: 8px; padding: 8px; background: #fffbeb}
#image_browser_confirm .prose {color: #92400e}
#image_browser_info p {word-break: break-word}
"""


def thumbnail(image: Any) -> Image.Image | None:
    try:
        with Image.open(image.path) as im:
            im.thumbnail((THUMB, THUMB))
            return im.convert("RGB") if im.mode not in ("RGB", "RGBA") else im.copy()
    except (OSError, ValueError):
        return None


def page_label(result: BrowserPage) -> str:
    if not result.total:
        return "No pictures match."
    first = (result.page - 1) * DEFAULT_PAGE_SIZE + 1
    return (f"Page {result.page} of {result.pages} — pictures {first}–{first + len(result.images) - 1} "
            f"of {result.total}")


def info_html(path: str, infotext: str, items: dict[str, str], shown_as: str) -> str:
    rows = [f"<div class='image-browser-path'><b>File</b> <code>{html.escape(shown_as)}</code></div>"]
    if infotext:
        rows.append(f"<div><b>parameters</b><p>{html.escape(infotext).replace(chr(10), '<br>')}</p></div>")
    rows += [f"<div><b>{html.escape(k)}</b><p>{html.escape(v)}</p></div>" for k, v in items.items()]
    if not infotext and not items:
        rows.append("<div>No generation parameters in this picture.</div>")
    return "".join(rows)


def image_browser_tab(runtime: Any, tabs: Any, t2i: Any, i2i: Any, i2i_widgets: dict[str, Any]) -> None:
    """Build the tab's contents (call inside its ``gr.Tab``); send-to goes to ``t2i`` / ``i2i`` of ``tabs``. The
    pictures are listed when a person opens the tab (javascript/history.js clicks the hidden open button)."""
    from modules.ui import format_error, paste_fields

    browser = ImageBrowser.for_runtime(runtime)
    outputs_dir = runtime.paths.outputs_dir

    def shown_as(path) -> str:
        try:
            return path.relative_to(outputs_dir.resolve()).as_posix()
        except ValueError:
            return str(path)

    with gr.Row(equal_height=True):
        search = gr.Textbox(label="Prompt contains", placeholder="words from the prompt or file name (Enter to search)",
                            elem_id="image_browser_search", scale=4)
        folder = gr.Dropdown([ALL_FOLDERS], value=ALL_FOLDERS, label="Folder", elem_id="image_browser_folder",
                             scale=2)
        date_from = gr.Textbox(label="From date", placeholder="YYYY-MM-DD", elem_id="image_browser_date_from",
                               scale=1, min_width=120)
        date_to = gr.Textbox(label="To date", placeholder="YYYY-MM-DD", elem_id="image_browser_date_to", scale=1,
                             min_width=120)
        search_button = gr.Button("🔍 Search", variant="primary", elem_id="image_browser_search_button", scale=1,
                                  min_width=100)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Pictures (newest first)", columns=6, height=560, object_fit="contain",
                                 allow_preview=False, format="png", interactive=False, elem_id="image_browser_gallery")
            with gr.Row():
                prev_page = gr.Button("◀ Newer", size="sm", elem_id="image_browser_prev_page")
                label = gr.HTML("", elem_id="image_browser_page_label")
                next_page = gr.Button("Older ▶", size="sm", elem_id="image_browser_next_page")
            error = gr.HTML(elem_id="image_browser_error")
        with gr.Column(scale=2):
            picture = gr.Image(label="Selected picture", type="pil", interactive=False, height=320,
                               elem_id="image_browser_image")
            info = gr.HTML("<div class='history-empty'>Click a picture to see its PNG info.</div>",
                           elem_id="image_browser_info")
            infotext = gr.Textbox(visible="hidden", elem_id="image_browser_infotext")
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="image_browser_send_txt2img")
                to_img2img = gr.Button("Send to img2img", elem_id="image_browser_send_img2img")
                delete = gr.Button("🗑️ Delete", variant="stop", elem_id="image_browser_delete")
            with gr.Column(visible=False, elem_id="image_browser_confirm") as confirm_box:
                confirm_text = gr.Markdown(elem_id="image_browser_confirm_text")
                with gr.Row():
                    confirm = gr.Button("Yes, move it to the trash", variant="stop",
                                        elem_id="image_browser_confirm_delete")
                    keep = gr.Button("No, keep it", elem_id="image_browser_cancel_delete")
            status = gr.HTML(elem_id="image_browser_status")

    page = gr.State(1)
    paths = gr.State([])      # the paths of the pictures the gallery shows, in order
    selected = gr.State("")   # the path of the picture clicked
    filters = [search, folder, date_from, date_to]

    def load(page_no, text, folder_name, start, end):
        try:
            result = browser.list(search=text, date_from=start, date_to=end,
                                  folder="" if folder_name in (None, ALL_FOLDERS) else folder_name, page=page_no)
        except BrowserError as e:
            return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), format_error(e)
        shown = [(img, thumb) for img in result.images if (thumb := thumbnail(img)) is not None]
        folders = [ALL_FOLDERS, *result.folders]
        return ([(thumb, f"{img.date} · {img.name}") for img, thumb in shown], result.page,
                [str(img.path) for img, _ in shown], page_label(result), gr.update(choices=folders), "")

    load_outputs = [gallery, page, paths, label, folder, error]
    for event in (search_button.click, search.submit, date_from.submit, date_to.submit):
        event(lambda *f: load(1, *f), filters, load_outputs, queue=False)
    folder.input(lambda *f: load(1, *f), filters, load_outputs, queue=False)
    open_button = gr.Button("open", visible="hidden", elem_id="image_browser_open")
    open_button.click(load, [page, *filters], load_outputs, queue=False)
    prev_page.click(lambda p, *f: load(max(1, p - 1), *f), [page, *filters], load_outputs, queue=False)
    next_page.click(lambda p, *f: load(p + 1, *f), [page, *filters], load_outputs, queue=False)

    def select(shown: list[str], evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        if not 0 <= index < len(shown):
            return gr.update(), gr.update(), gr.update(), "", gr.update(visible=False), ""
        try:
            real, text, items = browser.info(shown[index])
            with Image.open(real) as im:
                im.load()
                image = im.copy()
        except (BrowserError, OSError) as e:
            return None, "", "", "", gr.update(visible=False), format_error(e)
        return (image, info_html(str(real), text, items, shown_as(real)), text, str(real), gr.update(visible=False),
                "")

    gallery.select(select, paths, [picture, info, infotext, selected, confirm_box, status], queue=False)

    def ask(path: str):
        if not path:
            return gr.update(visible=False), "", "<div class='error-box'>Click a picture first.</div>"
        try:
            real = browser.resolve(path)
        except BrowserError as e:
            return gr.update(visible=False), "", format_error(e)
        return (gr.update(visible=True), f"Move **{shown_as(real)}** to the `{TRASH_DIR_NAME}` folder of the outputs?",
                "")

    def do_delete(path: str, *f):
        try:
            target = browser.move_to_trash(path)
        except BrowserError as e:
            return gr.update(visible=False), format_error(e), *[gr.update()] * 9
        done = f"<div>Moved to <code>{html.escape(shown_as(target))}</code>.</div>"
        return (gr.update(visible=False), done, None, "<div class='history-empty'>Click a picture to see its PNG "
                "info.</div>", "", "", *load(1, *f)[:5])   # the listing again, without the deleted picture

    delete.click(ask, selected, [confirm_box, confirm_text, status], queue=False)
    keep.click(lambda: (gr.update(visible=False), "<div>Kept.</div>"), None, [confirm_box, status], queue=False)
    confirm.click(do_delete, [selected, *filters],
                  [confirm_box, status, picture, info, infotext, selected, *load_outputs[:5]], queue=False)

    # send-to: the fields from the picture's infotext through the same paste as PNG Info
    def need(text: str) -> None:
        if not text:
            raise gr.Error("This picture has no generation parameters to send (or none is selected).")

    t2i_targets, t2i_fill = paste_fields(t2i)
    to_txt2img.click(lambda text: need(text) or t2i_fill(text), infotext, t2i_targets).success(
        lambda: gr.Tabs(selected="txt2img"), None, tabs)
    i2i_targets, i2i_fill = paste_fields(i2i)

    def send_img2img(text, image):
        if image is None:
            raise gr.Error("Click a picture first.")
        return [*(i2i_fill(text) if text else [gr.update()] * len(i2i_targets)), image]

    to_img2img.click(send_img2img, [infotext, picture], [*i2i_targets, i2i_widgets["init_img"]]).success(
        lambda: (gr.Tabs(selected="img2img"), gr.Tabs(selected="img2img_tab")), None,
        [tabs, i2i_widgets["mode_tabs"]])
