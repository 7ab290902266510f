"""Habits an A1111 user brings, in a real browser: saved settings survive a reload, Ctrl+Enter generates and Esc
interrupts from the prompt box, the gallery shows whole images, errors are shown in words next to Generate."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_browser import (CHROMIUM, browser_page, running_app, server_log, set_slider,
                                tiny_model_data_dir, wait_text)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")

# How much of the natural image the rendered <img> shows (object-fit and clipping ancestors included), and whether
# its aspect ratio is kept: {shown_w, shown_h: fraction of the natural width/height visible, aspect: drawn w/h}.
MEASURE_IMG = """(selector) => {
    const img = document.querySelector(selector);
    const box = img.getBoundingClientRect();
    const nw = img.naturalWidth, nh = img.naturalHeight;
    const fit = getComputedStyle(img).objectFit;
    let dw = box.width, dh = box.height;                    // the drawn picture's size inside the img box
    if (fit === "contain" || (fit === "scale-down" && (nw > box.width || nh > box.height))) {
        const s = Math.min(box.width / nw, box.height / nh); dw = nw * s; dh = nh * s;
    } else if (fit === "cover") {
        const s = Math.max(box.width / nw, box.height / nh); dw = nw * s; dh = nh * s;
    } else if (fit === "none" || fit === "scale-down") {
        dw = nw; dh = nh;
    }
    const cx = box.left + box.width / 2, cy = box.top + box.height / 2;
    let left = cx - dw / 2, right = cx + dw / 2, top = cy - dh / 2, bottom = cy + dh / 2;
    let seenLeft = Math.max(left, box.left), seenRight = Math.min(right, box.right);
    let seenTop = Math.max(top, box.top), seenBottom = Math.min(bottom, box.bottom);
    for (let el = img.parentElement; el && el !== document.body; el = el.parentElement) {
        const style = getComputedStyle(el);
        if (style.overflow === "visible" && style.overflowX === "visible" && style.overflowY === "visible") continue;
        const r = el.getBoundingClientRect();
        seenLeft = Math.max(seenLeft, r.left); seenRight = Math.min(seenRight, r.right);
        seenTop = Math.max(seenTop, r.top); seenBottom = Math.min(seenBottom, r.bottom);
    }
    return {shown_w: Math.max(0, seenRight - seenLeft) / dw, shown_h: Math.max(0, seenBottom - seenTop) / dh,
            aspect: dw / dh, natural_aspect: nw / nh, drawn_w: dw, drawn_h: dh, fit: fit};
}"""


@pytest.fixture(scope="module")
def server(tiny_models_dir, tiny_configs_dir, tmp_path_factory):
    data_dir = tiny_model_data_dir(tmp_path_factory, tiny_models_dir, tiny_configs_dir, "habits-browser-data")
    with running_app(data_dir, server_log(tmp_path_factory)) as url:
        yield SimpleNamespace(url=url, data_dir=data_dir)


@pytest.fixture(scope="module")
def page(server):
    with browser_page(server.url) as page:
        yield page


def test_ctrl_enter_generates_and_the_whole_image_is_shown(page):
    page.fill("#txt2img_prompt textarea", "a red circle")
    page.fill("#txt2img_seed input", "4321")
    set_slider(page, "txt2img_steps", 3)
    page.focus("#txt2img_prompt textarea")
    page.keyboard.press("Control+Enter")
    wait_text(page, "#txt2img_html_info", "Seed: 4321")
    assert page.input_value("#txt2img_prompt textarea") == "a red circle"   # no newline typed into the prompt
    for width in (64, 192):          # a square image and a wide one (as an X/Y/Z grid is)
        if width != 64:
            set_slider(page, "txt2img_width", width)
            page.fill("#txt2img_seed input", "4322")
            page.click("#txt2img_generate")
            wait_text(page, "#txt2img_html_info", "Seed: 4322")
        page.wait_for_function("(w) => document.querySelector('#txt2img_gallery img')?.naturalWidth === w",
                               arg=width, timeout=30000)
        m = page.evaluate(MEASURE_IMG, "#txt2img_gallery img")
        assert m["shown_w"] > 0.99 and m["shown_h"] > 0.99, m           # nothing cut off
        assert abs(m["aspect"] / m["natural_aspect"] - 1) < 0.02, m     # not stretched
        assert m["drawn_h"] >= 64, m                                     # not a thumbnail
    set_slider(page, "txt2img_width", 64)


def test_escape_in_the_prompt_interrupts(page, server):
    images = sorted((server.data_dir / "outputs").rglob("*.png"))
    set_slider(page, "txt2img_steps", 6)
    set_slider(page, "txt2img_batch_count", 30)
    page.focus("#txt2img_prompt textarea")
    page.keyboard.press("Control+Enter")
    wait_text(page, "#txt2img_progress", "step", 60000)
    page.focus("#txt2img_prompt textarea")
    page.keyboard.press("Escape")       # "Don't interrupt in the middle" (default): stops after the current image
    wait_text(page, "#txt2img_progress", "interrupted", 120000)
    assert len(sorted((server.data_dir / "outputs").rglob("*.png"))) - len(images) < 5     # not 30 images
    set_slider(page, "txt2img_batch_count", 1)
    set_slider(page, "txt2img_steps", 3)


def test_a_generation_error_is_shown_next_to_generate_and_the_old_image_is_marked(page):
    page.fill("#txt2img_seed input", "55")
    page.click("#txt2img_generate")
    wait_text(page, "#txt2img_html_info", "Seed: 55", 120000)
    page.click("#txt2img_guidance_accordion button, #txt2img_guidance_accordion .label-wrap")
    set_slider(page, "txt2img_dynamic_thresholding", 0.2)       # 0 or 0.5-1: refused
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_error .error-box", timeout=60000)
    assert "dynamic_thresholding" in page.inner_text("#txt2img_error")
    error_box = page.locator("#txt2img_error").bounding_box()
    generate_box = page.locator("#txt2img_generate").bounding_box()
    assert abs(error_box["y"] - (generate_box["y"] + generate_box["height"])) < 200     # right below the button
    assert 0 <= error_box["y"] < page.viewport_size["height"]                           # in view
    assert "previous" in page.inner_text("#txt2img_gallery").lower()
    set_slider(page, "txt2img_dynamic_thresholding", 0)
    page.fill("#txt2img_seed input", "56")
    page.click("#txt2img_generate")
    wait_text(page, "#txt2img_html_info", "Seed: 56", 120000)
    assert page.inner_text("#txt2img_error").strip() == ""
    assert "previous" not in page.inner_text("#txt2img_gallery").lower()


def test_a_non_image_upload_says_so_in_words(page, tmp_path):
    page.click("button[role=tab]:has-text('img2img')")
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    page.set_input_files("#img2img_image input[type=file]", str(bad))
    page.fill("#img2img_prompt textarea", "a blue square")
    page.click("#img2img_generate")
    wait_text(page, "body", "is not an image that can be read", 30000)
    text = page.inner_text("body")
    assert "Image for img2img" in text and "preprocess" not in text and "component at index" not in text
    page.click("button[role=tab]:has-text('txt2img')")


def test_saved_settings_survive_a_reload_and_the_next_apply(page, server):
    page.click("button[role=tab]:has-text('Settings')")
    page.fill("#setting_jpeg_quality input", "55")
    page.click("#setting_enable_pnginfo input")                 # on -> off
    page.click("#settings_submit")
    wait_text(page, "#settings_result", "jpeg_quality")
    page.reload()
    page.wait_for_function("window.webuiPage && webuiPage.uiLoaded", timeout=60000)
    page.click("button[role=tab]:has-text('Settings')")
    page.wait_for_function("document.querySelector('#setting_jpeg_quality input').value === '55'", timeout=30000)
    assert not page.is_checked("#setting_enable_pnginfo input")
    page.fill("#setting_CLIP_stop_at_last_layers input", "2")
    page.click("#settings_submit")
    wait_text(page, "#settings_result", "CLIP_stop_at_last_layers")
    assert "1 setting(s) changed" in page.inner_text("#settings_result")
    saved = json.loads((server.data_dir / "config.json").read_text())
    assert (saved["jpeg_quality"], saved["enable_pnginfo"], saved["CLIP_stop_at_last_layers"]) == (55, False, 2)
