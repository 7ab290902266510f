"""``kill -9`` of the running app, then a restart on the same data dir: every job that was running or queued is in
the history, marked "interrupted by restart", with the files it had saved; ``/queue/{id}`` says so too."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.test_browser import REPO, free_port

API = "/sdapi/v1"


def start_app(data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--nowebui", "--api", "--data-dir", str(data_dir),
                                 "--port", str(port)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}{API}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the app exited:\n" + log.read_text()[-3000:]
        try:
            if requests.get(f"{url}/progress", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            time.sleep(0.3)
    proc.kill()
    pytest.fail("the app did not answer:\n" + log.read_text()[-3000:])


def wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.timeout(600)
def test_kill_9_then_restart_marks_the_lost_jobs(tmp_path, tiny_models_dir, tiny_configs_dir):
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    ckpt_dir = data_dir / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    shutil.copy(tiny_models_dir / "models" / "Stable-diffusion" / "sd1.safetensors", ckpt_dir)
    shutil.copytree(tiny_configs_dir, data_dir / "configs")
    proc, url = start_app(data_dir, log)
    try:
        long_job = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 1, "n_iter": 500,
                    "save_images": True, "force_task_id": "task(long)"}
        queued = [{"prompt": "a blue square", "width": 64, "height": 64, "steps": 1, "force_task_id": f"task(q{i})"}
                  for i in range(3)]
        post_in_background(url, long_job)  # each request waits for its job

        def long_job_saved_files() -> bool:
            r = requests.get(f"{url}/history/task(long)", timeout=5)
            return r.status_code == 200 and r.json()["status"] == "running" and len(r.json()["files"]) >= 2

        wait_for(long_job_saved_files, "the long job to save images")
        for body in queued:
            post_in_background(url, body)
        wait_for(lambda: len(requests.get(f"{url}/queue", timeout=5).json()["pending"]) == 3, "3 queued jobs")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    proc, url = start_app(data_dir, log)
    try:
        history = {e["id"]: e for e in requests.get(f"{url}/history", timeout=5).json()}
        for task_id in ("task(long)", "task(q0)", "task(q1)", "task(q2)"):
            entry = history[task_id]
            assert entry["status"] == "interrupted" and entry["error"] == "interrupted by restart", entry
            progress = requests.get(f"{url}/queue/{task_id}", timeout=5).json()
            assert progress["completed"] and progress["textinfo"] == "interrupted by restart"
        files = history["task(long)"]["files"]
        assert len(files) >= 2
        for index in range(len(files)):  # the saved PNGs are linked to the job and served
            r = requests.get(f"{url}/history/task(long)/files/{index}", timeout=5)
            assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
        r = requests.post(f"{url}/txt2img", json={"prompt": "after", "width": 64, "height": 64, "steps": 1},
                          timeout=120)
        assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.wait(10)


def post_in_background(url: str, body: dict) -> None:
    def post() -> None:
        try:
            requests.post(f"{url}/txt2img", json=body, timeout=300)
        except requests.RequestException:
            pass  # the server is killed while this request waits

    threading.Thread(target=post, daemon=True).start()
