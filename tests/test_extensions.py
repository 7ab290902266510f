"""Extension discovery, order, containment of broken extensions, the Extensions tab and the example."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modules import extensions, page, script_callbacks, scripts
from modules.options import Options
from modules.paths import REPO_ROOT
from tests.test_scripts import make_p

EXAMPLE = REPO_ROOT / "extensions" / "example-extension"


def write_extension(root: Path, name: str, script: str | None = None, metadata: str | None = None,
                    files: dict[str, str] | None = None) -> Path:
    folder = root / name
    (folder / "scripts").mkdir(parents=True)
    if script is not None:
        (folder / "scripts" / f"{name.replace('-', '_')}.py").write_text(textwrap.dedent(script))
    if metadata is not None:
        (folder / "metadata.ini").write_text(textwrap.dedent(metadata))
    for relative, text in (files or {}).items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return folder


@pytest.fixture
def ext_dir(tmp_path):
    root = tmp_path / "extensions"
    root.mkdir()
    yield root
    scripts.unload_scripts()
    extensions.discover(None)


def names(exts: list[extensions.Extension]) -> list[str]:
    return [e.name for e in exts]


# ---------------------------------------------------------------------------------------------------------------------
# discovery and order
# ---------------------------------------------------------------------------------------------------------------------
def test_metadata_orders_extensions(ext_dir):
    write_extension(ext_dir, "a-late", metadata="[Extension]\nName = late\nAfter = zeta, unknown\n")
    write_extension(ext_dir, "b-first", metadata="[Extension]\nBefore = late, m-needs\n")
    write_extension(ext_dir, "m-needs", metadata="[Extension]\nRequires = zeta missing-one\n")
    write_extension(ext_dir, "zeta")
    write_extension(ext_dir, ".hidden")
    found = extensions.discover(ext_dir)
    assert names(found) == ["b-first", "zeta", "a-late", "m-needs"]
    needs = found[-1]
    assert needs.requires == ["zeta", "missing-one"]
    assert any("requires extension 'missing-one'" in problem for problem in needs.problems)
    assert found[2].canonical_name == "late"


def test_dependency_cycle_is_reported_and_falls_back_alphabetically(ext_dir):
    write_extension(ext_dir, "c1", metadata="[Extension]\nAfter = c2\n")
    write_extension(ext_dir, "c2", metadata="[Extension]\nAfter = c1\n")
    write_extension(ext_dir, "a-free", metadata="[Extension]\nAfter = c1\n")
    write_extension(ext_dir, "b-bad-ini", metadata="no section header here\n")
    found = extensions.discover(ext_dir)
    assert names(found) == ["b-bad-ini", "a-free", "c1", "c2"]    # a-free waits for c1: it is in the cycle's tail
    for ext in found[1:]:
        assert any("dependency cycle" in problem for problem in ext.problems)
    assert any("metadata.ini is unreadable" in problem for problem in found[0].problems)


def test_disabled_and_disable_all(ext_dir):
    for name in ("one", "two"):
        write_extension(ext_dir, name)
    assert [e.enabled for e in extensions.discover(ext_dir, disabled=["two"])] == [True, False]
    everything_off = extensions.discover(ext_dir, disable_all=True)
    assert [e.status for e in everything_off] == ["disabled", "disabled"]
    assert "--disable-all-extensions" in everything_off[0].problems[0]


# ---------------------------------------------------------------------------------------------------------------------
# loading and containment
# ---------------------------------------------------------------------------------------------------------------------
RAISES_EVERYWHERE = """
    from modules import script_callbacks, scripts

    CALLS = []

    class Broken(scripts.Script):
        def title(self):
            return "Broken hooks"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def _fail(self, name):
            CALLS.append(name)
            raise RuntimeError(f"{name} exploded")

        def setup(self, p, *args):
            self._fail("setup")

        def before_process(self, p, *args):
            self._fail("before_process")

        def process(self, p, *args):
            self._fail("process")

        def before_process_batch(self, p, *args, **kwargs):
            self._fail("before_process_batch")

        def process_batch(self, p, *args, **kwargs):
            self._fail("process_batch")

        def postprocess_batch(self, p, *args, **kwargs):
            self._fail("postprocess_batch")

        def postprocess_image(self, p, pp, *args):
            self._fail("postprocess_image")

        def postprocess(self, p, processed, *args):
            self._fail("postprocess")

    def denoiser(params):
        CALLS.append("cfg_denoiser")
        raise RuntimeError("callback exploded")

    script_callbacks.on_cfg_denoiser(denoiser)
