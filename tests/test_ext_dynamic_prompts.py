"""The real sd-dynamic-prompts extension (third-party test data) on the default model, through the API.

It is installed as a user would: copied into the data dir's ``extensions/``, its ``install.py`` run by the app's
installer (``modules.a1111.lifecycle``), its scripts loaded; then ``alwayson_scripts`` turn it on for a request and the
analyser reads the colours back.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from modules import analyser, cmd_args, extensions, scripts, shared
from modules.a1111 import lifecycle
from modules.api import create_api_app
from modules.job_queue import JobQueue
from modules.options import Options
from modules.runtime import Runtime
from modules.sd_models import ModelManager
from tests.fixtures_models import SHIPPED, paths_with_shipped_models
from tests.third_party import A1111_EXTENSIONS
from tests.third_party import install_extension as copy_extension

SOURCE = A1111_EXTENSIONS / "sd-dynamic-prompts"
TITLE = "Dynamic Prompts v2.17.1"

pytestmark = pytest.mark.skipif(not SHIPPED or not SOURCE.is_dir(), reason="needs the default model and test data")


def install_extension(extensions_dir: Path) -> Path:
    """Copy the extension as a user would. The test data left out ``jinja_help.html`` (help text its UI shows in an
    accordion) and the ``collections`` folder (its Wildcards tab lists it); upstream has both at the extension's
    root: stand-ins are made when they are missing."""
    folder = copy_extension("sd-dynamic-prompts", extensions_dir)
    help_file = folder / "jinja_help.html"
    if not help_file.exists():
        help_file.write_text("<p>Jinja2 templates (help text left out of the test data)</p>", encoding="utf-8")
    (folder / "collections").mkdir(exist_ok=True)
    (folder / "wildcards").mkdir(exist_ok=True)
    (folder / "wildcards" / "colours.txt").write_text("green\nyellow\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("dynamic-prompts")
    paths = paths_with_shipped_models(data_dir)
    paths.ensure()
    paths.extensions_dir.mkdir()
    install_extension(paths.extensions_dir)
    outcome = lifecycle.run_installers(paths.extensions_dir, data_dir=data_dir)
    assert outcome == {"sd-dynamic-prompts": "ran"}, lifecycle.problems
    opts = Options(samples_save=False, grid_save=False, live_previews_enable=False)
    args = cmd_args.parse_args(["--data-dir", str(data_dir), "--api"])
    runtime = Runtime(args=args, paths=paths, opts=opts, models=ModelManager(paths, opts))
    runtime.queue = JobQueue(paths.history_db)
    shared.bind(runtime)
    scripts.load_scripts(paths.extensions_dir)
    assert [ext.status for ext in extensions.extensions] == ["enabled"], extensions.extensions[0].problems
    try:
        with TestClient(create_api_app(runtime)) as client:
            yield client
    finally:
        runtime.queue.close(timeout=5)
        scripts.unload_scripts()
        extensions.discover(None)
        shared.bind(None)


def txt2img(client: TestClient, prompt: str, *dp_args, **fields) -> tuple[list[Image.Image], dict]:
    body = {"prompt": prompt, "steps": 10, "cfg_scale": 6, "width": 64, "height": 64, "seed": 3,
            "sampler_name": "Euler a", "alwayson_scripts": {TITLE: {"args": list(dp_args)}}, **fields}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    images = [Image.open(io.BytesIO(base64.b64decode(b))) for b in data["images"]]
    return images, json.loads(data["info"])


def colours(images: list[Image.Image]) -> list[str | None]:
    return [analyser.analyse(image).color for image in images]


def test_variants_are_picked_per_image_of_a_batch(api):
    images, info = txt2img(api, "a {red|blue} circle", True, batch_size=4)
    prompts = info["all_prompts"]
    assert set(prompts) == {"a red circle", "a blue circle"} and len(prompts) == 4
    drawn = colours(images[-4:])
    assert {"red", "blue"} <= set(drawn)
    matches = sum(prompt.split()[1] == colour for prompt, colour in zip(prompts, drawn))
    assert matches >= 3, (prompts, drawn)


def test_combinatorial_mode_draws_every_variant_once(api):
    images, info = txt2img(api, "a {red|blue|green} square", True, True)
    assert info["all_prompts"] == ["a red square", "a blue square", "a green square"]
    assert colours(images[-3:]) == ["red", "blue", "green"]


def test_a_wildcard_file_of_the_extension_is_used(api):
    images, info = txt2img(api, "a __colours__ circle", True, True)
    assert info["all_prompts"] == ["a green circle", "a yellow circle"]
    assert colours(images[-2:]) == ["green", "yellow"]


def test_turned_off_it_leaves_the_prompt_alone(api):
    _, info = txt2img(api, "a {red|blue} circle", False)
    assert info["all_prompts"] == ["a {red|blue} circle"]
