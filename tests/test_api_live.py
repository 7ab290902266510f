"""The API on a live uvicorn server (random loopback port) with a real tiny checkpoint, driven by the ``webuiapi``
client as users drive A1111: txt2img, img2img, models, options, png-info, progress, interrupt, scripts; then a load
test of concurrent requests with interrupts mixed in. Nothing is monkeypatched."""
from __future__ import annotations

import base64
import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import uvicorn
import webuiapi
from PIL import Image

from modules import scripts
from modules.api import create_api_app
from modules.cmd_args import parse_args
from modules.job_queue import JobQueue, JobStatus
from modules.options import Options
from modules.paths import CONFIGS_DIR, Paths
from modules.runtime import Runtime
from modules.sd_models import ModelManager

SIZE = 64


@dataclass
class LiveServer:
    url: str
    port: int
    runtime: Runtime

    @property
    def api(self) -> str:
        return f"{self.url}/sdapi/v1"


def start_runtime(data_dir: Path, tiny_models_dir: Path, tiny_configs_dir: Path) -> Runtime:
    """A real Runtime over its own data dir, reading the session's tiny checkpoints (left untouched)."""
    ckpt_dir = Paths.from_args(data_dir=tiny_models_dir).ckpt_dir
    args = parse_args(["--nowebui", "--data-dir", str(data_dir), "--ckpt-dir", str(ckpt_dir),
                       "--ckpt", "sd1.safetensors"])
    paths = Paths.from_args(args.data_dir, args.ckpt_dir)
    paths.ensure()
    opts = Options.load(paths.config_file)
    models = ModelManager(paths, opts, configs_dirs=(tiny_configs_dir, CONFIGS_DIR))
    runtime = Runtime(args=args, paths=paths, opts=opts, models=models, queue=JobQueue(paths.history_db))
    runtime.load_initial_model()
    return runtime


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models_dir, tiny_configs_dir):
    runtime = start_runtime(tmp_path_factory.mktemp("api-live"), tiny_models_dir, tiny_configs_dir)
    scripts.load_scripts(runtime.paths.extensions_dir)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_api_app(runtime), log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield LiveServer(url=f"http://127.0.0.1:{port}", port=port, runtime=runtime)
    uv.should_exit = True
    thread.join(10)
    runtime.queue.close()
    scripts.unload_scripts()
    sock.close()


@pytest.fixture
def client(server) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(host="127.0.0.1", port=server.port, sampler="Euler a", steps=2)


def test_txt2img_img2img_and_png_info_through_webuiapi(client):
    result = client.txt2img(prompt="a red circle", negative_prompt="blue", width=SIZE, height=SIZE, steps=2, seed=7)
    assert len(result.images) == 1 and result.image.size == (SIZE, SIZE)
    assert result.info["seed"] == 7 and result.info["sampler_name"] == "Euler a" and result.info["steps"] == 2
    assert "Steps: 2" in result.info["infotexts"][0] and result.parameters["prompt"] == "a red circle"

    again = client.txt2img(prompt="a red circle", negative_prompt="blue", width=SIZE, height=SIZE, steps=2, seed=7)
    assert list(again.image.getdata()) == list(result.image.getdata())

    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    edited = client.img2img(images=[result.image], mask_image=mask, prompt="a green square", width=SIZE,
                            height=SIZE, steps=2, seed=3, denoising_strength=0.6)
    assert edited.image.size == (SIZE, SIZE) and edited.info["seed"] == 3
    assert edited.image.getpixel((2, 2)) == result.image.convert("RGB").getpixel((2, 2))  # outside the mask

    info = client.png_info(result.image)
    assert "a red circle" in info.info and info.json["parameters"]["Seed"] == "7"


