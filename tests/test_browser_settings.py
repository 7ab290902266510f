"""The Settings tab in a real browser: A1111's sections, the search box that filters settings by label or name, and
changing ``samples_format`` with Apply (the next picture is saved as a JPG). Screenshots go to the test's tmp folder
(and to $SETTINGS_SCREENSHOTS when set)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_browser import CHROMIUM, running_app, server_log, set_slider, tiny_model_data_dir

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")

VISIBLE = "(id) => { const el = document.getElementById(id); return !!el && el.offsetParent !== null; }"


@pytest.fixture(scope="module")
def server(tiny_models_dir, tiny_configs_dir, tmp_path_factory):
    data_dir = tiny_model_data_dir(tmp_path_factory, tiny_models_dir, tiny_configs_dir, "settings-browser-data")
    with running_app(data_dir, server_log(tmp_path_factory)) as url:
        yield SimpleNamespace(url=url, data_dir=data_dir)


@pytest.fixture(scope="module")
def page(server):
    """As ``browser_page``, with the page's start given more time (on a busy machine it takes over 30 s)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--no-first-run", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server.url)
        page.wait_for_function("window.webuiPage && webuiPage.uiLoaded", timeout=120000)
        page.wait_for_function("document.querySelector('#txt2img_width input[type=number]')?.value === '64'",
                               timeout=120000)
        try:
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("SETTINGS_SCREENSHOTS") or tmp_path_factory.mktemp("settings-shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def visible(page, elem_id: str) -> bool:
    return page.evaluate(VISIBLE, elem_id)


def search(page, text: str) -> None:
    page.fill("#settings_search textarea, #settings_search input", text)
    page.wait_for_timeout(300)


def test_sections_are_shown_and_the_search_box_filters(page, shots):
    page.click("button[role=tab]:has-text('Settings')")
    page.wait_for_selector("#settings_section_saving-images", timeout=30000)
    for section in ("saving-images", "saving-paths", "saving-to-dirs", "sd", "vae", "sampler-params",
                    "live-previews", "ui", "infotext", "upscaling"):
        assert visible(page, f"settings_section_{section}"), section
    body = page.inner_text("#tab_settings")
    for title in ("Saving images/grids", "Paths for saving", "Stable Diffusion", "Sampler parameters",
                  "Live previews", "User interface", "Infotext"):
        assert title in body, title
    page.screenshot(path=str(shots / "settings-sections.png"))

    search(page, "samples_format")                     # by option name
    assert visible(page, "setting_samples_format")
    assert not visible(page, "setting_jpeg_quality") and not visible(page, "setting_CLIP_stop_at_last_layers")
    assert not visible(page, "settings_section_saving-paths") and not visible(page, "settings_section_sd")
    page.screenshot(path=str(shots / "settings-search-samples_format.png"))

    search(page, "clip skip")                          # by label
    assert visible(page, "setting_CLIP_stop_at_last_layers") and not visible(page, "setting_samples_format")

    search(page, "seed")                               # several sections
    assert visible(page, "setting_send_seed") and visible(page, "setting_eta_noise_seed_delta")
    assert not visible(page, "setting_jpeg_quality")
    page.screenshot(path=str(shots / "settings-search-seed.png"))

    search(page, "Live previews")                      # a section's title shows the whole section
    assert visible(page, "setting_show_progress_type") and visible(page, "setting_live_previews_enable")
    assert not visible(page, "setting_samples_format")

    search(page, "")
    assert visible(page, "setting_samples_format") and visible(page, "setting_jpeg_quality")


def test_sd_vae_is_a_dropdown_of_the_vae_choices(page):
    page.click("#setting_sd_vae input")
    options = page.locator("ul[role=listbox] li").all_inner_texts()
    assert [o.replace("✓", "").strip() for o in options][:2] == ["Automatic", "None"], options
    page.keyboard.press("Escape")


def test_changing_samples_format_and_apply_saves_jpgs(page, server, shots):
    page.click("#setting_samples_format input")
    page.click("ul[role=listbox] li:text-is('jpg')")
    page.click("#settings_submit")
    page.wait_for_function("(document.querySelector('#settings_result')?.innerText || '').includes('samples_format')",
                           timeout=30000)
    assert "1 setting(s) changed: samples_format" in page.inner_text("#settings_result")
    assert json.loads((server.data_dir / "config.json").read_text())["samples_format"] == "jpg"
    page.click("#settings_show_changed")
    page.wait_for_function("(document.querySelector('#settings_changed')?.innerText || '').includes('samples_format')",
                           timeout=30000)
    page.screenshot(path=str(shots / "settings-applied.png"))

    page.click("button[role=tab]:has-text('txt2img')")
    page.fill("#txt2img_prompt textarea", "a red circle")
    page.fill("#txt2img_seed input", "2468")
    set_slider(page, "txt2img_steps", 2)
    page.click("#txt2img_generate")
    page.wait_for_function("(document.querySelector('#txt2img_html_info')?.innerText || '').includes('Seed: 2468')",
                           timeout=120000)
    saved = sorted((server.data_dir / "outputs" / "txt2img-images").rglob("*-2468.*"))
    assert [p.suffix for p in saved] == [".jpg"], saved
