"""Restarting the app (modules/restart.py): the Extensions tab's Restart button, A1111's /sdapi/v1/server-restart
(with --api-server-stop), and webui.sh starting app.py again on the restart exit code and only on it."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modules import extension_git, restart
from modules.api import create_api_app
from tests.test_api import make_runtime

ROOT = Path(__file__).resolve().parents[1]


def exits(monkeypatch) -> list[int]:
    """Exit codes restart.exit_soon would end the process with (recorded instead, at once)."""
    codes: list[int] = []
    done = threading.Event()

    def fake_exit_soon(code, exit=None, delay=0.0):
        codes.append(code)
        done.set()

    monkeypatch.setattr(restart, "exit_soon", fake_exit_soon)
    return codes


def test_restart_needs_webui_sh_and_ends_with_the_restart_code(monkeypatch):
    monkeypatch.delenv(restart.ENV, raising=False)
    with pytest.raises(RuntimeError, match="not started with ./webui.sh"):
        restart.restart()
    monkeypatch.setenv(restart.ENV, "1")
    ended = threading.Event()
    codes = []
    restart.restart(exit=lambda code: (codes.append(code), ended.set()), delay=0.01)
    assert ended.wait(5) and codes == [restart.RESTART_EXIT_CODE]


def test_restart_button_says_why_it_cannot_and_restarts_when_it_can(tmp_path, monkeypatch):
    runtime = make_runtime(tmp_path)
    try:
        codes = exits(monkeypatch)
        monkeypatch.delenv(restart.ENV, raising=False)
        assert "./webui.sh" in extension_git.ui_restart(runtime.args) and codes == []
        monkeypatch.setenv(restart.ENV, "1")
        assert "Restarting" in extension_git.ui_restart(runtime.args)
        assert codes == [restart.RESTART_EXIT_CODE]
        listening = make_runtime(tmp_path / "b", "--listen", "--insecure-listen")     # remote: refused as installs
        try:
            assert "disabled because this server listens" in extension_git.ui_restart(listening.args)
            assert codes == [restart.RESTART_EXIT_CODE]
        finally:
            listening.queue.close()
    finally:
        runtime.queue.close()


def test_server_routes_only_with_api_server_stop(tmp_path, monkeypatch):
    codes = exits(monkeypatch)
    runtime = make_runtime(tmp_path)
    with TestClient(create_api_app(runtime)) as client:
        assert client.post("/sdapi/v1/server-restart").status_code == 404
        assert client.post("/sdapi/v1/server-stop").status_code == 404
    runtime.queue.close()
    runtime = make_runtime(tmp_path / "b", "--api-server-stop")
    with TestClient(create_api_app(runtime)) as client:
        monkeypatch.delenv(restart.ENV, raising=False)
        r = client.post("/sdapi/v1/server-restart")
        assert r.status_code == 409 and "./webui.sh" in r.text and codes == []
        monkeypatch.setenv(restart.ENV, "1")
        assert client.post("/sdapi/v1/server-restart").status_code == 200
        assert client.post("/sdapi/v1/server-stop").status_code == 200
        assert codes == [restart.RESTART_EXIT_CODE, 0]
    runtime.queue.close()


def fake_install(tmp_path: Path, app_script: str) -> Path:
    """webui.sh in a folder whose venv is already set up (stamp matches) and whose "python" runs ``app_script``."""
    for name in ("webui.sh", "requirements.txt", "requirements-nodeps.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("#!/usr/bin/env bash\n" + app_script)
    python.chmod(0o755)
    want = hashlib.sha256((ROOT / "requirements.txt").read_bytes() + (ROOT / "requirements-nodeps.txt").read_bytes())
    (venv / ".requirements.sha256").write_text(want.hexdigest() + "\n")
    return tmp_path / "webui.sh"


def test_webui_sh_starts_the_app_again_on_the_restart_code_only(tmp_path):
    # the stand-in app logs its arguments and SD_WEBUI_RESTART; it asks for a restart once, then exits with 3
    script = fake_install(tmp_path, f"""
echo "$SD_WEBUI_RESTART $*" >> runs.txt
[ "$(wc -l < runs.txt)" -ge 2 ] && exit 3
exit {restart.RESTART_EXIT_CODE}
""")
    done = subprocess.run(["bash", str(script), "--api", "--port", "7999"], cwd=tmp_path, env={**os.environ},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert (tmp_path / "runs.txt").read_text().splitlines() == ["1 app.py --api --port 7999"] * 2
    assert "Restarting the web UI" in done.stdout


def test_webui_sh_passes_sigterm_to_the_app(tmp_path):
    script = fake_install(tmp_path, """
trap 'echo terminated >> signals.txt; exit 0' TERM
echo started >> signals.txt
while true; do sleep 0.1; done
""")
    proc = subprocess.Popen(["bash", str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "signals.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert (tmp_path / "signals.txt").read_text().split() == ["started", "terminated"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
