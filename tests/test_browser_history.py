"""The History tab and the Image Browser in a real browser: a waiting job says "In queue" and can be cancelled from
the queue panel; after a restart the history still shows the job, and its send-to fills txt2img's prompt and seed;
the image browser lists the generated picture with its PNG info, filters, and asks before it moves a picture to the
trash. Screenshots go to ``$BROWSER_TEST_SCREENSHOTS`` when set."""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
import time
from pathlib import Path

import pytest
import requests

from tests.test_browser import (CHROMIUM, browser_page, running_app, server_log, set_slider,
                                tiny_model_data_dir, wait_text)

pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
              pytest.mark.timeout(1200)]   # two server starts; minutes each on a busy machine

PROMPT = "a blue square on a red background"
SEED = "4321"


def shot(page, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("BROWSER_TEST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_tab(page, title: str) -> None:
    page.click(f"button[role=tab]:text-is('{title}')")


@pytest.fixture(scope="module")
def data_dir(tiny_models_dir, tiny_configs_dir, tmp_path_factory):
    return tiny_model_data_dir(tmp_path_factory, tiny_models_dir, tiny_configs_dir, "history-browser-data")


@contextmanager
def model_loaded(log: Path, timeout: float = 600):
    """Wait until the server's log says the model is loaded (minutes on a busy machine; the page waits less)."""
    deadline = time.time() + timeout
    while " ready (" not in log.read_text(errors="replace"):
        if time.time() > deadline:
            pytest.fail("the model did not load:\n" + log.read_text(errors="replace")[-3000:])
        time.sleep(1)
    yield


def test_a_waiting_job_says_in_queue_and_is_cancelled_from_the_history_tab(data_dir, tmp_path_factory, tmp_path):
    """A job generated on txt2img (the later tests find it); a second one waits behind a long API job."""
    log = server_log(tmp_path_factory)
    with running_app(data_dir, log, "--api") as url, model_loaded(log), browser_page(url) as page:
        page.fill("#txt2img_prompt textarea", PROMPT)
        page.fill("#txt2img_seed input", SEED)
        set_slider(page, "txt2img_steps", 1)
        page.click("#txt2img_generate")
        wait_text(page, "#txt2img_html_info", f"Seed: {SEED}")

        long_job = threading.Thread(target=requests.post, args=(f"{url}/sdapi/v1/txt2img",),
                                    kwargs={"json": {"prompt": "a long job", "steps": 150, "n_iter": 40,
                                                     "save_images": True}, "timeout": 300}, daemon=True)
        long_job.start()
        for _ in range(600):
            if requests.get(f"{url}/sdapi/v1/queue", timeout=5).json()["running"]:
                break
            threading.Event().wait(0.1)
        page.fill("#txt2img_prompt textarea", "a waiting job")
        page.click("#txt2img_generate")
        wait_text(page, "#txt2img_progress", "In queue", timeout=60000)
        assert "preparing" not in page.inner_text("#txt2img_progress")

        open_tab(page, "History")
        wait_text(page, "#history_queue", "Running", timeout=20000)
        wait_text(page, "#history_queue", "a waiting job", timeout=20000)
        assert "a long job" in page.inner_text("#history_queue")
        shot(page, "history-queue", tmp_path)
        page.click("#history_queue tr:has-text('a waiting job') button:has-text('Cancel')")
        page.wait_for_function("!document.querySelector('#history_queue').innerText.includes('a waiting job')",
                               timeout=20000)
        requests.post(f"{url}/sdapi/v1/interrupt", timeout=10)
        wait_text(page, "#history_queue", "No job is running", timeout=60000)
        wait_text(page, "#history_list", "cancelled", timeout=20000)
        long_job.join(60)

@pytest.fixture(scope="module")
def restarted(data_dir, tmp_path_factory):
    """The page of the app started again on the same data dir."""
    log = server_log(tmp_path_factory)
    with running_app(data_dir, log) as url, model_loaded(log), browser_page(url) as page:
        yield page


def test_the_history_shows_the_job_after_a_restart_and_sends_it_to_txt2img(restarted, tmp_path):
    page = restarted
    open_tab(page, "History")
    wait_text(page, "#history_list", PROMPT, timeout=20000)
    row = page.locator(f"#history_list tr.history-row:has-text('{PROMPT}')")
    assert row.locator("img.history-thumb").count() == 1          # its picture
    row.click()
    wait_text(page, "#history_detail_info", f"Seed: {SEED}", timeout=20000)
    page.wait_for_selector("#history_gallery img", timeout=20000)
    shot(page, "history-after-restart", tmp_path)
    page.evaluate("() => { const t = document.querySelector('#txt2img_prompt textarea'); t.value = 'something else';"
                  " updateInput(t); }")   # the send must replace what is there
    page.click("#history_send_txt2img")
    page.wait_for_function(
        "([p]) => document.querySelector('#txt2img_prompt textarea').value === p", arg=[PROMPT], timeout=20000)
    assert page.input_value("#txt2img_seed input") == SEED
    page.wait_for_selector("#tab_txt2img", state="visible", timeout=20000)   # and the txt2img tab is shown


def test_the_image_browser_lists_filters_and_asks_before_moving_to_the_trash(restarted, data_dir, tmp_path):
    page = restarted
    open_tab(page, "Image Browser")
    page.wait_for_selector("#image_browser_gallery img", timeout=20000)
    wait_text(page, "#image_browser_page_label", "of ")
    page.fill("#image_browser_search textarea, #image_browser_search input", "BLUE SQUARE")
    page.click("#image_browser_search_button")
    wait_text(page, "#image_browser_page_label", "of 1")
    page.locator("#image_browser_gallery img").first.click()
    wait_text(page, "#image_browser_info", PROMPT, timeout=20000)
    assert f"Seed: {SEED}" in page.inner_text("#image_browser_info")
    page.wait_for_selector("#image_browser_image img", timeout=20000)
    shot(page, "image-browser", tmp_path)

    page.fill("#image_browser_search textarea, #image_browser_search input", "no picture has these words")
    page.click("#image_browser_search_button")
    wait_text(page, "#image_browser_page_label", "No pictures match")
    assert page.locator("#image_browser_gallery img").count() == 0
    page.fill("#image_browser_search textarea, #image_browser_search input", "")
    page.fill("#image_browser_date_from input, #image_browser_date_from textarea", "31.12.2024")
    page.click("#image_browser_search_button")
    wait_text(page, "#image_browser_error", "YYYY-MM-DD")
    page.fill("#image_browser_date_from input, #image_browser_date_from textarea", "")
    page.fill("#image_browser_search textarea, #image_browser_search input", PROMPT)
    page.click("#image_browser_search_button")
    wait_text(page, "#image_browser_page_label", "of 1")
    page.locator("#image_browser_gallery img").first.click()
    wait_text(page, "#image_browser_info", PROMPT, timeout=20000)

    pictures = sorted((data_dir / "outputs" / "txt2img-images").rglob("*.png"))
    ours = [p for p in pictures if PROMPT in p.read_bytes().decode("latin-1")]
    assert len(ours) == 1
    page.click("#image_browser_delete")
    page.wait_for_selector("#image_browser_confirm", state="visible", timeout=20000)
    wait_text(page, "#image_browser_confirm", "trash")
    shot(page, "image-browser-confirm", tmp_path)
    assert ours[0].exists()                          # nothing happens before the confirmation
    page.click("#image_browser_confirm_delete")
    wait_text(page, "#image_browser_status", "Moved to", timeout=20000)
    assert not ours[0].exists()
    trashed = list((data_dir / "outputs" / "trash").rglob(ours[0].name))
    assert len(trashed) == 1 and trashed[0].read_bytes()[:4] == b"\x89PNG"
    wait_text(page, "#image_browser_page_label", "No pictures match")
