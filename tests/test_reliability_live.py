"""Reliability with the real generation path (tiny SD1 checkpoint, 64 px, 1-2 steps): per-request checkpoint
overrides, warnings for missing networks in ``info``, and a bounded soak of mixed valid / invalid requests."""
from __future__ import annotations

import base64
import gc
import json
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from fastapi.testclient import TestClient

from modules.api import create_api_app
from modules.paths import Paths
from tests.test_api_live import start_runtime

API = "/sdapi/v1"
SMALL = {"width": 64, "height": 64, "steps": 1, "seed": 1}
SOAK_REQUESTS = 256


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_models_dir, tiny_configs_dir):
    """A real runtime over its own checkpoint folder holding ``sd1.safetensors`` and a copy ``other.safetensors``."""
    tmp_path = tmp_path_factory.mktemp("reliability-live")
    models = tmp_path / "models-data"
    ckpt_dir = Paths.from_args(data_dir=models).ckpt_dir
    ckpt_dir.mkdir(parents=True)
    source = Paths.from_args(data_dir=tiny_models_dir).ckpt_dir / "sd1.safetensors"
    shutil.copy(source, ckpt_dir / "sd1.safetensors")
    shutil.copy(source, ckpt_dir / "other.safetensors")
    runtime = start_runtime(tmp_path / "data", models, tiny_configs_dir)
    with TestClient(create_api_app(runtime)) as client:
        yield runtime, client
    runtime.queue.close()


def test_override_settings_picks_the_checkpoint_for_one_request(live):
    runtime, client = live
    assert runtime.models.current.sd_checkpoint_info.name == "sd1.safetensors"
    assert runtime.opts.sd_checkpoints_limit == 1  # so restoring unloads the override's model

    def generate(**fields) -> str:
        r = client.post(f"{API}/txt2img", json={**SMALL, **fields})
        assert r.status_code == 200, r.text
        return json.loads(r.json()["info"])["infotexts"][0]

    assert "Model: other," in generate(override_settings={"sd_model_checkpoint": "other"})
    assert runtime.models.current.sd_checkpoint_info.name == "sd1.safetensors"  # restored afterwards
    assert "Model: other," in generate(override_settings={"sd_model_checkpoint": "other.safetensors"},
                                       override_settings_restore_afterwards=False)
    assert runtime.models.current.sd_checkpoint_info.name == "other.safetensors"  # kept, as A1111 does
    assert runtime.opts.sd_model_checkpoint == runtime.models.current.sd_checkpoint_info.title
    assert "Model: other," in generate()


def test_a_missing_lora_is_a_warning_in_info(live):
    runtime, client = live
    r = client.post(f"{API}/txt2img", json={**SMALL, "prompt": "a red circle <lora:no-such-lora:1>"})
    assert r.status_code == 200, r.text
    assert "Lora not found: no-such-lora" in json.loads(r.json()["info"])["comments"]


def soak_requests(n: int) -> list[tuple[str, str, object]]:
    """``n`` mixed requests: (method, route, JSON body or raw text). About one in eight generates (1 step, 64 px);
    the rest are invalid in the ways the probe found, plus interrupts, skips and status calls."""
    bad_png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()
    kinds = [
        ("post", "txt2img", {**SMALL, "prompt": "a red circle"}),
        ("post", "txt2img", '{"prompt": "<lora:\\ud800:1>"}'),
        ("post", "txt2img", '{"prompt": "a\\ud800b", "steps": 1}'),
        ("post", "txt2img", '{"cfg_scale": NaN}'),
        ("post", "txt2img", {**SMALL, "sampler_name": "no such sampler"}),
        ("post", "txt2img", {**SMALL, "infotext": "A" * 300_000}),
        ("post", "txt2img", {**SMALL, "override_settings": {"sd_vae": "nope"}}),
        ("post", "img2img", {**SMALL, "init_images": [bad_png]}),
        ("post", "png-info", {"image": bad_png}),
        ("post", "options", {"_path": "/tmp/x"}),
        ("post", "interrupt", None),
        ("post", "skip", None),
        ("get", "progress", None),
        ("get", "queue", None),
        ("get", "history", None),
        ("post", "txt2img", {**SMALL, "width": 7}),
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


def send(client: TestClient, method: str, route: str, body: object):
    if isinstance(body, str):
        return client.post(f"{API}/{route}", content=body.encode(), headers={"content-type": "application/json"})
    if method == "get":
        return client.get(f"{API}/{route}")
    return client.post(f"{API}/{route}", json=body)


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


@pytest.mark.timeout(300)
def test_soak_mixed_requests_leave_the_worker_alive_and_every_job_accounted_for(live):
    runtime, client = live
    for method, route, body in soak_requests(16):  # warm-up: every kind once
        send(client, method, route, body)
    before, jobs_before = rss(), len(runtime.queue.history(limit=1000))
    requests = soak_requests(SOAK_REQUESTS)
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda r: send(client, *r), requests))
    elapsed = time.monotonic() - started
    statuses = Counter(r.status_code for r in responses)
    assert all(code < 500 for code in statuses), [r.text[:200] for r in responses if r.status_code >= 500][:5]
    rounds = SOAK_REQUESTS // 16  # each round: 1 generation, 5 control or status calls, 9 refusals (422), 1 (400)
    assert statuses[200] >= rounds * 6 and statuses[422] >= rounds * 9 and statuses[400] >= rounds, statuses
    assert runtime.queue.worker_alive and runtime.queue.current is None and runtime.queue.pending() == []
    generations = sum(1 for (_, route, body), r in zip(requests, responses) if route == "txt2img" and r.status_code in
                      (200, 409) and isinstance(body, dict) and "infotext" not in body)
    history = runtime.queue.history(limit=1000)
    assert len(history) - jobs_before == generations  # every accepted job has its row, and only those
    assert all(e.status.value in ("done", "interrupted", "cancelled") for e in history), Counter(e.status for e in history)
    after = rss()
    assert after <= before * 1.10, f"RSS grew from {before >> 20} MB to {after >> 20} MB over the soak"
    print(f"soak: {len(requests)} requests in {elapsed:.1f} s, {dict(statuses)}, RSS {before >> 20} -> {after >> 20} MB")
