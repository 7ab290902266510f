"""End to end in a real browser: Debian's Chromium driven by Playwright against `python app.py`."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(data_dir: Path, log: Path, *args: str):
    """``python app.py --data-dir <data_dir> <args>`` on a free port until the block ends; yields its URL."""
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--data-dir", str(data_dir), "--port", str(port), *args],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240   # a busy machine needs minutes to import torch and build the page
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail("server exited:\n" + log.read_text())
        try:
            if requests.get(url, timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("server did not answer:\n" + log.read_text())
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        print("--- server log ---\n" + log.read_text()[-3000:])


def tiny_model_data_dir(tmp_path_factory, tiny_models_dir: Path, tiny_configs_dir: Path, name: str) -> Path:
    """A fresh data dir holding the tiny SD1 checkpoint (its architecture config beside it in configs/)."""
    data_dir = tmp_path_factory.mktemp(name)
    ckpt_dir = data_dir / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    shutil.copy(tiny_models_dir / "models" / "Stable-diffusion" / "sd1.safetensors", ckpt_dir)
    shutil.copytree(tiny_configs_dir, data_dir / "configs")
    return data_dir


def server_log(tmp_path_factory) -> Path:
    return Path(os.environ.get("BROWSER_TEST_SERVER_LOG") or tmp_path_factory.mktemp("server") / "server.log")


@contextmanager
def browser_page(url: str):
    """Chromium showing ``url`` once the page and its extension API are loaded (every tab built, opts read) and the
    model too (the page then switches to its native size, 64 px)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--no-first-run", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#txt2img_prompt textarea", timeout=120000)   # minutes on a busy machine
        page.wait_for_function("window.webuiPage && webuiPage.uiLoaded", timeout=120000)
        page.wait_for_function("document.querySelector('#txt2img_width input[type=number]').value === '64'",
                               timeout=180000)
        try:
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def server(tiny_models_dir, tiny_configs_dir, tmp_path_factory):
    """The app on a data dir holding the tiny SD1 checkpoint, a copy of it and a broken one."""
    data_dir = tiny_model_data_dir(tmp_path_factory, tiny_models_dir, tiny_configs_dir, "browser-data")
    ckpt_dir = data_dir / "models" / "Stable-diffusion"
    shutil.copy(ckpt_dir / "sd1.safetensors", ckpt_dir / "sd1-copy.safetensors")
    (ckpt_dir / "broken.safetensors").write_bytes((ckpt_dir / "sd1.safetensors").read_bytes()[:5000])
    with running_app(data_dir, server_log(tmp_path_factory)) as url:
        yield SimpleNamespace(url=url, data_dir=data_dir)


@pytest.fixture(scope="module")
def page(server):
    with browser_page(server.url) as page:
        yield page


def wait_text(page, selector: str, text: str, timeout: int = 60000) -> None:
    """Wait until the element ``selector`` shows ``text``."""
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)",
                           arg=[selector, text], timeout=timeout)


def set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_generate_shows_an_image_with_infotext(page):
    page.fill("#txt2img_prompt textarea", "a red circle on a blue background")
    set_slider(page, "txt2img_steps", 4)
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_gallery img", timeout=60000)
    page.wait_for_function("document.querySelector('#txt2img_html_info').innerText.includes('Steps: 4')",
                           timeout=30000)
    info = page.inner_text("#txt2img_html_info")
    assert "a red circle on a blue background" in info
    assert "Seed:" in info


def test_bad_input_shows_an_error_and_the_page_keeps_working(page):
    page.click("button[role=tab]:has-text('img2img')")
    page.click("#img2img_generate")   # no image uploaded
    page.wait_for_selector("#img2img_error .error-box", timeout=30000)   # beside the Generate button
    assert "init_images" in page.inner_text("#img2img_error")
    page.click("button[role=tab]:has-text('txt2img')")
    page.fill("#txt2img_prompt textarea", "a green triangle")
    page.fill("#txt2img_seed input", "12")
    set_slider(page, "txt2img_steps", 2)
    page.click("#txt2img_generate")
    page.wait_for_function("document.querySelector('#txt2img_html_info').innerText.includes('Seed: 12')",
                           timeout=60000)


