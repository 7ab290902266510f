"""What the page loads for extensions (head tags, opts) and the /file= route they fetch their files through; the
Extensions tab's install from URL / check for updates / update, and their refusal on a server open to the network."""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import gradio as gr
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modules import extension_git, extensions, page
from modules.options import Options
from tests.test_extensions import write_extension


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    (root / "extensions").mkdir(parents=True)
    yield root
    extensions.discover(None)


# ---------------------------------------------------------------------------------------------------------------------
# <head> and opts
# ---------------------------------------------------------------------------------------------------------------------
def test_head_loads_the_page_api_then_each_active_extension_in_order(data_dir):
    ext = data_dir / "extensions"
    write_extension(ext, "b-second", files={"javascript/z.js": "", "javascript/a.mjs": "", "style.css": ".b {}"},
                    metadata="[Extension]\nName=b-second\nRequires=a-first\n")
    write_extension(ext, "a-first", files={"javascript/one.js": "", "javascript/notes.txt": ""})
    write_extension(ext, "off", files={"javascript/off.js": "", "style.css": ".off {}"})
    (data_dir / "user.css").write_text(".mine {}")
    extensions.discover(ext, disabled=["off"])
    head = page.head_html(data_dir)
    srcs = [line.split('src="file=')[1].split("?")[0] for line in head.splitlines() if "<script" in line]
    own = sorted(f.name for f in page.APP_JAVASCRIPT_DIR.glob("*") if f.suffix in page.SCRIPT_SUFFIXES)
    assert "webui.js" in own
    assert [Path(s).name for s in srcs] == [*own, "one.js", "a.mjs", "z.js"]
    assert '<script type="module" src="file=' + str(ext / "b-second" / "javascript" / "a.mjs") in head
    links = [line.split('href="file=')[1].split("?")[0] for line in head.splitlines() if "<link" in line]
    assert links == [str(ext / "b-second" / "style.css"), str(data_dir / "user.css")]
    assert "off" not in head and "notes.txt" not in head


def test_localization_comes_from_an_extensions_localizations_folder(data_dir):
    ext = data_dir / "extensions"
    write_extension(ext, "lang", files={"localizations/de.json": '{"Generate": "Erzeugen", "x": "</script>"}',
                                        "localizations/broken.json": "[1, 2"})
    extensions.discover(ext)
    assert list(page.localizations()) == ["broken", "de"]
    script = page.localization_script("de")
    assert script.startswith("<script") and '"Generate": "Erzeugen"' in script and "<\\/script>" in script
    assert page.localization_script("de") in page.head_html(data_dir, "de")
    assert page.localization_script("None") == page.localization_script("missing") == ""
    assert page.localization_script("broken") == ""   # logged; the page stays untranslated


def test_options_json_holds_every_setting_and_extension_options():
    opts = Options()
    opts.__pydantic_extra__["tac_maxResults"] = 5   # an extension's option (saved with the others)
    data = json.loads(page.options_json(opts))
    assert data["samples_format"] == "png" and data["tac_maxResults"] == 5
    assert data["quicksettings_list"] == ["sd_model_checkpoint"]


# ---------------------------------------------------------------------------------------------------------------------
# /file=
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def served(data_dir):
    ext = data_dir / "extensions"
    folder = write_extension(ext, "tags", files={"tags/list.csv": "1girl,0\n", ".git/config": "[remote] token",
                                                 "javascript/t.js": "// t"})
    write_extension(ext, "off", files={"secret.txt": "off"})
    (data_dir / "config.json").write_text("{}")
    (data_dir / "tmp").mkdir()
    (data_dir / "tmp" / "path.txt").write_text(str(folder / "tags"))
    (folder / "escape.txt").symlink_to(data_dir / "config.json")
    extensions.discover(ext, disabled=["off"])
    app = FastAPI()
    page.add_routes(app, data_dir)
    return TestClient(app), folder


