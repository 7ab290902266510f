"""The History tab: the queue (the running job with its progress and live preview, the jobs waiting with Cancel) and
the past jobs from the SQLite history with their pictures and infotext, each sendable to txt2img / img2img.

The history lives in the job queue's database (``modules.job_queue``), so it survives a restart. The page asks for
the queue every second while this tab is shown (a ``gr.Timer``); the list of past jobs is sent again only when it
changed. Row buttons are plain HTML calling ``javascript/history.js``, which hands the task id to a hidden Gradio
button.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from modules.job_queue import HistoryEntry, JobStatus

log = logging.getLogger(__name__)

PAGE_SIZE = 15
THUMB_SIZE = 56
REFRESH_SECONDS = 1.0
NO_INFOTEXT = "(no infotext recorded)"

CSS = """
#history_queue table, #history_list table {width: 100%; border-collapse: collapse; font-size: 0.9em}
#history_queue td, #history_queue th, #history_list td, #history_list th {padding: 4px 6px; text-align: left;
  border-bottom: 1px solid var(--border-color-primary); vertical-align: middle}
#history_list tr.history-row {cursor: pointer}
#history_list tr.history-row:hover {background: var(--background-fill-secondary)}
#history_list tr.history-row.selected {background: var(--color-accent-soft)}
#history_list img.history-thumb {width: 56px; height: 56px; object-fit: contain; display: block;
  background: var(--background-fill-secondary)}
