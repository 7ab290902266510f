"""A1111 extensions' page code in a real browser: the real tagcomplete extension (its Python adds API routes and
settings, its JavaScript reads `opts`, waits for onUiLoaded and completes tags in the prompt boxes), and a probe
extension that exercises the page's JavaScript API, its element ids, style.css, .mjs and /file=."""
from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_browser import CHROMIUM, browser_page, running_app, server_log, tiny_model_data_dir
from tests.third_party import A1111_EXTENSIONS, install_extension

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
TAGCOMPLETE = "a1111-sd-webui-tagcomplete"

PROBE_JS = """
window.probe = {loaded: 0, optsAtLoad: null, tabChanges: 0, optionsChanged: 0, available: 0, afterUpdates: 0};
onUiLoaded(() => {
    probe.loaded++;
    probe.optsAtLoad = {probe_colour: opts.probe_colour, samples_format: opts.samples_format};
    probe.img2imgPromptAtLoad = !!gradioApp().querySelector("#img2img_prompt > label > textarea");
});
onOptionsAvailable(() => { probe.available++; });
onUiTabChange(() => { probe.tabChanges++; });
onOptionsChanged(() => { probe.optionsChanged++; });
onAfterUiUpdate(() => { probe.afterUpdates++; });
"""
PROBE_PY = """
import gradio as gr
from fastapi.responses import PlainTextResponse
from modules import script_callbacks, shared

def settings():
    shared.opts.add_option("probe_colour", shared.OptionInfo("red", "Probe colour", section=("probe", "Probe")))

def routes(demo, app):
    app.get("/probe/hello")(lambda: PlainTextResponse("hello from probe"))

script_callbacks.on_ui_settings(settings)
script_callbacks.on_app_started(routes)
"""


@pytest.fixture(scope="module")
def server(tiny_models_dir, tiny_configs_dir, tmp_path_factory):
    if not (A1111_EXTENSIONS / TAGCOMPLETE).is_dir():
        pytest.skip(f"the third-party test data is not at {A1111_EXTENSIONS}")
    data_dir = tiny_model_data_dir(tmp_path_factory, tiny_models_dir, tiny_configs_dir, "extensions-browser-data")
    extensions_dir = data_dir / "extensions"
    install_extension(TAGCOMPLETE, extensions_dir)
    probe = extensions_dir / "probe"
    module = "window.probeModule = true;\nonUiLoaded(() => { window.probeModuleLoaded = true; });\n"
    for relative, text in {"javascript/probe.js": PROBE_JS, "javascript/later.mjs": module,
                           "scripts/probe.py": PROBE_PY, "data/hello.txt": "file route works",
                           "localizations/probe-de.json": '{"Generate": "Erzeugen", "Sampling steps": "Schritte"}',
                           "style.css": "#txt2img_prompt {outline: 3px solid rgb(255, 0, 0)}"}.items():
        (probe / relative).parent.mkdir(parents=True, exist_ok=True)
        (probe / relative).write_text(textwrap.dedent(text))
    (data_dir / "config.json").write_text('{"localization": "probe-de"}')
    with running_app(data_dir, server_log(tmp_path_factory)) as url:
        yield SimpleNamespace(url=url, data_dir=data_dir)


@pytest.fixture(scope="module")
def page(server):
    with browser_page(server.url) as page:   # the model is loaded: the token counter counts
        yield page


def test_tagcomplete_suggests_tags_while_typing_and_inserts_the_chosen_one(page, tmp_path):
    # its setup found all four prompt boxes (txt2img/img2img, prompt/negative) by A1111's selectors
    page.wait_for_function("document.querySelectorAll('textarea.autocomplete').length === 4", timeout=30000)
    box = page.locator("#txt2img_prompt textarea")
    box.click()
    box.press_sequentially("1gi", delay=60)
    results = page.locator(".autocompleteResults").first
    results.wait_for(state="visible", timeout=15000)
    first = page.locator(".autocompleteResults li").first
    assert first.inner_text().startswith("1girl")       # from its tags/danbooru.csv, fetched through /file=
    page.screenshot(path=str(tmp_path / "tagcomplete.png"))
    counter = page.locator("#txt2img_token_counter")
    page.wait_for_function("document.querySelector('#txt2img_token_counter').innerText !== '0/75'", timeout=15000)
    typed = counter.inner_text()
    box.press("Tab")   # accept: tagcomplete writes the tag and calls updateInput so Gradio gets the new value
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea').value === '1girl, '", timeout=10000)
    page.wait_for_function(f"document.querySelector('#txt2img_token_counter').innerText !== '{typed}'",
                           timeout=15000)   # the server counted the completed prompt
    assert page.locator(".autocompleteResults").first.is_hidden()
    # its API routes (added in on_app_started) answer
    assert page.evaluate("fetch('tacapi/v1/get-use-count-list', {method: 'POST', headers: "
                         "{'Content-Type': 'application/json'}, body: JSON.stringify({tagNames: ['1girl'], "
                         "tagTypes: [0], neg: false})}).then(r => r.status)") == 200


