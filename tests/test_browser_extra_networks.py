"""Extra-networks cards and the style editor in a real browser (Chromium + Playwright against ``python app.py``):
a LoRA card click adds ``<lora:name:1>`` and a second removes it, search filters, Refresh shows a new file, the
metadata editor's weight and activation text are used, a generated image becomes a card's preview, a checkpoint card
loads its checkpoint, and a style saved in the editor is in the dropdown and in styles.csv."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from tests.test_browser import (CHROMIUM, browser_page, running_app, server_log, set_slider,
                                tiny_model_data_dir)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
SHOTS = Path(os.environ.get("BROWSER_SCREENSHOTS") or "/tmp/browser-shots")


def write_lora(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(path))


@pytest.fixture(scope="module")
def server(tiny_models_dir, tiny_configs_dir, tmp_path_factory):
    data_dir = tiny_model_data_dir(tmp_path_factory, tiny_models_dir, tiny_configs_dir, "extra-networks-browser")
    shutil.copy(data_dir / "models" / "Stable-diffusion" / "sd1.safetensors",
                data_dir / "models" / "Stable-diffusion" / "sd1-copy.safetensors")
    lora_dir = data_dir / "models" / "Lora"
    for name in ("detail", "ink_wash", "paper_cut", "watercolor"):
        write_lora(lora_dir / f"{name}.safetensors")
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (96, 128), (30, 64, 120))
    ImageDraw.Draw(picture).ellipse((20, 30, 76, 86), fill=(250, 200, 40))
    picture.save(lora_dir / "watercolor.preview.png")
    (lora_dir / "ink_wash.json").write_text(json.dumps({"description": "Black ink wash painting"}))
    (data_dir / "models" / "embeddings").mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.zeros(1, 32)}, str(data_dir / "models" / "embeddings" / "goodcat.safetensors"))
    (data_dir / "styles.csv").write_text("name,prompt,negative_prompt\nold,vintage photo,\n", encoding="utf-8")
    with running_app(data_dir, server_log(tmp_path_factory)) as url:
        yield SimpleNamespace(url=url, data_dir=data_dir, lora_dir=lora_dir)


@pytest.fixture(scope="module")
def page(server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with browser_page(server.url) as page:
        yield page


def open_page(page, tab: str, title: str) -> None:
    """Open the extra-networks accordion of ``tab`` and its ``title`` tab."""
    if not page.is_visible(f"#{tab}_extra_tabs"):
        page.click(f"#{tab}_extra_networks > button, #{tab}_extra_networks .label-wrap")
        page.wait_for_selector(f"#{tab}_extra_tabs", state="visible")
    page.click(f"#{tab}_extra_tabs button[role=tab]:has-text('{title}')")


def card(tab: str, page_id: str, name: str) -> str:
    return f"#{tab}_{page_id}_cards .extra-network-card[data-name='{name}']"


def prompt_value(page, tab: str = "txt2img") -> str:
    return page.input_value(f"#{tab}_prompt textarea")


def test_lora_cards_click_adds_then_removes_the_tag_and_look_like_cards(page, server):
    open_page(page, "txt2img", "Lora")
    page.wait_for_selector(card("txt2img", "lora", "detail"), state="visible")
    page.fill("#txt2img_prompt textarea", "a cat")
    page.click(card("txt2img", "lora", "detail"))
    page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value.includes('<lora')")
    assert prompt_value(page) == "a cat <lora:detail:1>"
    page.wait_for_selector(card("txt2img", "lora", "detail") + ".in-prompt")
    page.click(card("txt2img", "lora", "detail"))
    assert prompt_value(page) == "a cat"
    # a grid of cards, not a list: several cards side by side in one row, each taller than wide, with its picture
    boxes = [page.locator(card("txt2img", "lora", n)).bounding_box() for n in ("detail", "ink_wash", "paper_cut")]
    assert max(b["y"] for b in boxes) - min(b["y"] for b in boxes) < 2
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]
    assert all(b["height"] > b["width"] > 100 for b in boxes)
    natural = page.eval_on_selector(card("txt2img", "lora", "watercolor") + " img.preview", "img => img.naturalWidth")
    assert natural == 96
    page.locator("#txt2img_extra_networks").screenshot(path=str(SHOTS / "extra-networks-lora.png"))
    assert "styles.csv" in page.get_attribute("#txt2img_styles_refresh", "title")   # the script's page hooks ran


def test_the_text_is_kept_when_the_prompt_goes_on_after_the_tag(page):
    open_page(page, "txt2img", "Lora")
    page.fill("#txt2img_prompt textarea", "")
    page.click(card("txt2img", "lora", "paper_cut"))
    assert prompt_value(page) == "<lora:paper_cut:1>"
    page.fill("#txt2img_prompt textarea", "<lora:paper_cut:0.4>, a fox")
    page.click(card("txt2img", "lora", "paper_cut"))       # found whatever its weight, and removed
    assert prompt_value(page) == "a fox"
    page.fill("#txt2img_prompt textarea", "")


@pytest.mark.parametrize("value,text,expected", [
    ("", "<lora:a:1>", ("<lora:a:1>", False)),
    ("a cat  ", "<lora:a:1>", ("a cat <lora:a:1>", False)),
    ("a cat <lora:a:0.5> b", "<lora:a:1>", ("a cat b", True)),
    ("x, <lora:a:1> trigger, y", "<lora:a:1> trigger", ("x, y", True)),
    ("<lora:ab:1> a cat", "<lora:a:1>", ("<lora:ab:1> a cat <lora:a:1>", False)),     # another name is not it
    ("goodcat, a photo", "goodcat", ("a photo", True)),
    ("goodcats", "goodcat", ("goodcats goodcat", False)),
    ("(goodcat:1.2) x", "goodcat", ("x", True)),           # a weighted name goes with its brackets
    ("a, (goodcat), b", "goodcat", ("a, b", True)),
])
def test_the_prompt_toggle_as_a1111(page, value, text, expected):
    result = page.evaluate("([v, t]) => extraNetworksToggle(v, t)", [value, text])
    assert (result["value"], result["removed"]) == expected


def test_the_added_text_follows_the_separator_setting(page):
    result = page.evaluate("""([v, t]) => {
        const before = opts.extra_networks_add_text_separator;
        opts.extra_networks_add_text_separator = ", ";
        try { return extraNetworksToggle(v, t); } finally { opts.extra_networks_add_text_separator = before; }
    }""", ["a cat", "<lora:x:1>"])
    assert result["value"] == "a cat, <lora:x:1>"


def test_search_filters_the_cards(page):
    open_page(page, "txt2img", "Lora")
    page.fill("#txt2img_lora_extra_search textarea, #txt2img_lora_extra_search input", "ink")
    page.wait_for_selector(card("txt2img", "lora", "detail"), state="hidden")
    assert page.is_visible(card("txt2img", "lora", "ink_wash"))
    page.fill("#txt2img_lora_extra_search textarea, #txt2img_lora_extra_search input", "black painting")
    assert page.is_visible(card("txt2img", "lora", "ink_wash"))    # words of the description match too
    assert not page.is_visible(card("txt2img", "lora", "paper_cut"))
    page.fill("#txt2img_lora_extra_search textarea, #txt2img_lora_extra_search input", "")
    page.wait_for_selector(card("txt2img", "lora", "detail"), state="visible")


def test_refresh_shows_a_new_file(page, server):
    open_page(page, "txt2img", "Lora")
    write_lora(server.lora_dir / "fresh_lora.safetensors")
    assert page.locator(card("txt2img", "lora", "fresh_lora")).count() == 0
    page.click("#txt2img_extra_refresh")
    page.wait_for_selector(card("txt2img", "lora", "fresh_lora"), state="visible")
    open_page(page, "txt2img", "Textual Inversion")
    page.wait_for_selector(card("txt2img", "textual_inversion", "goodcat"), state="visible")
    page.fill("#txt2img_prompt textarea", "a photo")
    page.click(card("txt2img", "textual_inversion", "goodcat"))
    assert prompt_value(page) == "a photo goodcat"
    page.click(card("txt2img", "textual_inversion", "goodcat"))
    assert prompt_value(page) == "a photo"


def test_metadata_editor_saves_the_json_and_the_card_uses_it(page, server):
    open_page(page, "txt2img", "Lora")
    page.hover(card("txt2img", "lora", "detail"))
    page.click(card("txt2img", "lora", "detail") + " button.edit-metadata")
    page.wait_for_selector("#txt2img_extra_metadata_editor", state="visible")
    page.fill("#txt2img_extra_activation_text textarea, #txt2img_extra_activation_text input", "intricate")
    page.fill("#txt2img_extra_negative_text textarea, #txt2img_extra_negative_text input", "blurry")
    page.fill("#txt2img_extra_description textarea", "Adds fine detail")
    set_slider(page, "txt2img_extra_preferred_weight", 0.6)
    page.locator("#txt2img_extra_networks").screenshot(path=str(SHOTS / "extra-networks-editor.png"))
    page.click("#txt2img_extra_metadata_save")
    page.wait_for_selector("#txt2img_extra_metadata_editor", state="hidden")
    saved = json.loads((server.lora_dir / "detail.json").read_text())
    assert saved["activation text"] == "intricate" and saved["preferred weight"] == 0.6
    assert saved["description"] == "Adds fine detail" and saved["negative text"] == "blurry"
    page.wait_for_selector(card("txt2img", "lora", "detail") + "[data-prompt='<lora:detail:0.6> intricate']")
    page.fill("#txt2img_prompt textarea", "a cat")
    page.fill("#txt2img_neg_prompt textarea", "")
    page.click(card("txt2img", "lora", "detail"))
    assert prompt_value(page) == "a cat <lora:detail:0.6> intricate"
    assert page.input_value("#txt2img_neg_prompt textarea") == "blurry"
    page.click(card("txt2img", "lora", "detail"))
    assert prompt_value(page) == "a cat"
    assert page.input_value("#txt2img_neg_prompt textarea") == ""


def test_replace_preview_uses_the_generated_image(page, server):
    set_slider(page, "txt2img_steps", 3)
    page.fill("#txt2img_prompt textarea", "a red circle")
    page.fill("#txt2img_seed input", "77")
    page.click("#txt2img_generate")
    page.wait_for_function("() => (document.querySelector('#txt2img_html_info')?.innerText || '').includes('Seed: 77')",
                           timeout=120000)
    open_page(page, "txt2img", "Lora")
    page.hover(card("txt2img", "lora", "paper_cut"))
    page.click(card("txt2img", "lora", "paper_cut") + " button.replace-preview")
    page.wait_for_selector(card("txt2img", "lora", "paper_cut") + " img.preview", timeout=30000)
    preview = server.lora_dir / "paper_cut.preview.png"
    from PIL import Image

    with Image.open(preview) as picture:
        assert picture.size == (64, 64)
        assert "Seed: 77" not in picture.info.get("parameters", "")    # a preview, written without infotext
    width = page.eval_on_selector(card("txt2img", "lora", "paper_cut") + " img.preview", "img => img.naturalWidth")
    assert width == 64
    page.locator("#txt2img_extra_networks").screenshot(path=str(SHOTS / "extra-networks-preview.png"))


def test_a_checkpoint_card_loads_that_checkpoint(page):
    open_page(page, "txt2img", "Checkpoints")
    page.click(card("txt2img", "checkpoints", "sd1-copy"))
    page.wait_for_function(
        "() => (document.querySelector('#setting_sd_model_checkpoint input')?.value || '').startsWith('sd1-copy')",
        timeout=60000)
    page.click(card("txt2img", "checkpoints", "sd1"))
    page.wait_for_function(
        "() => (document.querySelector('#setting_sd_model_checkpoint input')?.value || '').startsWith('sd1.')",
        timeout=60000)


def test_a_style_saved_in_the_editor_is_in_the_dropdown_and_in_styles_csv(page, server):
    page.click("#txt2img_styles_edit_button")
    page.wait_for_selector("#txt2img_styles_editor", state="visible")
    name_box = page.locator("#txt2img_edit_style_name input")
    name_box.fill("Cinematic")
    name_box.press("Enter")
    page.fill("#txt2img_edit_style_prompt textarea", "cinematic still of {prompt}, film grain")
    page.fill("#txt2img_edit_style_neg_prompt textarea", "cartoon")
    page.locator("#txt2img_styles_editor").first.screenshot(path=str(SHOTS / "style-editor.png"))
    page.screenshot(path=str(SHOTS / "txt2img-with-style-editor.png"))
    page.click("#txt2img_edit_style_save")
    page.wait_for_function(
        "() => (document.querySelector('#txt2img_edit_style_message')?.innerText || '').includes('Saved style')")
    with open(server.data_dir / "styles.csv", encoding="utf-8-sig", newline="") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    assert rows["Cinematic"]["prompt"] == "cinematic still of {prompt}, film grain"
    assert rows["Cinematic"]["negative_prompt"] == "cartoon" and rows["old"]["prompt"] == "vintage photo"
    page.click("#txt2img_styles input")
    page.wait_for_selector("ul[role=listbox] li:has-text('Cinematic')", timeout=10000)
    page.click("ul[role=listbox] li:has-text('Cinematic')")
    page.keyboard.press("Escape")
    page.fill("#txt2img_prompt textarea", "a dog")
    page.fill("#txt2img_neg_prompt textarea", "")
    page.click("#txt2img_style_apply")             # ⇩ (A1111's 📋): the selected styles written into the prompt boxes
    page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value.includes('film grain')")
    assert prompt_value(page) == "cinematic still of a dog, film grain"
    assert page.input_value("#txt2img_neg_prompt textarea") == "cartoon"


def test_styles_csv_changed_on_disk_appears_with_refresh_and_a_broken_one_is_reported(page, server):
    path = server.data_dir / "styles.csv"
    with open(path, "a", encoding="utf-8") as f:
        f.write("handmade,by hand,\n")
    page.click("#txt2img_styles_refresh")
    page.click("#txt2img_styles input")
    page.wait_for_selector("ul[role=listbox] li:has-text('handmade')", timeout=10000)
    page.keyboard.press("Escape")
    good = path.read_bytes()
    path.write_bytes(b"name,prompt\nbad,\xff\xfe\n")
    page.click("#txt2img_styles_refresh")
    page.wait_for_selector("#txt2img_styles_message .error-box", timeout=10000)
    assert "could not be read" in page.inner_text("#txt2img_styles_message")
    page.click("#txt2img_styles input")
    page.wait_for_selector("ul[role=listbox] li:has-text('handmade')", timeout=10000)   # the styles read before
    page.keyboard.press("Escape")
    path.write_bytes(good)
    page.click("#txt2img_styles_refresh")
    page.wait_for_function("() => !document.querySelector('#txt2img_styles_message .error-box')")


def test_img2img_has_its_own_cards_for_its_own_prompt(page):
    page.click("#tabs button[role=tab]:has-text('img2img')")
    open_page(page, "img2img", "Lora")
    page.fill("#img2img_prompt textarea", "a house")
    page.click(card("img2img", "lora", "watercolor"))
    assert prompt_value(page, "img2img") == "a house <lora:watercolor:1>"
    assert "<lora" not in prompt_value(page, "txt2img")
    page.click(card("img2img", "lora", "watercolor"))
    assert prompt_value(page, "img2img") == "a house"
    page.click("#tabs button[role=tab]:has-text('txt2img')")