def test_file_route_serves_extension_files_tmp_and_the_page_scripts(served, data_dir):
    client, folder = served
    assert client.get("/file=extensions/tags/tags/list.csv?123").text == "1girl,0\n"   # relative to the data dir
    assert client.get(f"/file={folder}/tags/list.csv").text == "1girl,0\n"            # absolute
    assert client.get("/file=tmp/path.txt").text == str(folder / "tags")
    assert client.get(f"/file={page.APP_JAVASCRIPT_DIR / 'webui.js'}").text.count("function gradioApp()") == 1
    assert client.get("/file=extensions/tags/tags/missing.csv").status_code == 404


def test_relative_paths_fall_back_to_the_app_folder(served, tmp_path, monkeypatch):
    """tagcomplete writes tmp/tagAutocompletePath.txt under A1111's script_path (the app's folder) and fetches
    file=tmp/tagAutocompletePath.txt."""
    client, _ = served
    app_dir = tmp_path / "app"
    (app_dir / "tmp").mkdir(parents=True)
    (app_dir / "tmp" / "tagAutocompletePath.txt").write_text("/tags")
    (app_dir / "secret.txt").write_text("no")
    monkeypatch.setattr(page, "REPO_ROOT", app_dir)
    assert client.get("/file=tmp/tagAutocompletePath.txt").text == "/tags"
    assert client.get("/file=tmp/path.txt").status_code == 200          # the data dir's tmp/ still comes first
    assert client.get("/file=secret.txt").status_code == 403


@pytest.mark.parametrize("path", ["extensions/tags/../../config.json", "config.json", "extensions/tags/escape.txt",
                                  "extensions/tags/.git/config", "extensions/off/secret.txt", "/etc/passwd",
                                  "extensions/tags/tags/../../../config.json", "..%2Fconfig.json"])
def test_file_route_refuses_anything_else(served, path, data_dir):
    client, _ = served
    response = client.get(f"/file={path.replace('..', '%2E%2E')}")   # a client would resolve a plain ".."
    assert response.status_code == 403, (path, response.text)
    assert "{}" not in response.text and "served" in response.text
    with pytest.raises(page.FileRefused):
        page.resolve_served_file(path.replace("%2F", "/"), data_dir)


def test_file_route_needs_the_page_login_when_there_is_one(data_dir):
    write_extension(data_dir / "extensions", "tags", files={"list.csv": "x"})
    extensions.discover(data_dir / "extensions")
    with gr.Blocks() as demo:
        gr.Markdown("page")
    app = gr.mount_gradio_app(FastAPI(), demo, path="/", auth=[("user", "pw")])
    page.add_routes(app, data_dir, page.gradio_app_of(app))
    client = TestClient(app)
    assert client.get("/file=extensions/tags/list.csv").status_code == 401
    assert client.post("/login", data={"username": "user", "password": "pw"}).status_code == 200
    assert client.get("/file=extensions/tags/list.csv").text == "x"


def test_routes_added_after_the_page_mount_are_reachable(data_dir):
    with gr.Blocks() as demo:
        gr.Markdown("page")
    app = gr.mount_gradio_app(FastAPI(), demo, path="/")
    page.add_routes(app, data_dir, page.gradio_app_of(app))
    app.get("/tacapi/v1/hello")(lambda: {"hello": 1})   # what an extension does in on_app_started
    page.keep_page_mount_last(app)
    client = TestClient(app)
    assert client.get("/tacapi/v1/hello").json() == {"hello": 1}
    assert client.get("/").status_code == 200


# ---------------------------------------------------------------------------------------------------------------------
# Extensions tab: install from URL, check for updates, update
# ---------------------------------------------------------------------------------------------------------------------
def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def upstream(tmp_path):
    """A local git repository holding an extension (no network)."""
    repo = tmp_path / "sd-webui-colour.git"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    git("config", "user.email", "t@example.com", cwd=repo)
    git("config", "user.name", "t", cwd=repo)
    (repo / "scripts").mkdir()
    (repo / "scripts" / "colour.py").write_text("COLOUR = 'red'\n")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "first", cwd=repo)
    return repo


def local_args(**flags) -> argparse.Namespace:
    values = dict(listen=False, server_name=None, enable_insecure_extension_access=False) | flags
    return argparse.Namespace(**values)


