"""Reliability of the API edge: no request can stop the job worker, freeze the event loop or make a route fail with
a 5xx (issue #20). Runs on ``test_api``'s fake runtime (the real Runtime, queue and routes; a fast stand-in for
sampling)."""
from __future__ import annotations

import base64
import io
import sqlite3
import threading
import time
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from modules.api import create_api_app
from tests.test_api import API, SMALL, builtin_scripts, client, make_runtime, runtime  # noqa: F401 - fixtures

JSON = {"content-type": "application/json"}


def raw_post(client: TestClient, route: str, text: str):
    """POST a JSON body written by hand (so that ``\\ud800`` escapes and NaN literals reach the server as sent)."""
    return client.post(f"{API}/{route}", content=text.encode("ascii"), headers=JSON)


def assert_names(response, status: int, *loc) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert any(list(err["loc"]) == ["body", *loc] for err in detail), detail


def works(client: TestClient) -> None:
    r = client.post(f"{API}/txt2img", json={**SMALL, "prompt": "after"})
    assert r.status_code == 200, r.text
    assert client.get(f"{API}/history").status_code == 200


@pytest.mark.parametrize("route, body, loc", [
    ("txt2img", '{"prompt": "<lora:\\ud800:1>", "steps": 1}', ("prompt",)),
    ("txt2img", '{"prompt": "a\\ud800b", "steps": 1}', ("prompt",)),
    ("txt2img", '{"override_settings": {"sd_vae\\udc00": 1}}', ("override_settings", "sd_vae\\udc00")),
    ("img2img", '{"init_images": ["x", "\\udfff"]}', ("init_images", 1)),
    ("train/embedding", '{"id_task": "\\ud800", "embedding_name": "e", "data_root": "d"}', ("id_task",)),
    ("options", '{"sd_vae": "\\ud800"}', ("sd_vae",)),
])
def test_lone_surrogates_are_a_422_naming_the_field_and_the_worker_goes_on(client, runtime, route, body, loc):
    assert_names(raw_post(client, route, body), 422, *loc)
    assert runtime.queue.worker_alive
    works(client)


def test_a_surrogate_pair_is_ordinary_text(client, runtime):
    r = raw_post(client, "txt2img", '{"prompt": "cat \\ud83d\\ude00", "width": 64, "height": 64, "steps": 1}')
    assert r.status_code == 200, r.text
    assert runtime.seen[-1].prompt == "cat \U0001F600"


@pytest.mark.parametrize("body, loc", [
    ('{"cfg_scale": NaN}', ()), ('{"seed": Infinity}', ()), ('{"override_settings": {"eta_ddim": -Infinity}}', ()),
    ('{"script_args": [NaN]}', ()),
])
def test_nan_and_infinity_literals_are_a_422(client, body, loc):
    r = raw_post(client, "txt2img", body)
    assert_names(r, 422, *loc)
    assert "not a valid JSON number" in r.text


def test_a_validation_error_never_echoes_what_cannot_be_sent(client):
    r = client.post(f"{API}/txt2img", json={"steps": "x" * 10, "prompt": 5})
    assert r.status_code == 422 and r.json()["detail"]


def test_history_stays_readable_with_a_bad_row_left_by_an_old_version(client, runtime):
    with sqlite3.connect(runtime.paths.history_db) as conn:
        conn.execute("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?)",
                     ("task(old)", "txt2img", '{"prompt": "a\\ud800b"}', "failed", "x\udc80".encode("utf-8",
                      "surrogateescape"), "i", "[]", 1.0, 1.0, 2.0))
    r = client.get(f"{API}/history")
    assert r.status_code == 200, r.text
    assert [e["params"] for e in r.json() if e["id"] == "task(old)"] == [{"prompt": "a\ufffdb"}]
    assert client.get(f"{API}/history/task(old)").status_code == 200
    works(client)


def test_a_used_force_task_id_is_a_409_and_the_first_job_keeps_its_history(client, runtime):
    first = client.post(f"{API}/txt2img", json={**SMALL, "prompt": "first", "force_task_id": "task(mine)",
                                                "save_images": True})
    assert first.status_code == 200
    before = client.get(f"{API}/history/task(mine)").json()
    again = client.post(f"{API}/txt2img", json={**SMALL, "prompt": "second", "force_task_id": "task(mine)",
                                                "save_images": True})
    assert_names(again, 409, "force_task_id")
    assert client.get(f"{API}/history/task(mine)").json() == before
    assert before["params"]["prompt"] == "first"


