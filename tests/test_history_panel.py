"""The History tab's and the Image Browser's backends: listing, filters, PNG info, delete into the trash, path safety,
the history after a restart, and the "In queue" progress text of a job waiting behind another."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from modules.image_browser import TRASH_DIR_NAME, BrowserError, ImageBrowser, output_roots
from modules.job_queue import INTERRUPTED_BY_RESTART, JobOutput, JobQueue, JobStatus
from modules.options import Options
from modules.paths import Paths


def save_png(path: Path, infotext: str | None, *, mtime: float | None = None, color: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if infotext is not None:
        info.add_text("parameters", infotext)
    Image.new("RGB", (16, 16), color).save(path, pnginfo=info)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def stamp(day: str, hour: int = 12) -> float:
    return time.mktime(time.strptime(f"{day} {hour}", "%Y-%m-%d %H"))


@pytest.fixture
def data(tmp_path):
    paths = Paths.from_args(data_dir=tmp_path / "data")
    paths.ensure()
    opts = Options.load(paths.config_file)
    out = paths.outputs_dir
    files = {
        "old": save_png(out / "txt2img-images/2024-01-05/00000-1.png",
                        "a red circle\nSteps: 4, Sampler: Euler a, Seed: 1, Size: 16x16", mtime=stamp("2024-01-05")),
        "mid": save_png(out / "img2img-images/2024-02-10/00001-2.png",
                        "a blue square\nNegative prompt: blurry\nSteps: 5, Seed: 2", mtime=stamp("2024-02-10")),
        "new": save_png(out / "txt2img-images/2024-03-01/00002-3.png",
                        "a Blue Triangle\nSteps: 6, Seed: 3", mtime=stamp("2024-03-01")),
        "plain": save_png(out / "extras-images/upscaled.png", None, mtime=stamp("2024-02-20")),
    }
    (out / "txt2img-images/notes.txt").write_text("not a picture")
    runtime = SimpleNamespace(paths=paths, opts=opts)
    return SimpleNamespace(paths=paths, opts=opts, out=out, files=files, runtime=runtime,
                           browser=ImageBrowser.for_runtime(runtime))


# ---------------------------------------------------------------------------------------------------------------------
# image browser
# ---------------------------------------------------------------------------------------------------------------------
def test_lists_pictures_newest_first_with_their_infotext(data):
    page = data.browser.list()
    assert [i.path for i in page.images] == [data.files[k].resolve() for k in ("new", "plain", "mid", "old")]
    assert page.total == 4 and page.pages == 1
    assert page.images[0].infotext.startswith("a Blue Triangle")
    assert page.images[2].folder == "img2img-images/2024-02-10"
    assert page.folders == ["extras-images", "img2img-images", "txt2img-images"]


def test_pages(data):
    first = data.browser.list(page_size=3)
    second = data.browser.list(page_size=3, page=2)
    assert (first.pages, len(first.images), len(second.images)) == (2, 3, 1)
    assert second.images[0].path == data.files["old"].resolve()
    assert data.browser.list(page_size=3, page=99).page == 2   # clamped to the last page


def test_filter_by_prompt_text_any_case_and_by_file_name(data):
    blue = data.browser.list(search="BLUE")
    assert {i.path for i in blue.images} == {data.files["mid"].resolve(), data.files["new"].resolve()}
    assert [i.path for i in data.browser.list(search="upscaled").images] == [data.files["plain"].resolve()]
    assert data.browser.list(search="no such words").total == 0


def test_filter_by_date_and_folder(data):
    feb = data.browser.list(date_from="2024-02-01", date_to="2024-02-28")
    assert {i.path for i in feb.images} == {data.files["mid"].resolve(), data.files["plain"].resolve()}
    assert [i.path for i in data.browser.list(date_from="2024-03-01").images] == [data.files["new"].resolve()]
    assert [i.path for i in data.browser.list(date_to="2024-01-05").images] == [data.files["old"].resolve()]
    txt = data.browser.list(folder="txt2img-images")
    assert {i.path for i in txt.images} == {data.files["old"].resolve(), data.files["new"].resolve()}


@pytest.mark.parametrize("kwargs, field", [({"date_from": "31/12/2024"}, "date_from"),
                                           ({"date_to": "yesterday"}, "date_to"),
                                           ({"date_from": "2024-03-01", "date_to": "2024-01-01"}, "date_to")])
def test_bad_dates_are_refused_naming_the_field(data, kwargs, field):
    with pytest.raises(BrowserError) as e:
        data.browser.list(**kwargs)
    assert e.value.field == field
    assert ("before" if "date_from" in kwargs and "date_to" in kwargs else "YYYY-MM-DD") in str(e.value)


def test_png_info_of_one_picture(data):
    real, text, items = data.browser.info("img2img-images/2024-02-10/00001-2.png")
    assert real == data.files["mid"].resolve()
    assert text == "a blue square\nNegative prompt: blurry\nSteps: 5, Seed: 2"


def test_delete_moves_the_picture_and_its_caption_into_the_trash(data):
    caption = data.files["old"].with_suffix(".txt")
    caption.write_text("a red circle")
    target = data.browser.move_to_trash(str(data.files["old"]))
    assert not data.files["old"].exists() and not caption.exists()
    assert target == (data.out / TRASH_DIR_NAME / "txt2img-images/2024-01-05/00000-1.png").resolve()
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert target.with_suffix(".txt").read_text() == "a red circle"
    listed = {i.path for i in data.browser.list().images}
    assert data.files["old"].resolve() not in listed and target not in listed   # the trash is not listed
    # a second picture of the same name does not overwrite the first in the trash
    save_png(data.files["old"], "again")
    second = data.browser.move_to_trash(data.files["old"])
    assert second.name == "00000-1-1.png" and target.exists()


def test_paths_outside_the_outputs_are_refused_and_left_alone(data, tmp_path):
    outside = save_png(tmp_path / "elsewhere.png", "secret")
    config = data.paths.config_file
    config.write_text("{}")
    link = data.out / "txt2img-images" / "link.png"
    link.symlink_to(outside)
    dir_link = data.out / "linked-folder"
    dir_link.symlink_to(tmp_path, target_is_directory=True)
    refused = [str(outside), "../elsewhere.png", "../../elsewhere.png", "../config.json", str(config),
               "txt2img-images/../../config.json", "txt2img-images/link.png", "linked-folder/elsewhere.png",
               "txt2img-images/notes.txt", f"{TRASH_DIR_NAME}/x.png", "", "a\x00b.png"]
    for path in refused:
        with pytest.raises(BrowserError) as e:
            data.browser.move_to_trash(path)
        assert e.value.field == "path", path
        with pytest.raises(BrowserError):
            data.browser.info(path)
    assert outside.exists() and config.exists() and link.is_symlink()
    # neither the link to a file outside nor the linked folder is listed
    assert all(i.path.is_relative_to(data.out.resolve()) for i in data.browser.list().images)
    assert data.browser.list().total == 4
    with pytest.raises(BrowserError) as e:
        data.browser.move_to_trash("txt2img-images/missing.png")
    assert e.value.not_found


def test_output_folders_from_settings_are_browsed_when_inside_the_data_dir(data, tmp_path):
    data.opts.outdir_txt2img_samples = "my-pictures"
    elsewhere = save_png(data.paths.data_dir / "my-pictures" / "x.png", "from a setting")
    data.opts.outdir_img2img_samples = str(tmp_path / "not-allowed")
    save_png(tmp_path / "not-allowed" / "y.png", "outside")
    roots = output_roots(data.paths, data.opts)
    assert (data.paths.data_dir / "my-pictures").resolve() in roots
    assert (tmp_path / "not-allowed").resolve() not in roots
    listed = {i.path for i in data.browser.list().images}
    assert elsewhere.resolve() in listed and len(listed) == 5
    target = data.browser.move_to_trash(elsewhere)
    assert target == (data.out / TRASH_DIR_NAME / "my-pictures" / "x.png").resolve()


def test_browser_api(data, tmp_path):
    from modules.api import browser_routes

    app = FastAPI()
    app.include_router(browser_routes.router(data.runtime))
    client = TestClient(app)
    r = client.get("/sdapi/v1/browser/images", params={"search": "blue", "page_size": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["total"], body["pages"], body["images"][0]["path"]) == (2, 2, str(data.files["new"].resolve()))
    r = client.get("/sdapi/v1/browser/images", params={"date_from": "2024-13-01"})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["query", "date_from"]
    info = client.get("/sdapi/v1/browser/info", params={"path": "txt2img-images/2024-01-05/00000-1.png"}).json()
    assert info["info"].startswith("a red circle")
    assert client.get("/sdapi/v1/browser/file", params={"path": str(data.files["mid"])}).content == \
        data.files["mid"].read_bytes()
    outside = save_png(tmp_path / "outside.png", "x")
    for path in (str(outside), "../config.json", "../../outside.png"):
        r = client.post("/sdapi/v1/browser/delete", json={"path": path})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["body", "path"], r.text
        assert client.get("/sdapi/v1/browser/file", params={"path": path}).status_code == 400
    assert outside.exists()
    r = client.post("/sdapi/v1/browser/delete", json={"path": str(data.files["mid"])})
    assert r.status_code == 200
    assert Path(r.json()["trashed_to"]).is_file() and not data.files["mid"].exists()
    assert client.post("/sdapi/v1/browser/delete", json={"path": str(data.files["mid"])}).status_code == 404
    assert client.post("/sdapi/v1/browser/delete", json={"path": "x.png", "force": True}).status_code == 422


# ---------------------------------------------------------------------------------------------------------------------
# history and queue
# ---------------------------------------------------------------------------------------------------------------------
def test_history_survives_a_restart_with_pictures_and_infotext(data):
    from modules import ui_history

    picture = data.files["new"]
    infotext = "a Blue Triangle\nSteps: 6, Seed: 3"
    first = JobQueue(data.paths.history_db)
    job = first.submit("txt2img", {"prompt": "a Blue Triangle", "seed": 3},
                       lambda state: JobOutput(infotext=infotext, files=[str(picture)]))
    job.result(10)
    release = threading.Event()
    first.submit("txt2img", {"prompt": "running when killed"}, lambda state: release.wait(10) and JobOutput())
    first._history.close()   # the process dies: no close(), the running job's row stays "running"
    release.set()

    second = JobQueue(data.paths.history_db)
    try:
        entries = second.history()
        by_id = {e.id: e for e in entries}
        done = by_id[job.id]
        assert done.status is JobStatus.DONE and done.infotext == infotext and done.files == [str(picture)]
        lost = next(e for e in entries if e.params.get("prompt") == "running when killed")
        assert lost.status is JobStatus.INTERRUPTED and lost.error == INTERRUPTED_BY_RESTART
        roots = output_roots(data.paths, data.opts)
        listing = ui_history.history_list_html(entries, roots)
        assert job.id in listing and "a Blue Triangle" in listing and "data:image/jpeg;base64," in listing
        assert "interrupted" in listing
        images = ui_history.entry_images(done, roots)
        assert len(images) == 1 and images[0][0].size == (16, 16)
        assert ui_history.entry_infotext(done) == infotext
        # a job without infotext still sends its request's fields
        assert ui_history.entry_infotext(lost).startswith("running when killed")
    finally:
        second.close()


def test_history_never_opens_files_outside_the_outputs(data, tmp_path):
    from modules import ui_history
    from modules.job_queue import HistoryEntry

    outside = save_png(tmp_path / "outside.png", "x")
    entry = HistoryEntry(id="task(x)", kind="txt2img", params={"prompt": "p"}, status=JobStatus.DONE, error=None,
                         infotext="p", files=[str(outside), str(data.files["old"])], created=1.0, started=1.0,
                         finished=2.0)
    roots = output_roots(data.paths, data.opts)
    assert [name for _, name in ui_history.entry_images(entry, roots)] == ["00000-1.png"]
    assert "1 of its 2 file(s) are no longer" in ui_history.detail_html(entry, roots)


def test_params_infotext_is_read_back_by_the_paste_machinery():
    from modules import infotext, ui_history

    text = ui_history.params_infotext({"prompt": "a cat", "negative_prompt": "dog", "steps": 7,
                                        "sampler_name": "Euler a", "scheduler": "Karras", "cfg_scale": 5.5,
                                        "seed": 42, "width": 64, "height": 96})
    params = infotext.parse_generation_parameters(text)
    assert (params["Prompt"], params["Negative prompt"], params["Steps"], params["Sampler"], params["Schedule type"],
            params["CFG scale"], params["Seed"], params["Size-1"], params["Size-2"]) == \
        ("a cat", "dog", "7", "Euler a", "Karras", "5.5", "42", "64", "96")


def test_queue_panel_shows_the_running_job_and_the_waiting_ones_with_cancel(tmp_path):
    from modules import ui_history

    q = JobQueue(tmp_path / "h.sqlite3")
    started, release = threading.Event(), threading.Event()

    def slow(state):
        started.set()
        release.wait(10)
        return JobOutput()

    try:
        running = q.submit("txt2img", {"prompt": "first <b>bold</b>"}, slow)
        started.wait(5)
        waiting = q.submit("img2img", {"prompt": "second"}, lambda s: JobOutput())
        text = ui_history.queue_html(q)
        assert "Running" in text and running.id in text and "first &lt;b&gt;bold&lt;/b&gt;" in text
        assert "In queue" in text and waiting.id in text and f"historyCancel(&quot;{waiting.id}&quot;)" in text
        q.cancel(waiting.id)
        assert waiting.id not in ui_history.queue_html(q)
        assert q.history_entry(waiting.id).status is JobStatus.CANCELLED
        release.set()
        running.result(5)
        assert "No job is running" in ui_history.queue_html(q) and "No job is waiting" in ui_history.queue_html(q)
    finally:
        release.set()
        q.close()


def test_a_job_waiting_behind_another_says_in_queue_not_preparing(tmp_path):
    """The generation tabs' progress text while a job waits (also when it is next to run)."""
    from modules import ui

    q = JobQueue(tmp_path / "h.sqlite3")
    started, release = threading.Event(), threading.Event()

    def blocking(state):
        started.set()
        release.wait(10)
        return JobOutput()

    class Runtime:
        queue = q
        opts = SimpleNamespace(live_previews_enable=False, show_progressbar=True)

        @staticmethod
        def submit(kind, p):
            return q.submit(kind, {}, lambda state: JobOutput(value=p))

    try:
        q.submit("txt2img", {}, blocking)
        started.wait(5)
        updates = ui.run_job(Runtime, "txt2img", "second")
        progress_text = next(updates)[2]
        assert "In queue" in progress_text and "preparing" not in progress_text
        assert "next to run" in progress_text
        assert "2 job(s) ahead" in ui.progress_html(None, 2)
    finally:
        release.set()
        q.close()