def test_models_options_scripts_and_lists(client, server):
    titles = [m["title"] for m in client.get_sd_models()]
    assert any(t.startswith("sd1.safetensors") for t in titles)
    assert client.util_get_current_model().startswith("sd1.safetensors")
    assert "prompt matrix" in client.get_scripts()["txt2img"]
    assert client.get_embeddings() == {"loaded": {}, "skipped": {}}
    assert "Euler a" in client.util_get_sampler_names()
    assert "automatic" in [s["name"] for s in client.get_schedulers()]
    assert client.get_progress()["progress"] == 0

    client.set_options({"sd_model_checkpoint": "sd1-diffusers"})
    assert client.util_get_current_model().startswith("sd1-diffusers")
    assert server.runtime.models.current.sd_checkpoint_info.name == "sd1-diffusers"
    result = client.txt2img(prompt="x", width=SIZE, height=SIZE, steps=1, seed=1)
    assert result.info["sd_model_name"] == "sd1-diffusers"

    bad = requests.post(f"{server.api}/options", json={"sd_model_checkpoint": "no-such-model"}, timeout=30)
    assert bad.status_code == 422 and "no-such-model" in bad.text
    client.set_options({"sd_model_checkpoint": "sd1.safetensors"})
    assert client.util_get_current_model().startswith("sd1.safetensors")


def test_a_selectable_script_runs_through_the_api(client):
    result = client.txt2img(prompt="a red circle|blue", width=SIZE, height=SIZE, steps=1, seed=5,
                            script_name="prompt matrix", script_args=[])
    assert result.info["all_prompts"] == ["a red circle", "a red circle, blue"]
    assert len(result.images) == 3 and result.images[0].width == 2 * SIZE  # the annotated matrix grid first


def test_a_batch_returns_one_image_per_seed_and_no_grid(client):
    result = client.txt2img(prompt="x", width=SIZE, height=SIZE, steps=1, seed=10, batch_size=2)
    assert len(result.images) == 2 and result.info["all_seeds"] == [10, 11]


def test_progress_and_interrupt_during_a_long_job(client, server):
    done: dict[str, webuiapi.WebUIApiResult] = {}
    thread = threading.Thread(target=lambda: done.setdefault(
        "result", client.txt2img(prompt="slow", width=SIZE, height=SIZE, steps=1000, seed=1)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while True:
        t0 = time.perf_counter()
        progress = client.get_progress()
        assert time.perf_counter() - t0 < 5  # answered while the job runs, not after it
        if progress["current_image"] is not None:
            break
        assert time.monotonic() < deadline, progress
        time.sleep(0.05)
    assert 0 < progress["progress"] < 1 and progress["state"]["sampling_steps"] == 1000
    preview = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
    assert preview.size == (SIZE, SIZE)
    task_id = progress["task_id"]
    assert requests.get(f"{server.api}/queue", timeout=5).json()["running"]["id"] == task_id
    client.interrupt()
    thread.join(60)
    assert not thread.is_alive()
    assert server.runtime.queue.history_entry(task_id).status is JobStatus.INTERRUPTED
    assert client.get_progress()["progress"] == 0


@pytest.mark.timeout(180)
def test_load_50_concurrent_txt2img_with_interrupts(server):
    """50 clients at once, and a few interrupts while they run: every request answers 200 with its job done or
    interrupted, every job is in the history, nothing is left queued."""
    n = 50
    payload = {"prompt": "load", "width": SIZE, "height": SIZE, "steps": 2, "sampler_name": "Euler"}
    stop = threading.Event()

    def post(i: int) -> requests.Response:
        return requests.post(f"{server.api}/txt2img", json={**payload, "seed": i, "force_task_id": f"task(load-{i})"},
                             timeout=170)

    def interrupter() -> int:
        sent = 0
        while sent < 5 and not stop.wait(0.5):
            assert requests.post(f"{server.api}/interrupt", timeout=10).status_code == 200
            sent += 1
        return sent

    with ThreadPoolExecutor(n + 1) as pool:
        interrupts = pool.submit(interrupter)
        responses = list(pool.map(post, range(n)))
        stop.set()
        assert interrupts.result() > 0
    assert [r.status_code for r in responses] == [200] * n, [r.text[:200] for r in responses if r.status_code != 200]
    statuses = [server.runtime.queue.history_entry(f"task(load-{i})").status for i in range(n)]
    assert set(statuses) <= {JobStatus.DONE, JobStatus.INTERRUPTED} and JobStatus.DONE in statuses
    for response, status in zip(responses, statuses):
        if status is JobStatus.DONE:
            assert len(response.json()["images"]) == 1
    assert server.runtime.queue.current is None and server.runtime.queue.pending() == []
    assert requests.get(f"{server.api}/progress", timeout=5).json()["progress"] == 0
