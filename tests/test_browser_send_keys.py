"""A1111 habits in a real browser, part two: send-to fills every field (PNG Info, the ↙ button, the selected gallery
image, Extras), Ctrl+Up/Down weights, Generate forever, the hires-fix fields, the note on what the default model
draws, and switching to a checkpoint not yet hashed. One app on a data dir holding the shipped default model
(loaded) and a tiny SD1 checkpoint with no hash yet."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_browser import (CHROMIUM, REPO, browser_page, pick_checkpoint, running_app, server_log, set_slider,
                                tiny_model_data_dir, wait_text)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
SHOTS = REPO / "outputs" / "test-screenshots"
DEFAULT_MODEL = REPO / "models" / "Stable-diffusion" / "default-tiny.safetensors"


@pytest.fixture(scope="module")
def server(tiny_models_dir, tiny_configs_dir, tmp_path_factory):
    if not DEFAULT_MODEL.exists():
        pytest.skip("the shipped default model is not in models/Stable-diffusion")
    data_dir = tiny_model_data_dir(tmp_path_factory, tiny_models_dir, tiny_configs_dir, "send-keys-data")
    ckpt_dir = data_dir / "models" / "Stable-diffusion"
    (ckpt_dir / "sd1.safetensors").rename(ckpt_dir / "sd1-unhashed.safetensors")
    for f in DEFAULT_MODEL.parent.glob("default-tiny.safetensors*"):
        shutil.copy(f, ckpt_dir)
    with running_app(data_dir, server_log(tmp_path_factory)) as url:
        yield SimpleNamespace(url=url, data_dir=data_dir)


@pytest.fixture(scope="module")
def page(server):
    with browser_page(server.url) as page:
        yield page


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def value(page, elem_id: str) -> str:
    """The value a widget shows: a slider's number box, a textbox, a number or a dropdown's input."""
    return page.evaluate("""(id) => {
        const el = document.getElementById(id);
        if (!el) { throw new Error(`no element #${id}`); }
        const input = el.querySelector('input[type=number]') || el.querySelector('textarea') || el.querySelector('input');
        return input.type === 'checkbox' ? String(input.checked) : input.value;
    }""", elem_id)


def open_accordion(page, elem_id: str) -> None:
    if not page.locator(f"#{elem_id} .label-wrap.open").count():
        page.click(f"#{elem_id} .label-wrap")


def right_click(page, selector: str) -> None:
    """A person's right-click, until the context menu shows (Playwright's click waits for the page to settle, which
    a running job never does; a scroll still under way moves the button away from the pointer)."""
    for _ in range(5):
        page.locator(selector).scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        box = page.locator(selector).bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, button="right")
        try:
            page.wait_for_selector("#context-menu", timeout=3000)
            return
        except Exception:  # noqa: BLE001 - try again
            continue
    raise AssertionError("no context menu after a right-click on " + selector)


def images(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "outputs" / "txt2img-images").rglob("*.png"))


FULL_INFOTEXT = ("a red circle on a blue background\nNegative prompt: a green square\n"
                 "Steps: 3, Sampler: Euler, Schedule type: Karras, CFG scale: 6.5, Seed: 4242, Size: 64x64, "
                 "Variation seed: 77, Variation seed strength: 0.3, Seed resize from: 128x96, "
                 "Denoising strength: 0.45, Hires upscale: 1.5, Hires resize: 96x128, Hires steps: 2, "
                 "Hires upscaler: Lanczos, Hires sampler: DPM++ 2M, Hires schedule type: Exponential, "
                 'Hires prompt: "a red circle, large", Hires negative prompt: a yellow triangle')
EXPECTED_TXT2IMG = {
    "txt2img_prompt": "a red circle on a blue background", "txt2img_neg_prompt": "a green square",
    "txt2img_steps": "3", "txt2img_sampling": "Euler", "txt2img_scheduler": "Karras", "txt2img_cfg_scale": "6.5",
    "txt2img_seed": "4242",
    "txt2img_width": "64", "txt2img_height": "64", "txt2img_subseed": "77", "txt2img_subseed_strength": "0.3",
    "txt2img_seed_resize_from_w": "128", "txt2img_seed_resize_from_h": "96",
    "txt2img_enable_hr": "true", "txt2img_hr_upscaler": "Lanczos", "txt2img_hr_scale": "1.5",
    "txt2img_hires_steps": "2", "txt2img_denoising_strength": "0.45", "txt2img_hr_resize_x": "96",
    "txt2img_hr_resize_y": "128", "hr_sampler": "DPM++ 2M", "hr_scheduler": "Exponential",
    "hires_prompt": "a red circle, large", "hires_neg_prompt": "a yellow triangle",
}


def test_model_note_and_example_prompts_for_the_default_model(page):
    from modules import world

    wait_text(page, "#txt2img_model_note", "circle")
    note = page.inner_text("#txt2img_model_note")
    for word in (*world.SHAPES, *world.COLORS, *world.SIZES, *world.POSITION_PHRASES.values()):
        assert word in note, word
    placeholder = page.get_attribute("#txt2img_prompt textarea", "placeholder")
    assert "e.g. a " in placeholder and "Ctrl+Enter" in placeholder
    assert world.parse_prompt_attributes(placeholder.split("e.g. ")[1]).get("shape") in world.SHAPES
    assert "circle" in page.inner_text("#img2img_model_note")
    shot(page, "model-note")


def test_png_info_sends_every_field_to_txt2img_and_hires_fields_take_effect(page, server, tmp_path):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", FULL_INFOTEXT)
    path = tmp_path / "full.png"
    Image.new("RGB", (64, 64), (200, 20, 20)).save(path, pnginfo=info)
    page.click("button[role=tab]:has-text('PNG Info')")
    page.set_input_files("#pnginfo_image input[type=file]", str(path))
    wait_text(page, "#pnginfo_html", "Seed: 4242")
    page.click("#pnginfo_send_txt2img")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value === '4242'", timeout=30000)
    page.wait_for_timeout(500)
    open_accordion(page, "txt2img_hires_accordion")
    open_accordion(page, "txt2img_hires_extra")
    open_accordion(page, "txt2img_seed_extras")
    page.wait_for_selector("#txt2img_subseed input", timeout=10000)
    shot(page, "pasted-hires")
    got = {k: value(page, k) for k in EXPECTED_TXT2IMG}
    assert got == EXPECTED_TXT2IMG
    # the hires fields take effect: resize-to gives the picture's size, sampler and prompt are in its infotext
    page.fill("#txt2img_subseed_strength input[type=number]", "0")
    page.locator("#txt2img_subseed_strength input[type=number]").press("Enter")
    page.click("#txt2img_generate")
    wait_text(page, "#txt2img_html_info", "Hires resize: 96x128", 180000)
    text = page.inner_text("#txt2img_html_info")
    for part in ("Hires sampler: DPM++ 2M", "Hires schedule type: Exponential", 'Hires prompt: "a red circle, large"',
                 "Hires negative prompt: a yellow triangle", "Hires steps: 2", "Seed resize from: 128x96"):
        assert part in text, part
    page.wait_for_function("document.querySelector('#txt2img_gallery img')?.naturalWidth === 96", timeout=30000)
    assert page.evaluate("document.querySelector('#txt2img_gallery img').naturalHeight") == 128


def test_read_parameters_button_fills_from_the_prompt_box_or_the_last_generation(page):
    page.click("button[role=tab]:has-text('txt2img')")
    page.fill("#txt2img_prompt textarea", FULL_INFOTEXT.replace("Seed: 4242", "Seed: 999").replace("Steps: 3", "Steps: 5"))
    page.click("#txt2img_paste")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value === '999'", timeout=30000)
    assert value(page, "txt2img_prompt") == "a red circle on a blue background"
    assert value(page, "txt2img_steps") == "5" and value(page, "hires_prompt") == "a red circle, large"
    # empty prompt: the last generation's parameters (the previous test's job)
    page.fill("#txt2img_prompt textarea", "")
    page.click("#txt2img_paste")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value === '4242'", timeout=30000)
    assert value(page, "txt2img_prompt") == "a red circle on a blue background"
    assert value(page, "txt2img_steps") == "3"
    assert value(page, "txt2img_subseed_strength") == "0"   # it was generated with strength 0
    # a plain prompt is not an infotext: nothing changes
    page.fill("#txt2img_prompt textarea", "a pink triangle")
    page.click("#txt2img_paste")
    page.wait_for_timeout(700)
    assert value(page, "txt2img_prompt") == "a pink triangle" and value(page, "txt2img_seed") == "4242"
    # a paste without hires turns Hires. fix off again
    page.fill("#txt2img_prompt textarea", "a white square\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64")
    page.click("#txt2img_paste")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value === '5'", timeout=30000)
    assert value(page, "txt2img_enable_hr") == "false" and value(page, "txt2img_subseed") == "-1"
    assert value(page, "txt2img_seed_resize_from_w") == "0" and value(page, "hires_prompt") == ""


def test_send_to_img2img_sends_the_selected_picture_and_its_parameters(page, server):
    page.click("button[role=tab]:has-text('txt2img')")
    page.fill("#txt2img_prompt textarea", "a blue square on a white background")
    page.fill("#txt2img_neg_prompt textarea", "a red circle")
    page.fill("#txt2img_seed input", "300")
    set_slider(page, "txt2img_steps", 3)
    set_slider(page, "txt2img_batch_size", 2)
    page.click("#txt2img_generate")
    wait_text(page, "#txt2img_html_info", "Seed: 300", 120000)
    thumbs = page.locator("#txt2img_gallery .thumbnail-item")
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery .thumbnail-item').length === 3",
                           timeout=30000)   # the grid, then the two pictures
    thumbs.nth(2).click()
    page.wait_for_timeout(500)
    shot(page, "gallery-selected")
    page.click("#txt2img_send_to_img2img")
    page.wait_for_function("document.querySelector('#img2img_seed input').value === '301'", timeout=30000)
    page.wait_for_selector("#img2img_image img", timeout=30000)
    assert page.evaluate("document.querySelector('#img2img_image img').naturalWidth") == 64   # not the 2-wide grid
    assert value(page, "img2img_prompt") == "a blue square on a white background"
    assert value(page, "img2img_neg_prompt") == "a red circle"
    assert value(page, "img2img_steps") == "3" and value(page, "img2img_width") == "64"
    shot(page, "sent-to-img2img")
    page.click("button[role=tab]:has-text('txt2img')")
    set_slider(page, "txt2img_batch_size", 1)


def test_send_to_extras_from_txt2img_and_png_info(page, tmp_path):
    from PIL import Image

    page.click("button[role=tab]:has-text('txt2img')")
    page.click("#txt2img_send_to_extras")
    page.wait_for_selector("#tab_extras #extras_image img", timeout=30000)
    assert page.evaluate("document.querySelector('#extras_image img').naturalWidth") > 0
    path = tmp_path / "green.png"
    Image.new("RGB", (40, 24), (0, 200, 0)).save(path)
    page.click("button[role=tab]:has-text('PNG Info')")
    page.set_input_files("#pnginfo_image input[type=file]", str(path))
    page.wait_for_selector("#pnginfo_image img", timeout=30000)
    page.click("#pnginfo_send_extras")
    page.wait_for_function("document.querySelector('#extras_image img')?.naturalWidth === 40", timeout=30000)
    assert page.locator("#tab_extras").is_visible()


def test_ctrl_up_down_change_prompt_weights(page):
    page.click("button[role=tab]:has-text('txt2img')")
    box = "#txt2img_prompt textarea"
    page.fill(box, "a red circle <lora:x:0.9>")
    page.evaluate("document.querySelector('#txt2img_prompt textarea').setSelectionRange(4, 4)")   # inside "red"
    page.focus(box)
    page.keyboard.press("Control+ArrowUp")
    assert page.input_value(box) == "a (red:1.1) circle <lora:x:0.9>"
    page.keyboard.press("Control+ArrowUp")
    assert page.input_value(box) == "a (red:1.2) circle <lora:x:0.9>"
    page.keyboard.press("Control+ArrowDown")
    page.keyboard.press("Control+ArrowDown")
    assert page.input_value(box) == "a red circle <lora:x:0.9>"       # weight 1: no parentheses
    page.keyboard.press("Control+ArrowDown")
    assert page.input_value(box) == "a (red:0.9) circle <lora:x:0.9>"
    page.evaluate("document.querySelector('#txt2img_prompt textarea').setSelectionRange(21, 21)")   # inside the tag
    page.keyboard.press("Control+ArrowUp")
    assert page.input_value(box) == "a (red:0.9) circle <lora:x:0.95>"
    page.evaluate("document.querySelector('#txt2img_prompt textarea').setSelectionRange(12, 18)")   # "circle"
    page.keyboard.press("Control+ArrowUp")
    assert page.input_value(box) == "a (red:0.9) (circle:1.1) <lora:x:0.95>"
    # the server sees the edited prompt
    page.fill(box, "a red circle")
    page.evaluate("document.querySelector('#txt2img_prompt textarea').setSelectionRange(2, 5)")
    page.keyboard.press("Control+ArrowUp")
    page.fill("#txt2img_seed input", "61")
    page.click("#txt2img_generate")
    wait_text(page, "#txt2img_html_info", "Seed: 61", 120000)
    assert "a (red:1.1) circle" in page.inner_text("#txt2img_html_info")


def test_generate_forever_repeats_until_cancelled(page, server):
    page.click("button[role=tab]:has-text('txt2img')")
    page.fill("#txt2img_prompt textarea", "a cyan triangle")
    page.fill("#txt2img_seed input", "-1")
    page.fill("#txt2img_neg_prompt textarea", "")
    set_slider(page, "txt2img_steps", 2)
    open_accordion(page, "txt2img_hires_accordion")
    if page.is_checked("#txt2img_enable_hr input"):
        page.click("#txt2img_enable_hr input")
    before = len(images(server.data_dir))
    right_click(page, "#txt2img_generate")
    page.click("#context-menu li:has-text('Generate forever')")
    deadline = time.time() + 120
    while len(images(server.data_dir)) < before + 3 and time.time() < deadline:
        time.sleep(0.3)
    assert len(images(server.data_dir)) >= before + 3, "Generate forever made fewer than 3 jobs"
    right_click(page, "#txt2img_generate")
    shot(page, "forever-menu")
    page.click("#context-menu li:has-text('Cancel generate forever')")
    page.wait_for_function("document.querySelector('#txt2img_progress [data-job-end]')", timeout=60000)
    time.sleep(1)
    settled = len(images(server.data_dir))
    time.sleep(3)
    assert len(images(server.data_dir)) == settled      # no job after the cancel


def test_a_non_image_upload_in_png_info_says_so_in_words(page, tmp_path):
    page.click("button[role=tab]:has-text('PNG Info')")
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    page.set_input_files("#pnginfo_image input[type=file]", str(bad))
    wait_text(page, "body", "is not an image that can be read", 30000)
    assert "component at index" not in page.inner_text("body")


def test_switching_to_a_checkpoint_not_yet_hashed_shows_no_error(page, server):
    page.click("button[role=tab]:has-text('txt2img')")
    assert not (server.data_dir / "models" / "Stable-diffusion" / "sd1-unhashed.safetensors.sha256").exists()
    pick_checkpoint(page, "sd1-unhashed.safetensors")
    wait_text(page, "#sd_checkpoint_status", "Loaded sd1-unhashed")
    page.wait_for_timeout(1500)
    shot(page, "checkpoint-unhashed")
    value_now = page.input_value("#setting_sd_model_checkpoint input")
    assert value_now.startswith("sd1-unhashed.safetensors [") and value_now.endswith("]"), value_now
    toasts = " ".join(page.locator(".toast-body").all_inner_texts())
    assert "sd1-unhashed" not in toasts and "choices" not in toasts, toasts
    assert "Error" not in page.inner_text("#sd_checkpoint_status")
    assert page.locator("#quicksettings .error").count() == 0
    # not the default model: no note, no example prompts
    page.wait_for_function("document.querySelector('#txt2img_model_note').innerText.trim() === ''", timeout=30000)
    assert "e.g." not in page.get_attribute("#txt2img_prompt textarea", "placeholder")
    saved = json.loads((server.data_dir / "config.json").read_text())
    assert saved["sd_model_checkpoint"] == value_now