def test_page_api_for_extensions(page):
    probe = page.evaluate("window.probe")
    assert probe["loaded"] == 1 and probe["available"] == 1
    assert probe["optsAtLoad"] == {"probe_colour": "red", "samples_format": "png"}   # an extension's option too
    assert probe["img2imgPromptAtLoad"]          # every tab is in the page when onUiLoaded runs
    assert page.evaluate("opts.tac_maxResults") == 5
    assert page.evaluate("get_uiCurrentTab().innerText") == "txt2img"
    assert page.evaluate("get_uiCurrentTabContent().id") == "tab_txt2img"
    assert page.evaluate("uiElementIsVisible(gradioApp().querySelector('#txt2img_prompt'))")
    assert not page.evaluate("uiElementIsVisible(gradioApp().querySelector('#img2img_prompt'))")
    changes = probe["tabChanges"]
    assert page.evaluate("switch_to_img2img(1, 2)") == [1, 2]     # passes its arguments through, as A1111's
    page.wait_for_function("get_uiCurrentTabContent().id === 'tab_img2img'", timeout=10000)
    page.wait_for_function(f"probe.tabChanges > {changes}", timeout=10000)
    assert page.evaluate("uiElementInSight(gradioApp().querySelector('#img2img_prompt'))")
    page.evaluate("switch_to_txt2img()")
    page.wait_for_function("get_uiCurrentTab().innerText === 'txt2img'", timeout=10000)
    for elem_id in ("txt2img_prompt", "txt2img_neg_prompt", "txt2img_generate", "txt2img_interrupt", "txt2img_skip",
                    "txt2img_gallery", "txt2img_settings", "txt2img_styles", "txt2img_steps", "txt2img_sampling",
                    "txt2img_cfg_scale", "txt2img_seed", "txt2img_width", "txt2img_height", "txt2img_batch_count",
                    "txt2img_batch_size", "img2img_prompt", "img2img_neg_prompt", "img2img_generate", "tab_txt2img",
                    "tab_img2img", "tab_extras", "tab_pnginfo", "tab_settings", "tab_extensions", "quicksettings",
                    "tabs", "settings_submit", "setting_sd_model_checkpoint"):
        assert page.evaluate(f"gradioApp().getElementById('{elem_id}') !== null"), elem_id
    assert page.evaluate("getComputedStyle(gradioApp().querySelector('#txt2img_prompt')).outlineColor") == \
        "rgb(255, 0, 0)"                                          # the extension's style.css
    assert page.evaluate("window.probeModule") is True           # its .mjs
    page.wait_for_function("window.probeModuleLoaded === true", timeout=5000)   # its onUiLoaded ran too
    assert page.evaluate("fetch('file=extensions/probe/data/hello.txt').then(r => r.text())") == "file route works"
    assert page.evaluate("fetch('file=config.json').then(r => r.status)") == 403
    assert page.evaluate("fetch('probe/hello').then(r => r.text())") == "hello from probe"
    assert page.evaluate("selected_gallery_index()") == -1


def test_submit_functions_give_their_arguments_with_a_task_id(page):
    """A1111's Generate `_js` functions, which extensions wrap or give their own buttons."""
    import re

    result = page.evaluate("submit('ignored', 'a prompt', 3)")
    assert re.fullmatch(r"task\([A-Z0-9]{7}\)", result[0]) and result[1:] == ["a prompt", 3]
    assert page.evaluate("submit('x')[0]") != result[0]
    page.evaluate("switch_to_inpaint()")
    page.wait_for_function("get_tab_index('mode_img2img') === 1", timeout=10000)
    result = page.evaluate("submit_img2img(null, null, 'p')")
    assert result[0].startswith("task(") and result[1:] == [1, "p"]
    page.evaluate("switch_to_img2img()")
    page.wait_for_function("get_tab_index('mode_img2img') === 0", timeout=10000)
    page.evaluate("switch_to_txt2img()")
    page.wait_for_function("get_uiCurrentTab().innerText === 'txt2img'", timeout=10000)


def test_the_chosen_localization_translates_the_page(page):
    assert page.evaluate("getTranslation('Generate')") == "Erzeugen"
    assert page.inner_text("#txt2img_generate") == "Erzeugen"
    assert "Schritte" in page.inner_text("#txt2img_steps")
    assert page.evaluate("getTranslation('no such text')") is None


def test_opts_follow_apply_settings(page, server):
    before = page.evaluate("probe.optionsChanged")
    page.evaluate("switch_to_txt2img()")
    page.click("button[role=tab]:has-text('Settings')")
    box = page.locator("#setting_samples_save input[type=checkbox]")
    assert box.is_checked() and page.evaluate("opts.samples_save") is True
    box.uncheck()
    page.click("#settings_submit")
    page.wait_for_function("opts.samples_save === false", timeout=15000)
    assert page.evaluate("probe.optionsChanged") > before
    page.click("button[role=tab]:has-text('txt2img')")


def test_extensions_tab_installs_from_a_git_url(page, server, tmp_path):
    repo = tmp_path / "sd-webui-fresh"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "fresh.py").write_text("# new extension\n")
    for command in (["init", "-q"], ["add", "-A"],
                    ["-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "first"]):
        subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True)
    page.click("button[role=tab]:has-text('Extensions')")
    page.click("button[role=tab]:has-text('Install from URL')")
    page.fill("#extension_to_install textarea", f"file://{repo}")
    page.click("#install_extension_button")
    page.wait_for_function("document.querySelector('#extension_install_result').innerText.includes('Restart')",
                           timeout=30000)
    assert "Installed into" in page.inner_text("#extension_install_result")
    assert (server.data_dir / "extensions" / "sd-webui-fresh" / "scripts" / "fresh.py").is_file()
    page.click("#install_extension_button")   # again: the folder exists now
    page.wait_for_function("document.querySelector('#extension_install_result').innerText.includes('already')",
                           timeout=30000)
    page.evaluate("switch_to_txt2img()")