# -- nothing user-provided blocks the event loop -----------------------------------------------------------------------
def answers_while(client: TestClient, fn) -> tuple[object, float]:
    """Run ``fn`` in the background; meanwhile ``/progress`` must keep answering. Returns ``fn``'s result and the
    slowest ``/progress`` answer. Each answer takes milliseconds on a quiet machine (the old parser froze every route
    for 23 s); the bound is 2 s so that a busy test machine does not decide the test."""
    out: dict[str, object] = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", fn()), daemon=True)
    thread.start()
    slowest = 0.0
    deadline = time.monotonic() + 10
    while thread.is_alive():
        assert time.monotonic() < deadline, "the request took over 10 s"
        t = time.monotonic()
        assert client.get(f"{API}/progress").status_code == 200
        slowest = max(slowest, time.monotonic() - t)
    thread.join()
    assert slowest < 2.0, f"/progress took {slowest:.1f} s while the request was parsed"
    return out["r"], slowest


@pytest.mark.parametrize("text", ["A" * 65536, "A " * 32768, 'a: "' + '\\"' * 30000])
def test_a_64k_infotext_does_not_block_the_server(client, runtime, text):
    r, _ = answers_while(client, lambda: client.post(f"{API}/txt2img", json={**SMALL, "infotext": text}))
    # Parsed (the prompt it yields may then be over the prompt-length limit, a 422 naming that limit).
    assert r.status_code == 200 or (r.status_code == 422 and "limit_prompt_tokens" in r.text), r.text


def test_a_1mb_infotext_is_refused_at_once(client):
    t = time.monotonic()
    r = client.post(f"{API}/txt2img", json={**SMALL, "infotext": "A" * 1_000_000})
    assert_names(r, 422, "infotext")
    assert time.monotonic() - t < 2