def test_interrupt_stops_a_long_job(page):
    set_slider(page, "txt2img_steps", 150)
    set_slider(page, "txt2img_batch_count", 50)
    page.click("#txt2img_generate")
    page.wait_for_function("document.querySelector('#txt2img_progress').innerText.includes('step')", timeout=30000)
    started = time.time()
    # "Don't Interrupt in the middle" (on by default, as A1111): the first press stops after the current image ...
    page.click("#txt2img_interrupt")
    page.wait_for_function("document.querySelector('#txt2img_progress').innerText.includes('stopping after this')",
                           timeout=10000)
    page.click("#txt2img_interrupt")   # ... and a second press stops at once
    page.wait_for_function("document.querySelector('#txt2img_progress').innerText.includes('interrupted')",
                           timeout=30000)
    assert time.time() - started < 15   # 50 batches x 150 steps would take far longer
    set_slider(page, "txt2img_batch_count", 1)


def test_png_info_reads_a_generated_image_and_sends_it_to_txt2img(page, tmp_path):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a blue square\nNegative prompt: blurry\nSteps: 7, Sampler: Euler a, "
                                "Schedule type: Automatic, CFG scale: 5, Seed: 4242, Size: 64x64, Model hash: 0123456789")
    path = tmp_path / "with-info.png"
    Image.new("RGB", (64, 64), (10, 20, 200)).save(path, pnginfo=info)
    page.click("button[role=tab]:has-text('PNG Info')")
    page.set_input_files("#pnginfo_image input[type=file]", str(path))
    page.wait_for_function("document.querySelector('#pnginfo_html').innerText.includes('Seed: 4242')", timeout=30000)
    page.click("#pnginfo_send_txt2img")
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea').value === 'a blue square'",
                           timeout=30000)
    assert page.input_value("#txt2img_neg_prompt textarea") == "blurry"
    assert page.input_value("#txt2img_seed input") == "4242"
    assert page.input_value("#txt2img_steps input[type=number]") == "7"


def saved_images(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "outputs" / "txt2img-images").rglob("*.png"))


def test_a_second_generate_while_one_runs_is_queued_not_lost(page, server):
    page.click("button[role=tab]:has-text('txt2img')")
    before = len(saved_images(server.data_dir))
    page.fill("#txt2img_seed input", "776")
    set_slider(page, "txt2img_steps", 20)
    page.click("#txt2img_generate")
    page.wait_for_function("document.querySelector('#txt2img_progress').innerText.includes('step')", timeout=30000)
    page.fill("#txt2img_seed input", "777")
    set_slider(page, "txt2img_steps", 3)
    page.click("#txt2img_generate")
    page.wait_for_function("document.querySelector('#txt2img_html_info').innerText.includes('Seed: 777')",
                           timeout=180000)
    names = [p.name for p in saved_images(server.data_dir)]
    assert len(names) == before + 2
    assert any(n.endswith("-776.png") for n in names) and any(n.endswith("-777.png") for n in names)


def pick_checkpoint(page, name: str) -> None:
    page.click("#setting_sd_model_checkpoint input")
    page.click(f"ul[role=listbox] li:has-text('{name}')")


def test_switching_checkpoints_and_a_broken_one_keeps_the_previous(page):
    page.click("button[role=tab]:has-text('txt2img')")
    pick_checkpoint(page, "sd1-copy.safetensors")
    page.wait_for_function("document.querySelector('#sd_checkpoint_status').innerText.includes('Loaded sd1-copy')",
                           timeout=60000)
    page.wait_for_function("opts.sd_model_checkpoint.startsWith('sd1-copy.safetensors')", timeout=10000)  # page opts
    pick_checkpoint(page, "broken.safetensors")
    page.wait_for_selector("#sd_checkpoint_status .error-box", timeout=60000)
    assert "broken.safetensors" in page.inner_text("#sd_checkpoint_status")
    page.wait_for_function(
        "document.querySelector('#setting_sd_model_checkpoint input').value.startsWith('sd1-copy.safetensors')",
        timeout=30000)
    page.fill("#txt2img_seed input", "31")
    set_slider(page, "txt2img_steps", 2)
    page.click("#txt2img_generate")
    page.wait_for_function("document.querySelector('#txt2img_html_info').innerText.includes('Seed: 31')",
                           timeout=60000)
    assert "Model: sd1-copy" in page.inner_text("#txt2img_html_info")


