"""Reliability and security guards (issue #20): auth that cannot be bypassed, the Host allow-list, limits that keep
one request from taking the box, outputs confined to the data dir, extensions that cannot stop the server."""
from __future__ import annotations

import base64
import io
import json
import subprocess
import threading
import time
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import app as webui
from modules import cmd_args
from modules.api import create_api_app
from tests.test_api import API, make_runtime

REPO = Path(__file__).resolve().parent.parent


# -- auth ---------------------------------------------------------------------------------------------------------------
MALFORMED_AUTH = ["nocolon", ":", ":pw", " ", ",", "", "user:", "alice:pw,", "alice:pw,nocolon", " :pw", "user: "]


@pytest.mark.parametrize("flag", ["--api-auth", "--gradio-auth"])
@pytest.mark.parametrize("value", MALFORMED_AUTH)
def test_a_malformed_credential_is_a_start_up_error_naming_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cmd_args.parse_args(["--listen", "--api", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "user:password" in err
    if value.partition(":")[2].strip():
        assert value.partition(":")[2] not in err.replace("user:password", ""), "the password is never printed"


def test_the_server_refuses_to_start_with_a_malformed_credential():
    """The probe's bypass: `--listen --nowebui --api-auth nocolon` served the API to the network with no login."""
    for value in ("nocolon", ":", ":pw", " ", ","):
        r = subprocess.run([sys.executable, "app.py", "--listen", "--nowebui", "--api-auth", value, "--port", "9"],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (value, r.stderr)
        assert "--api-auth" in r.stderr


@pytest.mark.parametrize("flags, refused", [
    (["--listen", "--nowebui"], "without authentication"),
    (["--listen", "--api", "--gradio-auth", "u:p"], "API would be exposed"),
    (["--listen"], "without authentication"),
    (["--server-name", "10.0.0.5", "--api"], "without authentication"),
    (["--listen", "--api", "--api-auth", "u:p"], None),        # the UI falls back to the API users
    (["--listen", "--gradio-auth", "u:p"], None),
    (["--listen", "--nowebui", "--api-auth", "u:p"], None),
    (["--listen", "--api", "--insecure-listen"], None),
    (["--api"], None),                                           # loopback: A1111's defaults
])
def test_listen_needs_credentials_for_every_surface_it_serves(flags, refused):
    problem = cmd_args.check_network_exposure(cmd_args.parse_args(flags))
    assert (problem is None) if refused is None else (refused in problem), problem


def test_the_ui_login_takes_the_api_users_when_it_has_none_of_its_own():
    args = cmd_args.parse_args(["--listen", "--api", "--api-auth", "alice:s3cret"])
    assert cmd_args.ui_credentials(args) == [("alice", "s3cret")]
    args = cmd_args.parse_args(["--api", "--api-auth", "alice:s3cret", "--gradio-auth", "bob:pw"])
    assert cmd_args.ui_credentials(args) == [("bob", "pw")] and cmd_args.api_credentials(args) == [("alice", "s3cret")]


@pytest.fixture
def app_with(tmp_path):
    """The app as `app.py` builds it (API only, so no Gradio page is built), for the given extra flags."""
    made = []

    def build(*flags: str) -> TestClient:
        runtime = make_runtime(tmp_path, *flags)
        made.append(runtime)
        return TestClient(webui.build_app(runtime.args, runtime), base_url="http://127.0.0.1:7861")

    yield build
    for runtime in made:
        runtime.queue.close()


def test_docs_and_openapi_need_the_api_credentials(app_with):
    with app_with("--api-auth", "alice:s3cret") as client:
        for path in ("/docs", "/openapi.json", "/docs/oauth2-redirect", "/openapi.json/"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, auth=("alice", "wrong")).status_code == 401, path
        assert client.get("/openapi.json", auth=("alice", "s3cret")).json()["paths"]
        assert client.get("/docs", auth=("alice", "s3cret")).status_code == 200


def test_without_api_auth_docs_stay_open_on_loopback(app_with):
    with app_with() as client:
        assert client.get("/openapi.json").status_code == 200


# -- Host header ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host, status", [
    ("127.0.0.1:7861", 200), ("localhost:7861", 200), ("LOCALHOST", 200), ("[::1]:7861", 200),
    ("evil.example:7861", 400), ("127.0.0.1.evil.example", 400), ("", 400), ("localhost.:7861", 400),
])
def test_a_request_for_another_host_is_refused(app_with, host, status):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends `Host: evil.example`."""
    with app_with() as client:
        for path in (f"{API}/options", "/openapi.json"):
            r = client.get(path, headers={"Host": host})
            assert r.status_code == status, (host, path, r.text)
            if status == 400:
                assert "--allowed-hosts" in r.json()["detail"]


def test_allowed_hosts_adds_names_and_star_allows_any(app_with):
    with app_with("--allowed-hosts", "box.lan,*.example.org") as client:
        for host, status in (("box.lan", 200), ("a.example.org:7861", 200), ("example.org", 400), ("x.lan", 400),
                             ("localhost", 200)):
            assert client.get(f"{API}/options", headers={"Host": host}).status_code == status, host
    with app_with("--allowed-hosts", "*") as client:
        assert client.get(f"{API}/options", headers={"Host": "anything.example"}).status_code == 200


def test_listening_on_every_interface_answers_to_this_machines_names():
    hosts = cmd_args.allowed_hosts(cmd_args.parse_args(["--listen", "--insecure-listen"]))
    assert "0.0.0.0" in hosts and "localhost" in hosts and "127.0.0.1" in hosts
    import socket

    assert socket.gethostname().lower() in hosts
    assert "evil.example" not in hosts


# -- limits -------------------------------------------------------------------------------------------------------------
@pytest.fixture
def api(tmp_path):
    runtime = make_runtime(tmp_path)
    with TestClient(create_api_app(runtime)) as client:
        client.runtime = runtime
        yield client
        runtime.queue.close()


def png_b64(size: tuple[int, int], mode: str = "RGB") -> str:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def refused(r, field: str, *words: str) -> None:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(field in map(str, d["loc"]) for d in detail), detail
    text = json.dumps(detail)
    for word in words:
        assert word in text, (word, text)


@pytest.mark.parametrize("fields, field, words", [
    ({"width": 512, "height": 512, "enable_hr": True, "hr_scale": 8}, "hr_scale", ["4096x4096", "2048"]),
    ({"width": 2048, "height": 2048, "enable_hr": True, "hr_scale": 1.5}, "hr_scale", ["3072x3072"]),
    ({"width": 1024, "height": 1024, "enable_hr": True, "hr_resize_x": 2048, "hr_resize_y": 2048}, None, []),
    ({"n_iter": 1000, "batch_size": 64}, "n_iter", ["64000", "limit_images_per_job"]),
    ({"n_iter": 16, "batch_size": 64}, "n_iter", ["1024 images"]),
    ({"n_iter": 2, "batch_size": 2}, None, []),
    ({"prompt": " AND ".join(["a red circle"] * 2000)}, "prompt", ["2000 AND parts", "limit_and_parts"]),
    ({"prompt": "red " * 1_000_000}, "prompt", ["tokens", "limit_prompt_tokens"]),
    ({"prompt": "masterpiece, " * 600}, "prompt", ["1200 tokens", "limit_prompt_tokens"]),
    ({"negative_prompt": "blurry " * 1200}, "negative_prompt", ["limit_prompt_tokens"]),
    ({"enable_hr": True, "hr_prompt": "x AND " * 30, "width": 64, "height": 64}, "hr_prompt", ["limit_and_parts"]),
    ({"override_settings": {"limit_max_pixels": 10**9}}, "limit_max_pixels", ["server limit"]),
])
def test_a_job_over_a_limit_is_a_422_naming_it(api, fields, field, words):
    r = api.post(f"{API}/txt2img", json={"steps": 1, **fields})
    if field is None:
        assert r.status_code == 200, r.text
    else:
        refused(r, field, *words)
        assert api.get(f"{API}/history").json() == [], "a refused request is never queued"


def test_limits_are_settings_the_owner_can_set(api):
    body = {"width": 512, "height": 512, "enable_hr": True, "hr_scale": 3, "steps": 1}
    assert api.post(f"{API}/txt2img", json=body).status_code == 200
    assert api.post(f"{API}/options", json={"limit_max_pixels": 1024 * 1024}).status_code == 200
    refused(api.post(f"{API}/txt2img", json=body), "hr_scale", "1536x1536", "limit_max_pixels")
    assert api.post(f"{API}/options", json={"limit_max_pixels": 1536 * 1536}).status_code == 200
    assert api.post(f"{API}/txt2img", json=body).status_code == 200


def test_init_images_are_counted_and_their_pixels_bounded_before_decoding(api, monkeypatch):
    small = png_b64((8, 8))
    refused(api.post(f"{API}/img2img", json={"init_images": [small] * 17}), "init_images", "limit_init_images")
    big = png_b64((4096, 4096), "RGBA")          # a 4096² RGBA PNG of zeros is a few kB, ~67 MB decoded
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda im: decoded.append((id(im), im.size)) or real_load(im))
    r = api.post(f"{API}/img2img", json={"init_images": [big] * 16, "steps": 1})
    refused(r, "init_images", "4096x4096", "limit_input_pixels")
    assert len({d for d in decoded if d[1] == (4096, 4096)}) == 2, "the third is refused from its header, undecoded"
    assert api.post(f"{API}/img2img", json={"init_images": [big], "mask": small, "steps": 1, "width": 64,
                                            "height": 64}).status_code == 200


def test_the_worker_checks_the_limits_too(tiny_sd1_model, tmp_path):
    """Jobs from the UI or from a script reach processing without the API: the same limits hold there (the size
    of a request that left it to the model is only known on the worker)."""
    from modules.limits import LimitError
    from modules.options import Options
    from modules.processing import StableDiffusionProcessingTxt2Img, process_images
    from modules.progress import JobState

    calls = []
    handle = tiny_sd1_model.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        for kw, field in (({"width": 512, "height": 512, "enable_hr": True, "hr_scale": 8}, "hr_scale"),
                          ({"n_iter": 101, "batch_size": 10}, "n_iter"),
                          ({"override_settings": {"limit_images_per_job": 5000}, "n_iter": 200}, "limit_images")):
            p = StableDiffusionProcessingTxt2Img(prompt="a red circle", steps=2, do_not_save_samples=True, **kw)
            p.sd_model, p.opts, p.state = tiny_sd1_model, Options(limit_images_per_job=1000), JobState()
            with pytest.raises(LimitError, match=field):
                process_images(p)
    finally:
        handle.remove()
    assert calls == [], "refused before any UNet step"


# -- outputs stay in the data dir -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["/", "/tmp/elsewhere", "../outside", "outputs/../../outside", "outputs/link"])
def test_output_folders_outside_the_data_dir_are_refused(api, value, tmp_path):
    (tmp_path / "outputs" / "link").symlink_to("/tmp", target_is_directory=True)
    before = api.get(f"{API}/options").json()
    r = api.post(f"{API}/options", json={"outdir_samples": value, "jpeg_quality": 50})
    refused(r, "outdir_samples", "outside the data folder", "--allowed-output-dirs")
    assert api.get(f"{API}/options").json() == before, "a refused request changes nothing"
    r = api.post(f"{API}/txt2img", json={"steps": 1, "override_settings": {"outdir_txt2img_samples": value}})
    refused(r, "outdir_txt2img_samples", "outside the data folder")
    r = api.post(f"{API}/train/embedding", json={"embedding_name": "x", "learn_rate": "0.005", "data_root": ".",
                                                 "log_directory": value})
    refused(r, "log_directory", "outside the data folder")


def test_allowed_output_dirs_are_accepted(tmp_path):
    other = tmp_path.parent / f"{tmp_path.name}-allowed"
    runtime = make_runtime(tmp_path, "--allowed-output-dirs", f"{other}, /nonexistent-x")
    with TestClient(create_api_app(runtime)) as client:
        for value in (str(other / "samples"), "outputs/mine", str(tmp_path / "x")):
            assert client.post(f"{API}/options", json={"outdir_samples": value}).status_code == 200, value
        refused(client.post(f"{API}/options", json={"outdir_samples": str(tmp_path.parent)}), "outdir_samples")
        runtime.queue.close()


def test_history_files_never_follow_a_link_out_of_the_outputs(api, tmp_path):
    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_text("TOP-SECRET")
    link = tmp_path / "outputs" / "innocent.png"
    link.symlink_to(secret)
    api.runtime.extra_files = [str(link), str(secret)]
    api.runtime.opts.outdir_samples = "/"    # as a hand-edited config.json could say
    r = api.post(f"{API}/txt2img", json={"steps": 1, "force_task_id": "task(links)"})
    assert r.status_code == 200
    for index in (0, 1):
        r = api.get(f"{API}/history/task(links)/files/{index}")
        assert r.status_code == 404 and b"TOP-SECRET" not in r.content


def test_a_script_cannot_save_outside_the_data_dir(tiny_sd1_model, tmp_path):
    """Prompts from file's `--outpath_samples /x` line option (or any script setting p.outpath_samples): the job
    fails naming it, before any work, and nothing is written there."""
    from modules.options import Options
    from modules.processing import StableDiffusionProcessingTxt2Img, process_images
    from modules.progress import JobState

    data_dir, outside = tmp_path / "data", tmp_path / "outside"
    (data_dir / "outputs").mkdir(parents=True)
    (data_dir / "outputs" / "link").symlink_to(outside, target_is_directory=True)
    for field, value in (("outpath_samples", str(outside)), ("outpath_grids", "../outside"),
                         ("outpath_samples", "outputs/link/x")):
        p = StableDiffusionProcessingTxt2Img(prompt="a red circle", steps=1, width=64, height=64, n_iter=2,
                                             **{field: value})
        p.sd_model, p.opts, p.state, p.data_dir = tiny_sd1_model, Options(), JobState(), str(data_dir)
        with pytest.raises(ValueError, match=f"{field}.*outside the data folder"):
            process_images(p)
    assert not outside.exists()
    p = StableDiffusionProcessingTxt2Img(prompt="a red circle", steps=1, width=64, height=64, outpath_samples="mine")
    p.sd_model, p.opts, p.state, p.data_dir = tiny_sd1_model, Options(), JobState(), str(data_dir)
    assert process_images(p).files[0].startswith(str(data_dir / "mine"))


# -- extensions cannot stop the server -------------------------------------------------------------------------------
from modules import extensions, script_callbacks, scripts  # noqa: E402
from modules.job_queue import JobOutput, JobQueue  # noqa: E402
from tests.test_extensions import ext_dir, write_extension  # noqa: E402,F401 - the fixture
from tests.test_scripts import make_p  # noqa: E402

EXITS = """
    import sys, time
    from modules import script_callbacks, scripts

    class Exits(scripts.Script):
        def title(self):
            return "Exits"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            {ui}

        def process(self, p, *args):
            {process}

    def saved(params):
        {saved}

    def started(demo, app):
        {started}

    script_callbacks.on_image_saved(saved, name="saved")
    script_callbacks.on_app_started(started, name="started")
"""


def extension(root: Path, name: str, **bodies: str) -> None:
    code = {hook: "return []" if hook == "ui" else "pass" for hook in ("ui", "process", "saved", "started")}
    write_extension(root, name, EXITS.format(**{**code, **bodies}))


def run_on_worker(queue: JobQueue, model, runner, **kw):
    """A job on the queue's worker, saving its image (so that on_image_saved is called)."""
    def job(state):
        p = make_p(model, runner, **kw)
        p.state = state
        p.do_not_save_samples, p.opts.samples_save = False, True
        return JobOutput(value=runner.run(p))

    return queue.submit("txt2img", {}, job)


@pytest.mark.parametrize("hook, body", [
    ("process", "sys.exit(3)"), ("process", "raise KeyboardInterrupt"), ("saved", "sys.exit()"),
    ("process", "raise GeneratorExit"), ("saved", "raise SystemExit('bye')"),
])
def test_an_extension_that_exits_fails_alone_and_the_worker_goes_on(ext_dir, tiny_sd1_model, tmp_path, hook, body):
    extension(ext_dir, "quitter", **{hook: body})
    scripts.load_scripts(ext_dir)
    queue = JobQueue(tmp_path / "history.sqlite3")
    try:
        processed = run_on_worker(queue, tiny_sd1_model, scripts.scripts_txt2img, outpath_samples=str(tmp_path)) \
            .result(60).value
        assert len(processed.images) == 1
        status = {item["name"]: item for item in extensions.api_list()}["quitter"]
        assert status["status"] == "failed" and ("SystemExit" in status["problems"][0] or
                                                 "KeyboardInterrupt" in status["problems"][0] or
                                                 "GeneratorExit" in status["problems"][0])
        again = run_on_worker(queue, tiny_sd1_model, scripts.scripts_txt2img, outpath_samples=str(tmp_path))
        assert len(again.result(60).value.images) == 1, "the worker is alive"
    finally:
        queue.close()


def test_exits_while_the_app_starts_are_contained(ext_dir):
    """`sys.exit()` in ui() or on_app_started stopped the app from starting."""
    import gradio as gr
    from fastapi import FastAPI

    extension(ext_dir, "quitter", ui="sys.exit(1)", started="sys.exit(2)")
    scripts.load_scripts(ext_dir)
    with gr.Blocks():
        scripts.scripts_txt2img.setup_ui()
    quitter = next(e for e in extensions.extensions if e.name == "quitter")
    assert quitter.failed and "ui() of script 'Exits'" in quitter.problems[0] and "SystemExit: 1" in quitter.problems[0]
    extension(ext_dir, "starter", started="sys.exit(2)")
    scripts.load_scripts(ext_dir)
    script_callbacks.app_started_callback(None, FastAPI())
    starter = next(e for e in extensions.extensions if e.name == "starter")
    assert starter.failed and "SystemExit: 2" in starter.problems[0]


def test_a_hook_that_never_returns_is_abandoned_and_its_extension_disabled(ext_dir, tiny_sd1_model, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(extensions, "hook_timeout", 1.0)
    extension(ext_dir, "sleeper", process="time.sleep(3600)")
    extension(ext_dir, "saver", saved="time.sleep(3600)")
    scripts.load_scripts(ext_dir)
    queue = JobQueue(tmp_path / "history.sqlite3")
    try:
        started = time.monotonic()
        processed = run_on_worker(queue, tiny_sd1_model, scripts.scripts_txt2img, outpath_samples=str(tmp_path)) \
            .result(60).value
        assert time.monotonic() - started < 20
        assert len(processed.images) == 1
        assert "did not return within 1 s" in processed.comments
        failed = {e.name for e in extensions.extensions if e.failed}
        assert failed == {"sleeper", "saver"}
        started = time.monotonic()
        run_on_worker(queue, tiny_sd1_model, scripts.scripts_txt2img, outpath_samples=str(tmp_path)).result(60)
        assert time.monotonic() - started < 10, "the disabled extensions are not waited for again"
    finally:
        queue.close()


def test_interrupt_and_cancel_stop_a_job_stuck_in_an_extension(ext_dir, tiny_sd1_model, tmp_path):
    extension(ext_dir, "sleeper", process="time.sleep(3600)")
    scripts.load_scripts(ext_dir)
    queue = JobQueue(tmp_path / "history.sqlite3")
    try:
        def sleeping() -> int:
            return sum(t.name == "extension-process" and t.is_alive() for t in threading.enumerate())

        for stop in (lambda job: queue.interrupt(), lambda job: queue.cancel(job.id)):
            asleep = sleeping()
            job = run_on_worker(queue, tiny_sd1_model, scripts.scripts_txt2img, outpath_samples=str(tmp_path),
                                steps=50)
            while sleeping() == asleep:   # until the job is inside the hook
                time.sleep(0.05)
            started = time.monotonic()
            stop(job)
            try:
                job.result(30)
            except Exception:  # noqa: BLE001 - cancelled or interrupted: either way it ended
                pass
            assert time.monotonic() - started < 5
        assert not next(e for e in extensions.extensions if e.name == "sleeper").failed, \
            "stopped by the user, not by its own fault"
    finally:
        queue.close()


# -- interrupt within a step at any size --------------------------------------------------------------------------------
def test_an_interrupt_stops_a_large_vae_decode_within_seconds(tiny_sd1_model):
    """1024² on the tiny checkpoint: the whole-image decode took 100 s (its attention is quadratic in the latent
    area) and could not be stopped; now it is tiled, and an interrupt stops it within one block or tile."""
    import torch

    from modules.processing import DecodeInterrupted, decode_latents
    from modules.progress import JobState

    model, state = tiny_sd1_model, JobState()
    latents = torch.randn(2, 4, 1024 // model.vae_scale_factor, 1024 // model.vae_scale_factor)
    blocks = []
    handle = model.vae.decoder.conv_in.register_forward_pre_hook(lambda *a: blocks.append(time.monotonic()))
    interrupted_at = []
    timer = threading.Thread(target=lambda: (wait_for(lambda: len(blocks) >= 3), time.sleep(0.2), state.interrupt(),
                                             interrupted_at.append(time.monotonic())))
    try:
        timer.start()
        with torch.inference_mode(), pytest.raises(DecodeInterrupted):
            decode_latents(model, latents, state)
        stopped = time.monotonic()
    finally:
        handle.remove()
        timer.join()
    assert stopped - interrupted_at[0] < 2.0, "stopped within 2 s of the interrupt"
    assert not model.vae.use_tiling, "the model's own decode settings are restored"
    with torch.inference_mode():
        small = decode_latents(model, latents[:1, :, :16, :16], JobState())
    assert small[0].size == (64, 64)


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


# -- memory comes back after a failure ------------------------------------------------------------------------------------
def test_a_failed_job_frees_what_it_held(tiny_sd1_model, tmp_path, monkeypatch):
    """An out-of-memory error left RSS at 8 GB: the error's traceback kept the job's tensors alive, and the next job
    failed too. Now the failed job's frames are cleared before the error leaves the worker."""
    import gc
    import weakref

    import torch

    from modules import processing
    from modules.options import Options
    from modules.paths import Paths
    from modules.processing import StableDiffusionProcessingTxt2Img
    from modules.progress import JobState
    from modules.runtime import Runtime

    held = []

    def exhausting_denoise(*args, **kwargs):
        activations = torch.ones(64, 1024, 1024)    # 256 MB that only this frame refers to
        held.append(weakref.ref(activations))
        raise RuntimeError("CPU out of memory (simulated)")

    monkeypatch.setattr(processing, "cfg_denoise", exhausting_denoise)
    paths = Paths.from_args(data_dir=tmp_path)
    paths.ensure()
    models = type("Models", (), {"current": tiny_sd1_model})()
    runtime = Runtime(args=cmd_args.parse_args([]), paths=paths, opts=Options(samples_save=False), models=models)
    p = StableDiffusionProcessingTxt2Img(prompt="a red circle", steps=2, width=64, height=64)
    with pytest.raises(RuntimeError, match="out of memory") as failure:
        runtime.run(p, JobState())
    kept_error = failure.value                      # as the job's future keeps it
    gc.collect()
    assert held and held[0]() is None, "the tensor was freed although the error is still referenced"
    assert kept_error.__traceback__ is not None     # the traceback (its lines) is still there for the log