def png_bytes(**chunks: tuple[str, bool]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, (value, zipped) in chunks.items():
        info.add_text(key, value, zip=zipped)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def test_png_info_of_a_64k_ztxt_parameters_chunk(client):
    data = png_bytes(parameters=("A" * 65536, True))
    assert len(data) < 1000  # a few hundred bytes that unpack to 64 k characters
    r, _ = answers_while(client, lambda: client.post(f"{API}/png-info",
                                                     json={"image": base64.b64encode(data).decode()}))
    assert r.status_code == 200
    assert r.json()["info"] == "A" * 65536 and r.json()["parameters"]["Prompt"] == "A" * 65536


def text_bomb(kind: bytes) -> bytes:
    """A PNG with a zTXt / iTXt / iCCP chunk that unpacks to 64 MB."""
    base = png_bytes()
    packed = zlib.compress(b"A" * (64 * 1024 * 1024), 9)
    payload = {b"zTXt": b"parameters\0\0" + packed, b"iTXt": b"parameters\0\1\0\0\0" + packed,
               b"iCCP": b"icc\0\0" + packed}[kind]
    chunk = len(payload).to_bytes(4, "big") + kind + payload
    chunk += zlib.crc32(kind + payload).to_bytes(4, "big")
    return base[:33] + chunk + base[33:]  # right after IHDR


@pytest.mark.parametrize("kind", [b"zTXt", b"iTXt", b"iCCP"])
def test_png_text_bombs_are_a_422_naming_the_image(client, kind):
    r = client.post(f"{API}/png-info", json={"image": base64.b64encode(text_bomb(kind)).decode()})
    assert_names(r, 422, "image")
    assert "too large" in r.text


def test_png_info_refuses_a_parameters_text_longer_than_any_infotext(client):
    data = png_bytes(parameters=("Steps: 1, " * 30_000, True))  # 300 k characters, under PIL's 1 MB chunk limit
    r = client.post(f"{API}/png-info", json={"image": base64.b64encode(data).decode()})
    assert_names(r, 422, "image")
    assert "at most" in r.text


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "QOI", "DDS", "GIF", "BMP", "TIFF"])
def test_truncated_images_are_a_422_naming_the_field(client, fmt):
    buf = io.BytesIO()
    image = Image.new("RGBA" if fmt in ("QOI", "DDS") else "RGB", (64, 64), "red")
    try:
        image.save(buf, format=fmt)
    except (KeyError, OSError):
        pytest.skip(f"this Pillow cannot write {fmt}")
    data = base64.b64encode(buf.getvalue()[: len(buf.getvalue()) // 2]).decode()
    assert_names(client.post(f"{API}/png-info", json={"image": data}), 422, "image")
    assert_names(client.post(f"{API}/img2img", json={**SMALL, "init_images": [data]}), 422, "init_images", 0)


# -- settings: only option keys are saved -------------------------------------------------------------------------------
def test_options_never_write_the_file_path_or_unknown_keys_and_work_after_a_restart(tmp_path, caplog):
    import json

    from modules.options import Options
    runtime = make_runtime(tmp_path)
    config = runtime.paths.config_file
    with TestClient(create_api_app(runtime)) as client:
        assert "_path" not in client.get(f"{API}/options").json()
        assert client.post(f"{API}/options", json={"samples_format": "jpg"}).status_code == 200
        assert_names(client.post(f"{API}/options", json={"_path": "/tmp/elsewhere"}), 422, "_path")
        assert_names(client.post(f"{API}/options", json={"no_such_option": 1}), 422, "no_such_option")
        assert str(config) not in json.dumps(client.get(f"{API}/options").json())
    runtime.queue.close()
    saved = json.loads(config.read_text())
    assert saved["samples_format"] == "jpg" and not {"_path", "no_such_option"} & set(saved)

    # A file an old version wrote: its _path is dropped, an unknown key is reported and ignored, POST still saves.
    config.write_text(json.dumps({**saved, "_path": str(tmp_path / "x.json"), "stray_key": 5}))
    restarted = make_runtime(tmp_path)
    assert "'stray_key' is no setting" in caplog.text
    with TestClient(create_api_app(restarted)) as client:
        shown = client.get(f"{API}/options").json()
        assert shown["samples_format"] == "jpg" and not {"_path", "stray_key"} & set(shown)
        assert client.post(f"{API}/options", json={"samples_format": "png"}).status_code == 200
        assert_names(client.post(f"{API}/options", json={"stray_key": 6}), 422, "stray_key")
    restarted.queue.close()
    saved = json.loads(config.read_text())
    assert saved["samples_format"] == "png" and "_path" not in saved and saved["stray_key"] == 5
    assert not (tmp_path / "x.json").exists()

    # A key an extension registers is an option like the app's own.
    Options.extra_known_keys.add("stray_key")
    try:
        opts = Options.load(config)
        assert opts.public_values()["stray_key"] == 5
        opts.set("stray_key", 7)
    finally:
        Options.extra_known_keys.discard("stray_key")


# -- fuzzed input: 4xx, not 5xx ----------------------------------------------------------------------------------------
def test_sd_vae_must_be_a_known_vae(client, runtime):
    r = client.post(f"{API}/txt2img", json={**SMALL, "override_settings": {"sd_vae": "no-such-vae.pt"}})
    assert_names(r, 422, "override_settings", "sd_vae")
    assert "Automatic" in r.text  # the error lists the choices
    assert_names(client.post(f"{API}/options", json={"sd_vae": "../../etc/passwd"}), 422, "sd_vae")
    assert runtime.opts.sd_vae == "Automatic"
    for choice in ("None", "Automatic"):
        assert client.post(f"{API}/options", json={"sd_vae": choice}).status_code == 200
    assert client.post(f"{API}/txt2img", json={**SMALL, "override_settings": {"sd_vae": "None"}}).status_code == 200


def test_a_name_too_long_for_the_file_system_is_a_422(client, runtime):
    r = client.post(f"{API}/create/embedding", json={"name": "n" * 300})
    assert r.status_code == 422 and "bytes long" in r.text
    runtime.fail_with = OSError(36, "File name too long")  # what the file system says (ENAMETOOLONG)
    r = client.post(f"{API}/txt2img", json=SMALL)
    assert r.status_code == 422 and "too long" in r.text