def test_settings_are_applied_and_saved(page, server):
    page.click("button[role=tab]:has-text('Settings')")
    box = page.locator("#setting_CLIP_stop_at_last_layers input")
    box.fill("2")
    page.click("#settings_submit")
    page.wait_for_function("document.querySelector('#settings_result').innerText.includes('CLIP_stop_at_last_layers')",
                           timeout=30000)
    import json

    saved = json.loads((server.data_dir / "config.json").read_text())
    assert saved["CLIP_stop_at_last_layers"] == 2
    box.fill("99")
    page.click("#settings_submit")
    page.wait_for_selector("#settings_result .error-box", timeout=30000)
    assert "CLIP_stop_at_last_layers" in page.inner_text("#settings_result")
    assert json.loads((server.data_dir / "config.json").read_text())["CLIP_stop_at_last_layers"] == 2
    box.fill("1")
    page.click("#settings_submit")


def test_train_tab_creates_and_trains_an_embedding_and_reports_bad_input(page, tmp_path):
    from safetensors.torch import load_file

    from modules import world

    data = tmp_path / "dataset"
    data.mkdir()
    for i, colour in enumerate(("red", "blue")):
        world.render(world.Scene("circle", colour, "white", "center", "large")).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(f"a {colour} circle")
    page.click("button[role=tab]:has-text('Train')")
    page.fill("#train_new_embedding_name textarea, #train_new_embedding_name input", "browser-emb")
    page.click("#train_create_embedding")
    page.wait_for_function("document.querySelector('#train_create_result').innerText.includes('Created')",
                           timeout=30000)
    page.click("button[role=tab]:has-text('Train embedding')")
    page.click("#train_embedding input")
    page.click("ul[role=listbox] li:has-text('browser-emb')")
    page.fill("#train_dataset_directory textarea, #train_dataset_directory input", str(data))
    page.fill("#train_steps input", "3")
    page.click("#train_train_embedding")
    page.wait_for_function("document.querySelector('#train_result').innerText.includes('Training finished at step 3')",
                           timeout=180000)
    assert "browser-emb.pt" in page.inner_text("#train_result")
    page.click("button[role=tab]:has-text('Train LoRA')")
    page.fill("#train_lora_name textarea, #train_lora_name input", "x")
    page.fill("#train_lora_dataset textarea, #train_lora_dataset input", str(tmp_path / "missing"))
    page.click("#train_train_lora")
    page.wait_for_selector("#train_result .error-box", timeout=60000)
    assert "data_root" in page.inner_text("#train_result")
    page.fill("#train_lora_dataset textarea, #train_lora_dataset input", str(data))
    page.fill("#train_lora_steps input", "2")
    page.click("#train_lora_modules label:has-text('conv1')")
    page.fill("#train_lora_min_snr input", "5")
    page.click("#train_train_lora")
    page.wait_for_function("document.querySelector('#train_result').innerText.includes('Training finished at step 2')",
                           timeout=180000)
    saved = next(Path(line) for line in page.inner_text("#train_result").split() if line.endswith("x.safetensors"))
    assert any("resnets_0_conv1.lora_down" in key for key in load_file(saved))


def test_extras_tab_upscales_a_picture_keeps_its_parameters_and_refuses_outside_folders(page, server, tmp_path):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a red circle\nSteps: 4, Seed: 9")
    path = tmp_path / "small.png"
    Image.new("RGB", (40, 24), (200, 10, 10)).save(path, pnginfo=info)
    page.click("button[role=tab]:has-text('Extras')")
    page.set_input_files("#extras_image input[type=file]", str(path))
    page.wait_for_selector("#extras_image img", timeout=30000)
    page.click("#extras_upscaler_1 input")
    page.click("ul[role=listbox] li:has-text('Lanczos')")
    page.click("#extras_generate")
    page.wait_for_function("document.querySelector('#extras_html_info').innerText.includes('Postprocess upscaler')",
                           timeout=60000)
    page.wait_for_selector("#extras_gallery img", timeout=30000)
    saved = sorted((server.data_dir / "outputs" / "extras-images").glob("*.png"))
    assert len(saved) == 1
    with Image.open(saved[0]) as im:
        assert im.size == (80, 48)   # the tab's default: scale by 2
        assert im.text["extras"].startswith("Postprocess upscale by: 2")
        assert im.text["parameters"] == "a red circle\nSteps: 4, Seed: 9"
    page.click("button[role=tab]:has-text('Batch from Directory')")
    page.fill("#extras_batch_input_dir textarea", "/")
    page.click("#extras_generate")
    page.wait_for_selector("#extras_html_info .error-box", timeout=30000)
    assert "outside the folders" in page.inner_text("#extras_html_info")