def test_install_from_url_check_for_updates_and_update(upstream, data_dir):
    ext_dir = data_dir / "extensions"
    message = extension_git.ui_install(local_args(), ext_dir, f"file://{upstream}")
    installed = ext_dir / "sd-webui-colour"              # the name from the URL, ".git" dropped
    assert "Installed into" in message and "Restart the app" in message
    assert (installed / "scripts" / "colour.py").read_text() == "COLOUR = 'red'\n"
    assert "already exists" in extension_git.ui_install(local_args(), ext_dir, str(upstream))
    assert "Installed" in extension_git.ui_install(local_args(), ext_dir, str(upstream), dirname="second")

    extensions.discover(ext_dir)
    item = next(i for i in extensions.api_list() if i["name"] == "sd-webui-colour")
    assert item["remote"] == f"file://{upstream}" and item["branch"] == "main"
    assert item["commit_hash"] == git("rev-parse", "HEAD", cwd=upstream)
    assert "<td>sd-webui-colour</td><td>latest</td>" in extension_git.ui_check_for_updates(local_args())
    assert "up to date" in extension_git.ui_update(local_args())

    (upstream / "scripts" / "colour.py").write_text("COLOUR = 'blue'\n")
    git("commit", "-qam", "blue", cwd=upstream)
    assert "<td>sd-webui-colour</td><td>new commits</td>" in extension_git.ui_check_for_updates(local_args())
    assert (installed / "scripts" / "colour.py").read_text() == "COLOUR = 'red'\n"   # checking changes nothing
    message = extension_git.ui_update(local_args())
    assert f"sd-webui-colour: updated to {git('rev-parse', '--short=8', 'HEAD', cwd=upstream)}" in message
    assert (installed / "scripts" / "colour.py").read_text() == "COLOUR = 'blue'\n"


def test_update_keeps_local_changes_and_says_why(upstream, data_dir):
    ext_dir = data_dir / "extensions"
    installed = extension_git.install_from_url(ext_dir, str(upstream))
    git("config", "user.email", "t@example.com", cwd=installed)
    git("config", "user.name", "t", cwd=installed)
    (installed / "scripts" / "colour.py").write_text("COLOUR = 'mine'\n")
    git("commit", "-qam", "mine", cwd=installed)
    (upstream / "scripts" / "colour.py").write_text("COLOUR = 'blue'\n")
    git("commit", "-qam", "blue", cwd=upstream)
    extensions.discover(ext_dir)
    message = extension_git.ui_update(local_args())
    assert "not updated" in message and "local commits or changes" in message
    assert (installed / "scripts" / "colour.py").read_text() == "COLOUR = 'mine'\n"


@pytest.mark.parametrize("url, error", [("", "enter the git URL"), ("--upload-pack=touch /tmp/x", "not a git URL"),
                                        ("/no/such/repo", "git clone failed")])
def test_install_reports_bad_urls(data_dir, url, error):
    message = extension_git.ui_install(local_args(), data_dir / "extensions", url)
    assert "Not installed" in message and error in message
    assert list((data_dir / "extensions").iterdir()) == []   # nothing half-installed is left


@pytest.mark.parametrize("flags", [dict(listen=True), dict(server_name="0.0.0.0"), dict(server_name="192.168.1.5")])
def test_network_servers_refuse_extension_changes(upstream, data_dir, flags):
    ext_dir = data_dir / "extensions"
    args = local_args(**flags)
    for message in (extension_git.ui_install(args, ext_dir, str(upstream)), extension_git.ui_check_for_updates(args),
                    extension_git.ui_update(args)):
        assert "--enable-insecure-extension-access" in message and "error-box" in message
    assert list(ext_dir.iterdir()) == []
    allowed = local_args(**flags, enable_insecure_extension_access=True)
    assert "Installed" in extension_git.ui_install(allowed, ext_dir, str(upstream))


def test_extensions_tab_builds_with_install_and_update_controls(data_dir):
    runtime = argparse.Namespace(args=local_args(listen=True),
                                 paths=argparse.Namespace(extensions_dir=data_dir / "extensions"))
    with gr.Blocks() as demo:
        extension_git.create_update_ui(runtime)
        extension_git.create_install_ui(runtime)
    ids = {block.elem_id for block in demo.blocks.values()}
    assert {"extension_to_install", "install_extension_button", "extensions_check_for_updates",
            "extensions_update", "extensions_access_refused"} <= ids