.history-prompt {max-width: 420px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap}
.history-status {display: inline-block; padding: 1px 7px; border-radius: 9px; font-size: 0.85em; font-weight: 600}
.history-status-done {background: #dcfce7; color: #166534}
.history-status-failed {background: #fee2e2; color: #991b1b}
.history-status-interrupted, .history-status-cancelled {background: #fef3c7; color: #92400e}
.history-status-queued, .history-status-running {background: #dbeafe; color: #1e40af}
.history-empty {opacity: 0.7; padding: 6px 0}
.history-cancel {padding: 1px 8px; border-radius: 6px; border: 1px solid var(--border-color-primary);
  background: var(--button-secondary-background-fill); cursor: pointer}
#history_detail_info p {word-break: break-word}
"""


# ---------------------------------------------------------------------------------------------------------------------
# rendering (plain functions: tested without a page)
# ---------------------------------------------------------------------------------------------------------------------
def summary(params: dict[str, Any]) -> str:
    """What a job was about, in one line: its prompt, or the name of what it trains / makes."""
    for key in ("prompt", "embedding_name", "name", "custom_name"):
        value = params.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip().replace("\n", " ")
    return ""


def when(timestamp: float | None) -> str:
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else ""


def status_badge(status: JobStatus | str) -> str:
    value = getattr(status, "value", status)
    return f"<span class='history-status history-status-{html.escape(value)}'>{html.escape(value)}</span>"


def _js_string(value: str) -> str:
    """``value`` as a JavaScript string literal inside a double-quoted HTML attribute."""
    import json

    return html.escape(json.dumps(value), quote=True)


def queue_html(queue: Any) -> str:
    """The running job (progress as on the generation tabs) and the jobs waiting, each with a Cancel button."""
    from modules.ui import progress_html

    if queue is None:           # a page built without a running queue (tests, --nowebui tools)
        return "<div class='history-section history-empty'>The job queue is not running.</div>"
    current, pending = queue.current, queue.pending()
    parts = ["<div class='history-section'>"]
    if current is not None:
        parts.append(
            f"<div class='history-running' data-task-id='{html.escape(current.id)}'><b>Running</b> "
            f"{html.escape(current.kind)} <code>{html.escape(current.id)}</code> — "
            f"<span class='history-prompt'>{html.escape(summary(current.params)[:200])}</span> "
            f"<button class='history-cancel' onclick=\"historyCancel({_js_string(current.id)})\">Interrupt</button>"
            f"{progress_html(current.state)}</div>")
    else:
        parts.append("<div class='history-empty'>No job is running.</div>")
    if pending:
        rows = "".join(
            f"<tr data-task-id='{html.escape(job.id)}'><td>{i + 1}</td><td>{status_badge('queued')} In queue</td>"
            f"<td>{html.escape(job.kind)}</td><td class='history-prompt'>{html.escape(summary(job.params)[:200])}</td>"
            f"<td>{when(job.created)}</td><td><button class='history-cancel' "
            f"onclick=\"historyCancel({_js_string(job.id)})\">Cancel</button></td></tr>"
            for i, job in enumerate(pending))
        parts.append(f"<table class='history-pending'><tr><th>#</th><th>Status</th><th>Tab</th><th>Prompt</th>"
                     f"<th>Queued</th><th></th></tr>{rows}</table>")
    else:
        parts.append("<div class='history-empty'>No job is waiting.</div>")
    parts.append("</div>")
    return "".join(parts)


def _thumbnail(path: str, roots: list[Path]) -> str:
    """A small JPEG of an output picture as a data URL ("" when the file is gone or outside the output folders)."""
    try:
        real = Path(path).resolve()
        if not any(real.is_relative_to(r) for r in roots) or not real.is_file():
            return ""
        with Image.open(real) as im:
            im.thumbnail((THUMB_SIZE * 2, THUMB_SIZE * 2))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="JPEG", quality=80)
    except (OSError, ValueError):
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def history_list_html(entries: list[HistoryEntry], roots: list[Path], selected: str = "") -> str:
    """The past jobs, newest first: a picture, when (finished, else queued), status, tab, prompt, how many files;
    a row click selects it."""
    if not entries:
        return "<div class='history-empty'>No jobs in the history yet. Generate something on txt2img or img2img.</div>"
    rows = []
    for e in entries:
        thumb = _thumbnail(e.files[0], roots) if e.files else ""
        picture = f"<img class='history-thumb' src='{thumb}' alt=''>" if thumb else ""
        css = "history-row selected" if e.id == selected else "history-row"
        rows.append(
            f"<tr class='{css}' data-task-id='{html.escape(e.id)}' onclick=\"historySelect({_js_string(e.id)})\" "
            f"title='{html.escape(e.id)}'><td>{picture}</td><td>{when(e.finished or e.created)}</td>"
            f"<td>{status_badge(e.status)}</td><td>{html.escape(e.kind)}</td>"
            f"<td class='history-prompt'>{html.escape(summary(e.params)[:300])}</td><td>{len(e.files)}</td></tr>")
    return ("<table><tr><th></th><th>When</th><th>Status</th><th>Tab</th><th>Prompt</th><th>Files</th></tr>"
            + "".join(rows) + "</table>")


def params_infotext(params: dict[str, Any]) -> str:
    """An A1111 infotext made from a job's recorded request, for a job that saved none (failed, interrupted,
    cancelled or still queued): what send-to reads."""
    prompt = str(params.get("prompt") or "")
    lines = [prompt]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    fields = [("Steps", params.get("steps")), ("Sampler", params.get("sampler_name")),
              ("Schedule type", params.get("scheduler")), ("CFG scale", params.get("cfg_scale")),
              ("Seed", params.get("seed"))]
    if params.get("width") and params.get("height"):
        fields.append(("Size", f"{params['width']}x{params['height']}"))
    if params.get("denoising_strength") is not None:
        fields.append(("Denoising strength", params["denoising_strength"]))
    lines.append(", ".join(f"{k}: {v}" for k, v in fields if v is not None and v != ""))
    return "\n".join(lines)


def entry_infotext(entry: HistoryEntry) -> str:
    """The job's infotext as it was saved, else one made from its request."""
    return entry.infotext or (params_infotext(entry.params) if entry.params.get("prompt") is not None else "")


def detail_html(entry: HistoryEntry, roots: list[Path]) -> str:
    missing = [f for f in entry.files if not _readable(f, roots)]
    parts = [f"<div><b>{html.escape(entry.id)}</b> · {status_badge(entry.status)} · {html.escape(entry.kind)}</div>",
             f"<div>Queued {when(entry.created)}"
             + (f" · started {when(entry.started)}" if entry.started else "")
             + (f" · finished {when(entry.finished)}" if entry.finished else "")
             + (f" · ran {entry.duration:.1f}s" if entry.duration is not None else "") + "</div>"]
    if entry.error:
        parts.append(f"<div class='error-box'>{html.escape(entry.error)}</div>")
    text = entry.infotext or NO_INFOTEXT
    parts.append(f"<div class='infotext'><p>{html.escape(text).replace(chr(10), '<br>')}</p></div>")
    if missing:
        parts.append(f"<div class='history-empty'>{len(missing)} of its {len(entry.files)} file(s) are no longer in "
                     "the output folders (moved to the trash or deleted).</div>")
    return "".join(parts)


def _readable(path: str, roots: list[Path]) -> Path | None:
    try:
        real = Path(path).resolve()
    except OSError:
        return None
    return real if any(real.is_relative_to(r) for r in roots) and real.is_file() else None


def entry_images(entry: HistoryEntry, roots: list[Path]) -> list[tuple[Image.Image, str]]:
    """The job's pictures still in the output folders, loaded (a file outside them is never opened)."""
    images = []
    for f in entry.files:
        real = _readable(f, roots)
        if real is None:
            continue
        try:
            with Image.open(real) as im:
                im.load()
                images.append((im.copy(), real.name))
        except (OSError, ValueError):
            continue
    return images


# ---------------------------------------------------------------------------------------------------------------------
# the tab
# ---------------------------------------------------------------------------------------------------------------------
def history_tab(runtime: Any, tabs: Any, t2i: Any, i2i: Any, i2i_widgets: dict[str, Any]) -> None:
    """Build the History tab's contents (call inside its ``gr.Tab``) and wire send-to into the txt2img (``t2i``) and
    img2img (``i2i``, its init image in ``i2i_widgets``) tabs of ``tabs``. javascript/history.js clicks the hidden
    open/close buttons when a person switches to and away from the tab (not while the page first shows every tab)."""
    from modules.image_browser import output_roots
    from modules.ui import paste_fields

    def roots() -> list[Path]:
        return output_roots(runtime.paths, runtime.opts)

    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gr.Markdown("### Queue")
            queue_box = gr.HTML(lambda: queue_html(runtime.queue), elem_id="history_queue")
            preview = gr.Image(label="Running job — live preview", type="pil", interactive=False, height=180,
                               elem_id="history_running_preview")
            gr.Markdown("### History")
            with gr.Row():
                prev_page = gr.Button("◀ Newer", elem_id="history_prev_page", size="sm")
                page_label = gr.HTML("Page 1", elem_id="history_page_label")
                next_page = gr.Button("Older ▶", elem_id="history_next_page", size="sm")
                refresh = gr.Button("🔄 Refresh", elem_id="history_refresh", size="sm")
            list_box = gr.HTML(elem_id="history_list")
        with gr.Column(scale=2):
            gr.Markdown("### Selected job")
            gallery = gr.Gallery(label="Pictures", columns=3, height=300, object_fit="contain", format="png",
                                 interactive=False, elem_id="history_gallery")
            info = gr.HTML("<div class='history-empty'>Click a job in the list to see it here.</div>",
                           elem_id="history_detail_info")
            infotext = gr.Textbox(visible="hidden", elem_id="history_infotext")
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="history_send_txt2img")
                to_img2img = gr.Button("Send to img2img", elem_id="history_send_img2img")
            message = gr.HTML(elem_id="history_message")
    # the row buttons' targets (javascript/history.js puts the task id in through the events' js)
    action_id = gr.Textbox(visible="hidden", elem_id="history_action_id")
    cancel_button = gr.Button("cancel", visible="hidden", elem_id="history_cancel_button")
    select_button = gr.Button("select", visible="hidden", elem_id="history_select_button")
    open_button = gr.Button("open", visible="hidden", elem_id="history_open")
    close_button = gr.Button("close", visible="hidden", elem_id="history_close")
    timer = gr.Timer(REFRESH_SECONDS, active=False)

    page = gr.State(0)
    selected = gr.State("")
    selected_image = gr.State(0)
    shown = gr.State("")   # what the list showed last (rendered again only when it changes)
    preview_shown = gr.State("-")   # "<task id>:<preview number>" of the live preview shown

    def list_update(page_no: int, selected_id: str, last: str, force: bool = False):
        entries = runtime.queue.history(limit=PAGE_SIZE + 1, offset=page_no * PAGE_SIZE)
        more = len(entries) > PAGE_SIZE
        entries = entries[:PAGE_SIZE]
        key = repr([(e.id, e.status.value, e.finished, len(e.files)) for e in entries]) + selected_id
        label = f"Page {page_no + 1}" + ("" if more else " — no older jobs")
        if key == last and not force:
            return gr.skip(), gr.skip(), last
        return history_list_html(entries, roots(), selected_id), label, key

    def tick(page_no, selected_id, last, preview_key):
        """The queue; the live preview only when it changed (a new job or a newer picture); the list if it changed."""
        current = runtime.queue.current
        key = f"{current.id}:{current.state.id_live_preview}" if current is not None else ""
        image = gr.skip() if key == preview_key else (current.state.current_image if current is not None else None)
        return (queue_html(runtime.queue), image, key, *list_update(page_no, selected_id, last))

    def refresh_all(page_no, selected_id):
        return (queue_html(runtime.queue), *list_update(page_no, selected_id, "", force=True))

    def go(page_no, delta, selected_id):
        page_no = max(0, page_no + delta)
        if delta > 0 and not runtime.queue.history(limit=1, offset=page_no * PAGE_SIZE):
            page_no -= delta   # no older jobs: stay
        return page_no, *list_update(page_no, selected_id, "", force=True)

    def select(task_id, page_no):
        entry = runtime.queue.history_entry(task_id or "")
        if entry is None:
            return (gr.update(), gr.update(), gr.update(), "", 0,
                    "<div class='error-box'>That job is no longer in the history.</div>",
                    *list_update(page_no, "", "", force=True))
        return (entry_images(entry, roots()), detail_html(entry, roots()), entry_infotext(entry), entry.id, 0, "",
                *list_update(page_no, entry.id, "", force=True))

    def cancel(task_id):
        try:
            job = runtime.queue.cancel(task_id or "")
        except KeyError:
            return queue_html(runtime.queue), ("<div class='error-box'>That job has already finished or was "
                                               "cancelled.</div>")
        verb = "Interrupting" if job.status is JobStatus.RUNNING else "Cancelled"
        return queue_html(runtime.queue), f"<div>{verb} {html.escape(job.id)}.</div>"

    list_outputs = [list_box, page_label, shown]
    timer.tick(tick, [page, selected, shown, preview_shown], [queue_box, preview, preview_shown, *list_outputs],
               queue=False,
               show_progress="hidden")
    open_button.click(lambda p, s: (gr.Timer(active=True), *refresh_all(p, s)), [page, selected],
                      [timer, queue_box, *list_outputs], queue=False, show_progress="hidden")
    close_button.click(lambda: gr.Timer(active=False), None, timer, queue=False, show_progress="hidden")
    refresh.click(refresh_all, [page, selected], [queue_box, *list_outputs], queue=False)
    prev_page.click(lambda p, s: go(p, -1, s), [page, selected], [page, *list_outputs], queue=False)
    next_page.click(lambda p, s: go(p, 1, s), [page, selected], [page, *list_outputs], queue=False)
    # the js gives the id the row's button set (no race with the hidden textbox's own update)
    take_id = "(x, ...rest) => [window.historyActionId ?? x, ...rest]"
    select_button.click(select, [action_id, page],
                        [gallery, info, infotext, selected, selected_image, message, *list_outputs],
                        js=take_id, queue=False)
    cancel_button.click(cancel, [action_id], [queue_box, message], js=take_id, queue=False)
    def picture_selected(evt: gr.SelectData):
        return evt.index if isinstance(evt.index, int) else 0

    gallery.select(picture_selected, None, selected_image, queue=False)

    # send-to: the fields from the job's infotext through the same paste as PNG Info (extensions' callbacks too)
    def no_job():
        raise gr.Error("Select a job in the history first.")

    t2i_targets, t2i_fill = paste_fields(t2i)
    to_txt2img.click(lambda text: t2i_fill(text) if text else no_job(), infotext, t2i_targets).success(
        lambda: gr.Tabs(selected="txt2img"), None, tabs)

    i2i_targets, i2i_fill = paste_fields(i2i)

    def send_img2img(text, images, index):
        if not text and not images:
            no_job()
        image = None
        if images:
            item = images[min(index or 0, len(images) - 1)]
            image = item[0] if isinstance(item, (tuple, list)) else item
            image = Image.open(image) if isinstance(image, str) else image
        return [*i2i_fill(text), image if image is not None else gr.update()]

    to_img2img.click(send_img2img, [infotext, gallery, selected_image], [*i2i_targets, i2i_widgets["init_img"]]
                     ).success(lambda: (gr.Tabs(selected="img2img"), gr.Tabs(selected="img2img_tab")), None,
                               [tabs, i2i_widgets["mode_tabs"]])