"""

RAISES_IN_UI = """
    from modules import scripts

    class BadUI(scripts.Script):
        def title(self):
            return "Bad UI"

        def ui(self, is_img2img):
            raise ValueError("no widgets for you")
"""

INSTALL_PY = "from pathlib import Path\nPath(__file__).with_name('INSTALLED').write_text('ran')\n"


def test_broken_extensions_are_contained_and_reported(ext_dir, tiny_sd1_model):
    write_extension(ext_dir, "hooks", RAISES_EVERYWHERE)
    write_extension(ext_dir, "import-error", "import this_module_does_not_exist\n",
                    files={"install.py": INSTALL_PY})
    write_extension(ext_dir, "bad-ui", RAISES_IN_UI)
    write_extension(ext_dir, "cycle-a", "", metadata="[Extension]\nAfter = cycle-b\n")
    write_extension(ext_dir, "cycle-b", "", metadata="[Extension]\nAfter = cycle-a\n")
    scripts.load_scripts(ext_dir)
    runner = scripts.scripts_txt2img
    assert not (ext_dir / "import-error" / "INSTALLED").exists()         # install.py is never run
    hooks_module = next(d.module for d in scripts.scripts_data if d.script_class.__name__ == "Broken")

    processed = runner.run(make_p(tiny_sd1_model, runner))
    assert len(processed.images) == 1 and np.asarray(processed.images[0]).std() > 0
    assert hooks_module.CALLS == ["setup"]   # switched off at its first failure, its callback with it
    status = {item["name"]: item for item in extensions.api_list()}
    assert status["hooks"]["status"] == "failed"
    assert "setup() of script 'Broken hooks'" in status["hooks"]["problems"][0]
    assert "RuntimeError: setup exploded" in status["hooks"]["problems"][0]
    assert status["import-error"]["status"] == "failed"
    assert "ModuleNotFoundError" in status["import-error"]["problems"][0]
    assert status["bad-ui"]["status"] == "failed" and "no widgets for you" in status["bad-ui"]["problems"][0]
    assert "dependency cycle" in status["cycle-a"]["problems"][0]
    assert status["cycle-a"]["status"] == "enabled"
    assert "setup exploded" in processed.comments
    assert [s.name for s in runner.selectable_scripts if s.source.active] == \
        ["prompt matrix", "prompt-to-prompt", "prompts from file or textbox", "x/y/z plot"]

    again = runner.run(make_p(tiny_sd1_model, runner))
    assert len(again.images) == 1 and hooks_module.CALLS == ["setup"] and not again.comments
    assert "bad ui" not in scripts.api_scripts_list()["txt2img"]


def test_hook_failure_mid_job_keeps_the_job_going(ext_dir, tiny_sd1_model):
    write_extension(ext_dir, "late", """
        from modules import scripts

        class Late(scripts.Script):
            def title(self):
                return "Late"

            def show(self, is_img2img):
                return scripts.AlwaysVisible

            def postprocess_image(self, p, pp, *args):
                raise RuntimeError("late failure")
    """)
    write_extension(ext_dir, "callback-only", """
        from modules import script_callbacks

        def after(params):
            raise RuntimeError("after-cfg failure")

        script_callbacks.on_cfg_after_cfg(after, name="after")
    """)
    scripts.load_scripts(ext_dir)
    runner = scripts.scripts_txt2img
    processed = runner.run(make_p(tiny_sd1_model, runner, batch_size=2))
    assert len(processed.images) == 2
    assert "late failure" in processed.comments and "after-cfg failure" in processed.comments
    assert not script_callbacks.cfg_callbacks_active()   # the failing callback was taken out


def test_disable_all_extensions_loads_only_builtins(ext_dir):
    write_extension(ext_dir, "hooks", RAISES_EVERYWHERE)
    scripts.load_scripts(ext_dir, disable_all_extensions=True)
    assert [d.script_class.__name__ for d in scripts.scripts_data] == [
        "AttentionMaps", "PromptMatrix", "PromptToPrompt", "PromptsFromFile", "XYZPlot"]
    assert not script_callbacks.cfg_callbacks_active()
    assert extensions.api_list()[0]["enabled"] is False


# ---------------------------------------------------------------------------------------------------------------------
# Extensions tab, API list
# ---------------------------------------------------------------------------------------------------------------------
def test_extensions_tab_and_enabling(ext_dir, tmp_path):
    for name in ("one", "two"):
        write_extension(ext_dir, name)
    opts = Options(disabled_extensions=["uninstalled"])
    opts._path = tmp_path / "config.json"
    extensions.discover(ext_dir, opts.disabled_extensions)
    with gr.Blocks():
        extensions.create_ui(opts)
    assert "<td>one</td>" in extensions.table_html()
    message = extensions.apply_enabled(opts, ["two"])
    assert opts.disabled_extensions == ["uninstalled", "one"]
    assert Options.load(tmp_path / "config.json").disabled_extensions == ["uninstalled", "one"]
    assert not extensions.extensions[0].active and "1 of 2" in message
    extensions.extensions[0].enabled = False
    assert "Restart the app to load one" in extensions.apply_enabled(opts, ["one", "two"])


# ---------------------------------------------------------------------------------------------------------------------
# the example extension
# ---------------------------------------------------------------------------------------------------------------------
def test_example_extension_loads_and_works(ext_dir, tiny_sd1_model):
    shutil.copytree(EXAMPLE, ext_dir / "example-extension")
    scripts.load_scripts(ext_dir)
    runner = scripts.scripts_txt2img
    assert "example: mirror" in scripts.api_scripts_list()["txt2img"]
    assert [f.name for f in page.script_files()][-1] == "example.js"
    assert page.style_files(ext_dir) == [(ext_dir / "example-extension" / "style.css").resolve()]

    suffixed = runner.run_from_api(make_p(tiny_sd1_model), None, [],
                                   {"Example: prompt suffix": {"args": [True, "on a blue background"]}})
    assert suffixed.all_prompts == ["a red circle, on a blue background"]
    assert "Example suffix: on a blue background" in suffixed.infotexts[0]

    plain = runner.run(make_p(tiny_sd1_model, runner))
    mirrored = runner.run_from_api(make_p(tiny_sd1_model), "example: mirror", ["horizontal"], {})
    assert np.array_equal(np.asarray(mirrored.images[0]), np.asarray(plain.images[0])[:, ::-1])

    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    answer = TestClient(app).get("/example-extension/hello").json()
    assert answer == {"extension": "example-extension", "folder": str((ext_dir / "example-extension").resolve())}


def test_timed_extension_code_reuses_threads_and_still_times_out(monkeypatch):
    """A callback called at every sampling step runs on a pooled thread, not a new thread per call; nested calls and
    a call that overruns (abandoned, its thread busy) do not block the next ones."""
    import threading
    import time

    monkeypatch.setattr(extensions, "hook_timeout", 0.5)
    names = set()

    def cb(x):
        names.add(threading.current_thread().name)
        return x + 1

    extensions.guarded(None, "warm-up", cb, (0,))
    starts, start = [], threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (starts.append(self.name), start(self))[1])
    idents = set()
    for i in range(200):
        ok, result = extensions.guarded(None, "cb", lambda x: (idents.add(threading.get_ident()), cb(x))[1], (i,))
        assert ok and result == i + 1
    assert len(starts) <= 1, starts
    assert threading.get_ident() not in idents and names == {"extension-cb", "extension-<lambda>"}

    def outer():  # extension code that itself runs guarded extension code
        return extensions.guarded(None, "inner", cb, (41,))[1]

    assert extensions.guarded(None, "outer", outer) == (True, 42)
    t = time.monotonic()
    assert extensions.guarded(None, "sleeper", time.sleep, (3,)) == (False, None)  # abandoned after 0.5 s
    assert time.monotonic() - t < 2
    assert extensions.guarded(None, "after", cb, (1,)) == (True, 2)
    with pytest.raises(ZeroDivisionError):
        extensions.guarded(None, "raises", lambda: 1 / 0, passthrough=(ZeroDivisionError,))
