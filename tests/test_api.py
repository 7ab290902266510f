"""The /sdapi/v1 routes on FastAPI's TestClient, over the real Runtime with a fast stand-in for the model.

``FakeRuntime`` is the real ``Runtime`` (options, paths, job queue, ``prepare``, ``switch_model``) whose ``run`` makes
plain images instead of sampling a network, honouring interrupt / skip and an optional gate that holds a job while a
test looks at the queue. Generation with a real model through a live server is in ``test_api_live.py``.
"""
from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from modules import cmd_args, extensions, processing, scripts
from modules.api import create_api_app
from modules.api import models as api_models
from modules.api.api import _API_ONLY, _UNSUPPORTED
from modules.job_queue import JobQueue
from modules.options import Options
from modules.paths import Paths
from modules.processing import Processed
from modules.runtime import Runtime
from modules.sd_models import CheckpointInfo, CheckpointNotFoundError

API = "/sdapi/v1"
TIMEOUT = 10


# ---------------------------------------------------------------------------------------------------------------------
# A runtime with fake models and a fake generation step
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class FakeModel:
    sd_checkpoint_info: CheckpointInfo
    native_size: int = 512

    @property
    def sd_model_hash(self) -> str | None:
        return self.sd_checkpoint_info.shorthash


class FakeModels:
    """ModelManager's interface over two named checkpoints; records every load."""

    def __init__(self, ckpt_dir: Path) -> None:
        self.infos = [CheckpointInfo(filename=str(ckpt_dir / name), name=name, sha256=digit * 64)
                      for name, digit in (("alpha.safetensors", "a"), ("beta.safetensors", "b"))]
        self.loads: list[str] = []
        self._models = {info.title: FakeModel(info, size) for info, size in zip(self.infos, (512, 1024))}
        self.current: FakeModel | None = None
        self.load(self.infos[0].title)

    def list_checkpoints(self) -> list[CheckpointInfo]:
        return list(self.infos)

    def list_vaes(self) -> list[Any]:
        return []

    def get_info(self, query: str) -> CheckpointInfo:
        for info in self.infos:
            if query in (info.title, info.name, info.model_name, info.shorthash):
                return info
        raise CheckpointNotFoundError(f"checkpoint {query!r} not found")

    def load(self, name: str) -> FakeModel:
        self.current = self._models[self.get_info(name).title]
        self.loads.append(self.current.sd_checkpoint_info.title)
        return self.current

    def unload(self) -> None:
        self.current = None

    def refresh(self) -> None:
        pass

    def default_checkpoint(self) -> CheckpointInfo | None:
        return self.infos[0] if self.infos else None

    def select_default(self) -> FakeModel:
        return self.load(self.infos[0].title)


@dataclass
class FakeRuntime(Runtime):
    gate: threading.Event | None = None   # when set, jobs wait for it (or an interrupt) before "sampling"
    fail_with: Exception | None = None    # raised by every job while set
    seen: list[Any] = field(default_factory=list)
    extra_files: list[str] = field(default_factory=list)

    def run(self, p: Any, state: Any, native_size: Any = ()) -> Processed:
        self.state = state
        self.prepare(p, state, native_size)
        if self.fail_with is not None:
            raise self.fail_with
        if p.override_settings:
            p.opts = processing.apply_overrides(p.opts, p.override_settings)
        self.seen.append(p)
        p.setup_prompts()
        state.job_count = p.n_iter
        while self.gate is not None and not self.gate.wait(0.01) and not state.interrupted:
            pass
        images, texts, files = [], [], []
        for n in range(p.n_iter):
            if state.interrupted:
                break
            state.sampling_steps = p.steps
            for step in range(p.steps):
                if state.interrupted or state.skipped:
                    break
                state.sampling_step = step + 1
            for i in range(p.batch_size):
                index = n * p.batch_size + i
                text = f"{p.all_prompts[index]}\nSteps: {p.steps}, Sampler: {p.sampler_name}, Seed: {p.all_seeds[index]}"
                image = Image.new("RGB", (p.width, p.height), (index * 40 % 256, 0, 0))
                image.info["parameters"] = text
                if not p.do_not_save_samples:
                    path = self.paths.outputs_dir / f"{index:05}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    image.save(path)
                    files.append(str(path))
                images.append(image)
                texts.append(text)
            state.next_job()
        return Processed(p=p, images=images, infotexts=texts, seed=p.all_seeds[0], all_seeds=p.all_seeds,
                         all_subseeds=p.all_subseeds, all_prompts=p.all_prompts,
                         all_negative_prompts=p.all_negative_prompts, interrupted=state.interrupted,
                         files=files + self.extra_files)


def make_runtime(tmp_path: Path, *flags: str, max_pending: int = 100) -> FakeRuntime:
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--nowebui", *flags])
    paths = Paths.from_args(data_dir=tmp_path, allowed_output_dirs=args.allowed_output_dirs)
    paths.ensure()
    opts = Options.load(paths.config_file)
    runtime = FakeRuntime(args=args, paths=paths, opts=opts, models=FakeModels(paths.ckpt_dir),
                          queue=JobQueue(paths.history_db, max_pending=max_pending))
    opts.sd_model_checkpoint = runtime.models.current.sd_checkpoint_info.title
    return runtime


@pytest.fixture(scope="module", autouse=True)
def builtin_scripts():
    """The built-in scripts (Prompt matrix, X/Y/Z plot, Prompts from file) are loaded, as the app loads them."""
    scripts.load_scripts(None)
    yield
    scripts.unload_scripts()


@pytest.fixture
def runtime(tmp_path):
    rt = make_runtime(tmp_path)
    yield rt
    rt.queue.close()


@pytest.fixture
def client(runtime):
    with TestClient(create_api_app(runtime)) as c:
        yield c
        runtime.queue.close()  # ends whatever a failed test left waiting, before the client shuts down


def png_b64(image: Image.Image | None = None, prefix: bool = False, **text: str) -> str:
    image = image or Image.new("RGB", (64, 64), "blue")
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    data = base64.b64encode(buf.getvalue()).decode()
    return "data:image/png;base64," + data if prefix else data


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def in_background(fn, *args, **kwargs) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.setdefault("response", fn(*args, **kwargs)), daemon=True)
    thread.start()
    return thread, out


def wait_until(predicate, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def error_text(response) -> str:
    return json.dumps(response.json())


# ---------------------------------------------------------------------------------------------------------------------
# Schema: A1111's routes, field names and API defaults
# ---------------------------------------------------------------------------------------------------------------------
A1111_ROUTES = {
    ("post", "txt2img"), ("post", "img2img"), ("post", "png-info"), ("get", "progress"), ("post", "interrupt"),
    ("post", "skip"), ("get", "options"), ("post", "options"), ("get", "cmd-flags"), ("get", "samplers"),
    ("get", "schedulers"), ("get", "sd-models"), ("get", "sd-vae"), ("post", "refresh-checkpoints"),
    ("post", "refresh-vae"), ("get", "embeddings"), ("get", "loras"), ("post", "refresh-loras"),
    ("post", "refresh-embeddings"), ("get", "prompt-styles"), ("get", "upscalers"), ("get", "latent-upscale-modes"), ("get", "memory"),
    ("get", "scripts"), ("get", "script-info"), ("get", "extensions"), ("post", "unload-checkpoint"),
    ("post", "reload-checkpoint"), ("get", "hypernetworks"), ("get", "face-restorers"), ("get", "realesrgan-models"),
}


def test_openapi_lists_a1111_routes_and_queue_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    present = {(method, path.removeprefix(API + "/")) for path, ops in paths.items() for method in ops}
    assert A1111_ROUTES <= present
    assert {("get", "queue"), ("get", "queue/{task_id}"), ("delete", "queue/{task_id}"), ("get", "history"),
            ("get", "history/{task_id}"), ("get", "history/{task_id}/files/{index}")} <= present


def test_request_models_have_a1111_api_defaults():
    t2i, i2i = api_models.Txt2ImgRequest(), api_models.Img2ImgRequest()
    assert (t2i.steps, t2i.sampler_index, t2i.sampler_name, t2i.cfg_scale) == (50, "Euler", None, 7.0)
    assert (t2i.width, t2i.height) == (None, None)  # the model's native size (A1111: 512), see the test below
    assert (t2i.denoising_strength, t2i.send_images, t2i.save_images, t2i.seed, t2i.seed_resize_from_w) == (
        0.75, True, False, -1, -1)
    assert (t2i.override_settings_restore_afterwards, t2i.hr_scale, t2i.script_args, t2i.alwayson_scripts) == (
        True, 2.0, [], {})
    assert (i2i.denoising_strength, i2i.inpainting_fill, i2i.inpaint_full_res, i2i.inpaint_full_res_padding,
            i2i.mask_blur_x, i2i.resize_mode, i2i.include_init_images) == (0.75, 0, True, 0, 4, 0, False)
    assert api_models.Txt2ImgRequest(steps=None, sampler_index=None).steps == 50  # null = the API default


@pytest.mark.parametrize("request_model, processing_model", [
    (api_models.Txt2ImgRequest, processing.StableDiffusionProcessingTxt2Img),
    (api_models.Img2ImgRequest, processing.StableDiffusionProcessingImg2Img),
])
def test_every_request_field_reaches_processing_with_the_same_bounds(request_model, processing_model):
    passed = set(request_model.model_fields) - _API_ONLY - _UNSUPPORTED
    if "mask_blur" in passed:   # an A1111 constructor name (and property) of img2img that sets mask_blur_x and _y
        passed.discard("mask_blur")
        p = processing_model(init_images=[Image.new("RGB", (8, 8))], mask_blur=3)
        assert (p.mask_blur, p.mask_blur_x, p.mask_blur_y) == (3, 3, 3)
    assert passed <= set(processing_model.model_fields), passed - set(processing_model.model_fields)

    def bounds(info) -> set[tuple[str, Any]]:
        return {(k, getattr(c, k)) for c in info.metadata for k in ("ge", "le") if hasattr(c, k)}

    for name in passed:
        api_bounds, processing_bounds = bounds(request_model.model_fields[name]), bounds(processing_model.model_fields[name])
        assert not processing_bounds or api_bounds == processing_bounds, name


# ---------------------------------------------------------------------------------------------------------------------
# txt2img / img2img
# ---------------------------------------------------------------------------------------------------------------------
def test_txt2img_with_api_defaults(client, runtime):
    r = client.post(f"{API}/txt2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["info"], str)
    info = json.loads(body["info"])
    assert info["prompt"] == "a cat" and info["steps"] == 2 and info["sampler_name"] == "Euler"
    assert body["parameters"]["sampler_index"] == "Euler" and body["parameters"]["denoising_strength"] == 0.75
    image = decode(body["images"][0])
    assert image.size == (64, 64) and image.format == "PNG" and image.info["parameters"].startswith("a cat")
    p = runtime.seen[-1]
    assert p.do_not_save_samples and p.do_not_save_grid and p.sampler_name == "Euler" and p.scheduler == "Automatic"
    assert r.headers["x-process-time"]


def test_txt2img_uses_the_a1111_steps_default_and_sampler_name_over_index(client, runtime):
    r = client.post(f"{API}/txt2img", json={"width": 64, "height": 64, "sampler_name": "DPM++ 2M Karras",
                                            "sampler_index": "Euler", "scheduler": "automatic"})
    assert r.status_code == 200, r.text
    p = runtime.seen[-1]
    assert p.steps == 50 and p.sampler_name == "DPM++ 2M Karras"


def test_send_images_false_and_save_images_true(client, runtime):
    r = client.post(f"{API}/txt2img", json={"width": 64, "height": 64, "steps": 1, "send_images": False,
                                            "save_images": True, "force_task_id": "task(saved)"})
    assert r.status_code == 200 and r.json()["images"] == []
    assert not runtime.seen[-1].do_not_save_samples
    entry = client.get(f"{API}/history/task(saved)").json()
    assert entry["status"] == "done" and len(entry["files"]) == 1
    file = client.get(f"{API}/history/task(saved)/files/0")
    assert file.status_code == 200 and decode(base64.b64encode(file.content).decode()).size == (64, 64)


def test_jpeg_output_when_samples_format_is_jpg(client, runtime):
    assert client.post(f"{API}/options", json={"samples_format": "jpg"}).status_code == 200
    r = client.post(f"{API}/txt2img", json={"prompt": "dog", "width": 64, "height": 64, "steps": 1})
    image = decode(r.json()["images"][0])
    assert image.format == "JPEG"
    png_info = client.post(f"{API}/png-info", json={"image": r.json()["images"][0]}).json()
    assert png_info["info"].startswith("dog")


@pytest.mark.parametrize("prefix", [False, True])
def test_img2img_accepts_raw_and_data_url_base64_with_inpaint_defaults(client, runtime, prefix):
    mask = Image.new("L", (64, 64), 0)
    r = client.post(f"{API}/img2img", json={"init_images": [png_b64(prefix=prefix)], "mask": png_b64(mask, prefix),
                                            "width": 64, "height": 64, "steps": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["parameters"]["init_images"] is None and body["parameters"]["mask"] is None
    p = runtime.seen[-1]
    assert p.init_images[0].size == (64, 64) and p.mask is not None
    assert (p.inpainting_fill, p.inpaint_full_res, p.inpaint_full_res_padding, p.denoising_strength) == (0, True, 0, 0.75)


def test_img2img_echoes_init_images_only_when_asked(client):
    image = png_b64()
    r = client.post(f"{API}/img2img", json={"init_images": [image], "width": 64, "height": 64, "steps": 1,
                                            "include_init_images": True})
    assert r.json()["parameters"]["init_images"] == [image]


def test_override_settings_apply_to_one_job_and_are_restored(client, runtime):
    beta = runtime.models.infos[1].title
    r = client.post(f"{API}/txt2img", json={"width": 64, "height": 64, "steps": 1, "override_settings": {
        "sd_model_checkpoint": "beta", "CLIP_stop_at_last_layers": 2}})
    assert r.status_code == 200, r.text
    p = runtime.seen[-1]
    assert p.sd_model.sd_checkpoint_info.title == beta and p.opts.CLIP_stop_at_last_layers == 2
    assert runtime.models.current.sd_checkpoint_info.name == "alpha.safetensors"
    assert runtime.opts.CLIP_stop_at_last_layers == 1


def test_omitted_size_is_the_native_size_of_the_model_that_runs_the_job(client, runtime):
    """alpha's native size is 512, beta's 1024: a size left out (or null) follows the checkpoint, a given one stays."""
    sizes = []
    for body in ({"steps": 1}, {"steps": 1, "width": None, "override_settings": {"sd_model_checkpoint": "beta"}},
                 {"steps": 1, "height": 64, "override_settings": {"sd_model_checkpoint": "beta"}}):
        r = client.post(f"{API}/txt2img", json=body)
        assert r.status_code == 200, r.text
        assert decode(r.json()["images"][0]).size == (runtime.seen[-1].width, runtime.seen[-1].height)
        sizes.append((runtime.seen[-1].width, runtime.seen[-1].height))
    assert sizes == [(512, 512), (1024, 1024), (1024, 64)]
    r = client.post(f"{API}/img2img", json={"init_images": [png_b64()], "steps": 1})
    assert (runtime.seen[-1].width, runtime.seen[-1].height) == (512, 512)


def test_override_settings_kept_without_restore_afterwards(client, runtime):
    r = client.post(f"{API}/txt2img", json={"width": 64, "height": 64, "steps": 1,
                                            "override_settings_restore_afterwards": False,
                                            "override_settings": {"sd_model_checkpoint": "beta",
                                                                  "CLIP_stop_at_last_layers": 3}})
    assert r.status_code == 200, r.text
    assert runtime.models.current.sd_checkpoint_info.name == "beta.safetensors"
    assert runtime.opts.sd_model_checkpoint == runtime.models.infos[1].title
    assert runtime.opts.CLIP_stop_at_last_layers == 3


def test_infotext_fills_the_fields_the_request_leaves_out(client, runtime):
    text = ("a castle\nNegative prompt: fog\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5, "
            "Seed: 42, Size: 64x32, Clip skip: 2")
    r = client.post(f"{API}/txt2img", json={"infotext": text, "steps": 2})
    assert r.status_code == 200, r.text
    p = runtime.seen[-1]
    assert (p.prompt, p.negative_prompt, p.steps, p.sampler_name, p.scheduler, p.cfg_scale, p.seed) == (
        "a castle", "fog", 2, "DPM++ 2M", "Karras", 5.0, 42)
    assert (p.width, p.height) == (64, 32) and p.opts.CLIP_stop_at_last_layers == 2
    assert runtime.opts.CLIP_stop_at_last_layers == 1
    assert r.json()["parameters"]["infotext"] == text


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: 4xx naming the field; nothing queued, nothing changed
# ---------------------------------------------------------------------------------------------------------------------
SMALL = {"width": 64, "height": 64, "steps": 1}
BAD_TXT2IMG = [
    ({"steps": 0}, 422, "steps"),
    ({"steps": "many"}, 422, "steps"),
    ({"steps": 100000}, 422, "steps"),
    ({"width": 65}, 422, "width"),
    ({"height": 4096}, 422, "height"),
    ({"width": 0}, 422, "width"),
    ({"batch_size": 0}, 422, "batch_size"),
    ({"batch_size": 1000}, 422, "batch_size"),
    ({"n_iter": -1}, 422, "n_iter"),
    ({"cfg_scale": "NaN"}, 422, "cfg_scale"),
    ({"seed": 2**70}, 422, "seed"),
    ({"denoising_strength": 2}, 422, "denoising_strength"),
    ({"guidance_rescale": 1.5}, 422, "guidance_rescale"),
    ({"dynamic_thresholding": 0.3}, 422, "dynamic_thresholding"),
    ({"dynamic_thresholding_mimic_scale": 0}, 422, "dynamic_thresholding_mimic_scale"),
    ({"prompt": ["not", "a", "string"]}, 422, "prompt"),
    ({"sampler_name": "No Such Sampler"}, 400, "sampler_name"),
    ({"sampler_index": "Nope"}, 400, "sampler_index"),
    ({"scheduler": "nonsense"}, 422, "scheduler"),
    ({"enable_hr": True, "hr_upscaler": "Magic"}, 422, "hr_upscaler"),
    ({"override_settings": {"CLIP_stop_at_last_layers": 99}}, 422, "CLIP_stop_at_last_layers"),
    ({"override_settings": {"no_such_option": 1}}, 422, "no_such_option"),
    ({"override_settings": {"sd_model_checkpoint": "missing.safetensors"}}, 422, "missing.safetensors"),
    ({"override_settings": "text"}, 422, "override_settings"),
    ({"script_name": "no such script"}, 422, "no such script"),
    ({"script_name": "prompt matrix", "script_args": [True, "not a bool"]}, 422, "script_args"),
    ({"script_name": "prompt matrix", "script_args": list(range(50))}, 422, "script_args"),
    ({"alwayson_scripts": {"ADetailer": {"args": []}}}, 422, "ADetailer"),
    ({"alwayson_scripts": {"prompt matrix": {"args": []}}}, 422, "alwayson_scripts"),
    ({"refiner_checkpoint": "beta"}, 422, "refiner_checkpoint"),
    ({"infotext": "a cat\nSteps: 2, Sampler: Euler, Seed: -5"}, 422, "seed"),
    ({"force_task_id": "x" * 500}, 422, "force_task_id"),
]


@pytest.mark.parametrize("fields, status, named", BAD_TXT2IMG, ids=[repr(c[0])[:40] for c in BAD_TXT2IMG])
def test_bad_txt2img_input_is_a_4xx_naming_the_field(client, runtime, fields, status, named):
    loads = list(runtime.models.loads)
    r = client.post(f"{API}/txt2img", json={**SMALL, **fields})
    assert r.status_code == status, r.text
    assert named in error_text(r)
    assert runtime.queue.history() == [] and runtime.models.loads == loads
    assert runtime.models.current.sd_checkpoint_info.name == "alpha.safetensors"


BAD_IMG2IMG = [
    ({}, 404, "Init image not found"),
    ({"init_images": []}, 404, "Init image not found"),
    ({"init_images": ["!!!not base64!!!"]}, 422, "init_images"),
    ({"init_images": [base64.b64encode(b"plain text").decode()]}, 422, "init_images"),
    ({"init_images": ["https://example.com/cat.png"]}, 422, "URLs"),
    ({"init_images": [png_b64()], "mask": "data:image/png;base64,@@@"}, 422, "mask"),
    ({"init_images": [png_b64()], "mask": "data:text/plain,hello"}, 422, "mask"),
    ({"init_images": [png_b64()], "inpainting_fill": 7}, 422, "inpainting_fill"),
    ({"init_images": [png_b64()], "resize_mode": 9}, 422, "resize_mode"),
    ({"init_images": [png_b64()], "latent_mask": png_b64()}, 422, "latent_mask"),
    ({"init_images": "not a list"}, 422, "init_images"),
]


@pytest.mark.parametrize("fields, status, named", BAD_IMG2IMG, ids=[repr(c[0])[:40] for c in BAD_IMG2IMG])
def test_bad_img2img_input_is_a_4xx_naming_the_field(client, runtime, fields, status, named):
    r = client.post(f"{API}/img2img", json={**SMALL, **fields})
    assert r.status_code == status, r.text
    assert named in error_text(r)
    assert runtime.queue.history() == []


def test_a_huge_declared_image_is_refused_before_decoding(client):
    huge = png_b64(Image.new("1", (5000, 5000)))
    r = client.post(f"{API}/img2img", json={**SMALL, "init_images": [huge]})
    assert r.status_code == 422 and "pixels" in r.text


def test_non_json_and_oversized_bodies(runtime):
    with TestClient(create_api_app(runtime, max_body_bytes=1000)) as client:
        r = client.post(f"{API}/txt2img", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        r = client.post(f"{API}/txt2img", json={"prompt": "x" * 2000})
        assert r.status_code == 413 and "1000 bytes" in r.json()["detail"]

        def chunks():
            for _ in range(10):
                yield b" " * 500

        r = client.post(f"{API}/txt2img", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert client.post(f"{API}/txt2img", json=SMALL).status_code == 200
    assert runtime.queue.current is None and runtime.queue.pending() == []


def test_a_failing_job_is_reported_and_the_queue_keeps_working(client, runtime):
    runtime.fail_with = processing.GenerationError("width must be a multiple of 64 for this model")
    r = client.post(f"{API}/txt2img", json={**SMALL, "force_task_id": "task(bad)"})
    assert r.status_code == 422 and "width" in r.text
    assert client.get(f"{API}/history/task(bad)").json()["status"] == "failed"
    runtime.fail_with = RuntimeError("out of memory")  # a server fault, not bad input: 500 with the reason
    r = client.post(f"{API}/txt2img", json=SMALL)
    assert r.status_code == 500 and r.json()["detail"] == "RuntimeError: out of memory"
    runtime.fail_with = None
    assert client.post(f"{API}/txt2img", json=SMALL).status_code == 200
    assert runtime.queue.current is None and runtime.queue.pending() == []


@pytest.mark.parametrize("restore", [True, False])
def test_a_failed_job_with_a_checkpoint_override_leaves_the_model_as_it_was(client, runtime, restore):
    runtime.fail_with = processing.GenerationError("steps: too many for this sampler")
    r = client.post(f"{API}/txt2img", json={**SMALL, "override_settings": {"sd_model_checkpoint": "beta"},
                                            "override_settings_restore_afterwards": restore})
    assert r.status_code == 422
    assert runtime.models.loads[-2:] == [runtime.models.infos[1].title, runtime.models.infos[0].title]
    assert runtime.models.current.sd_checkpoint_info.name == "alpha.safetensors"
    assert runtime.opts.sd_model_checkpoint == runtime.models.infos[0].title


# ---------------------------------------------------------------------------------------------------------------------
# png-info
# ---------------------------------------------------------------------------------------------------------------------
def test_png_info_reads_and_parses_the_infotext(client):
    text = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 5, Size: 512x768"
    r = client.post(f"{API}/png-info", json={"image": png_b64(prefix=True, parameters=text, other="x")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["info"] == text and body["items"] == {"other": "x"}
    assert body["parameters"]["Prompt"] == "a cat" and body["parameters"]["Size-2"] == "768"
    assert body["parameters"]["Sampler"] == "DPM++ 2M" and body["parameters"]["Schedule type"] == "Karras"
    assert client.post(f"{API}/png-info", json={"image": ""}).json()["info"] == ""
    assert client.post(f"{API}/png-info", json={"image": "%%%"}).status_code == 422


# ---------------------------------------------------------------------------------------------------------------------
# Queue, progress, interrupt, skip, history
# ---------------------------------------------------------------------------------------------------------------------
def test_status_routes_answer_while_a_job_runs(client, runtime):
    runtime.gate = threading.Event()
    first, first_out = in_background(client.post, f"{API}/txt2img",
                                     json={**SMALL, "force_task_id": "task(first)", "steps": 3})
    wait_until(lambda: runtime.queue.current is not None)
    second, second_out = in_background(client.post, f"{API}/txt2img", json={**SMALL, "force_task_id": "task(second)"})
    wait_until(lambda: len(runtime.queue.pending()) == 1)   # so the third is submitted after the second
    third, third_out = in_background(client.post, f"{API}/txt2img", json={**SMALL, "force_task_id": "task(third)"})
    wait_until(lambda: len(runtime.queue.pending()) == 2)

    # The first job is held until the gate opens, so each of these calls would hang if it waited for the job.
    progress = client.get(f"{API}/progress", params={"skip_current_image": True}).json()
    assert progress["task_id"] == "task(first)" and progress["state"]["job_count"] == 1
    queue = client.get(f"{API}/queue").json()
    assert queue["running"]["id"] == "task(first)"
    assert [j["id"] for j in queue["pending"]] == ["task(second)", "task(third)"]
    task = client.get(f"{API}/queue/task(third)").json()
    assert task["queued"] and task["queue_position"] == 1 and task["status"] == "queued"
    assert client.get(f"{API}/queue/task(first)").json()["active"]
    assert client.delete(f"{API}/queue/task(second)").json()["status"] == "cancelled"
    assert client.delete(f"{API}/queue/task(nope)").status_code == 404
    assert client.get(f"{API}/options").status_code == 200
    # Every job has its history row from the moment it is queued: live ones first, then the finished ones.
    assert [(e["id"], e["status"]) for e in client.get(f"{API}/history").json()] == [
        ("task(third)", "queued"), ("task(first)", "running"), ("task(second)", "cancelled")]

    assert client.post(f"{API}/skip").status_code == 200
    assert runtime.queue.current.state.skipped
    assert client.post(f"{API}/interrupt").json() == {}
    runtime.gate.set()
    for thread in (first, second, third):
        thread.join(TIMEOUT)
    assert first_out["response"].status_code == 200
    assert second_out["response"].status_code == 409 and "cancelled" in second_out["response"].text
    assert third_out["response"].status_code == 200
    history = {e["id"]: e for e in client.get(f"{API}/history").json()}
    assert history["task(first)"]["status"] == "interrupted"
    assert history["task(second)"]["status"] == "cancelled"
    assert history["task(third)"]["status"] == "done"
    assert history["task(third)"]["params"]["force_task_id"] == "task(third)"
    assert client.get(f"{API}/queue/task(third)").json()["completed"]


def test_progress_when_idle(client):
    body = client.get(f"{API}/progress").json()
    assert body["progress"] == 0 and body["state"]["job_count"] == 0 and body["current_image"] is None


def test_a_full_queue_is_a_429_that_says_so(tmp_path):
    runtime = make_runtime(tmp_path, max_pending=1)
    runtime.gate = threading.Event()
    try:
        with TestClient(create_api_app(runtime)) as client:
            running, _ = in_background(client.post, f"{API}/txt2img", json=SMALL)
            wait_until(lambda: runtime.queue.current is not None)
            waiting, _ = in_background(client.post, f"{API}/txt2img", json=SMALL)
            wait_until(lambda: len(runtime.queue.pending()) == 1)
            r = client.post(f"{API}/txt2img", json=SMALL)
            assert r.status_code == 429 and "queue is full (1 jobs waiting)" in r.text
            duplicate = client.post(f"{API}/txt2img", json={**SMALL, "force_task_id": runtime.queue.current.id})
            assert duplicate.status_code == 409 and "already queued or running" in duplicate.text
            runtime.gate.set()
            running.join(TIMEOUT)
            waiting.join(TIMEOUT)
    finally:
        runtime.queue.close()


def test_history_files_are_served_only_from_the_output_folders(client, runtime, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    runtime.extra_files = [str(secret), str(runtime.paths.outputs_dir / ".." / "secret.txt")]
    r = client.post(f"{API}/txt2img", json={**SMALL, "save_images": True, "force_task_id": "task(files)"})
    assert r.status_code == 200
    files = client.get(f"{API}/history/task(files)").json()["files"]
    assert len(files) == 3
    assert client.get(f"{API}/history/task(files)/files/0").status_code == 200
    for index in (1, 2, 3, -1):
        assert client.get(f"{API}/history/task(files)/files/{index}").status_code in (404, 422)
    for path in ("/history/..%2F..%2Fsecret.txt/files/0", "/history/task(files)/files/..%2F..%2Fsecret.txt",
                 "/history/../../secret.txt", "/../secret.txt"):
        r = client.get(API + path)
        assert r.status_code in (404, 422) and b"TOP-SECRET" not in r.content


def test_history_route_filters_and_pages(client):
    for n in range(3):
        assert client.post(f"{API}/txt2img", json={**SMALL, "prompt": f"p{n}"}).status_code == 200
    history = client.get(f"{API}/history", params={"limit": 2}).json()
    assert [e["params"]["prompt"] for e in history] == ["p2", "p1"]
    assert history[0]["kind"] == "txt2img" and history[0]["infotext"].startswith("p2")
    assert client.get(f"{API}/history", params={"kind": "img2img"}).json() == []
    assert client.get(f"{API}/history", params={"limit": 0}).status_code == 422
    assert client.get(f"{API}/history/task(unknown)").status_code == 404


# ---------------------------------------------------------------------------------------------------------------------
# Options and models
# ---------------------------------------------------------------------------------------------------------------------
def test_setting_sd_model_checkpoint_switches_the_model_and_is_saved(client, runtime):
    beta = runtime.models.infos[1]
    assert client.post(f"{API}/options", json={"sd_model_checkpoint": beta.model_name}).status_code == 200
    assert runtime.models.current.sd_checkpoint_info is beta
    assert client.get(f"{API}/options").json()["sd_model_checkpoint"] == beta.title
    assert json.loads(runtime.paths.config_file.read_text())["sd_model_checkpoint"] == beta.title
    assert client.get(f"{API}/history", params={"kind": "checkpoint"}).json()[0]["status"] == "done"


def test_a_bad_option_is_a_4xx_naming_it_and_nothing_changes(client, runtime):
    before = client.get(f"{API}/options").json()
    for body, named in [({"samples_format": "gif", "jpeg_quality": 50}, "samples_format"),
                        ({"jpeg_quality": 50, "no_such_option": 1}, "no_such_option"),
                        ({"sd_model_checkpoint": "nope", "jpeg_quality": 50}, "nope"),
                        ({"sd_model_checkpoint": 5}, "sd_model_checkpoint")]:
        r = client.post(f"{API}/options", json=body)
        assert r.status_code == 422 and named in r.text, r.text
    assert client.post(f"{API}/options", json=["not", "a", "dict"]).status_code == 422
    assert client.get(f"{API}/options").json() == before
    assert runtime.models.current.sd_checkpoint_info.name == "alpha.safetensors"


def test_model_lists_and_checkpoint_routes(client, runtime):
    models = client.get(f"{API}/sd-models").json()
    assert [m["model_name"] for m in models] == ["alpha", "beta"]
    assert models[0]["title"] == "alpha.safetensors [aaaaaaaaaa]" and models[0]["hash"] == "aaaaaaaaaa"
    assert client.post(f"{API}/refresh-checkpoints").status_code == 200
    assert client.post(f"{API}/unload-checkpoint").json() == {}
    assert runtime.models.current is None
    assert client.post(f"{API}/reload-checkpoint").json() == {}
    assert runtime.models.current.sd_checkpoint_info.name == "alpha.safetensors"


def test_generating_without_any_checkpoint_is_a_503_that_says_where_to_put_one(client, runtime):
    runtime.models.unload()
    runtime.models.infos = []
    r = client.post(f"{API}/txt2img", json=SMALL)
    assert r.status_code == 503 and str(runtime.paths.ckpt_dir) in r.text
    assert runtime.queue.history() == []


def test_list_routes(client, runtime):
    samplers = client.get(f"{API}/samplers").json()
    assert "Euler" in [s["name"] for s in samplers] and "k_euler" in samplers[[s["name"] for s in samplers].index("Euler")]["aliases"]
    assert "automatic" in [s["name"] for s in client.get(f"{API}/schedulers").json()]
    assert [u["name"] for u in client.get(f"{API}/upscalers").json()] == ["None", "Lanczos", "Nearest"]
    assert "Latent" in [m["name"] for m in client.get(f"{API}/latent-upscale-modes").json()]
    assert client.get(f"{API}/embeddings").json() == {"loaded": {}, "skipped": {}}
    for route in ("loras", "hypernetworks", "face-restorers", "realesrgan-models", "sd-vae", "prompt-styles"):
        assert client.get(f"{API}/{route}").json() == [], route
    memory = client.get(f"{API}/memory").json()
    assert memory["ram"]["total"] > 0 and "cuda" in memory
    flags = client.get(f"{API}/cmd-flags").json()
    assert flags["nowebui"] is True and flags["api"] is True and flags["api_auth"] is None


def test_prompt_styles_and_loras_are_read_from_the_data_dir(client, runtime):
    (runtime.paths.data_dir / "styles.csv").write_text('name,prompt,negative_prompt\nfancy,"{prompt}, gold",blur\n')
    assert client.get(f"{API}/prompt-styles").json() == [{"name": "fancy", "prompt": "{prompt}, gold",
                                                          "negative_prompt": "blur"}]
    runtime.paths.lora_dir.mkdir(parents=True, exist_ok=True)
    (runtime.paths.lora_dir / "tiny-style.safetensors").write_bytes(b"not read until used")
    assert client.post(f"{API}/refresh-loras").status_code == 200
    assert [(lora["name"], lora["alias"]) for lora in client.get(f"{API}/loras").json()] == [
        ("tiny-style", "tiny-style")]


def test_scripts_are_listed_and_bound_to_the_job(client, runtime):
    listed = client.get(f"{API}/scripts").json()
    assert listed == scripts.api_scripts_list() and "prompt matrix" in listed["txt2img"]
    info = client.get(f"{API}/script-info").json()
    matrix = next(i for i in info if i["name"] == "prompt matrix" and not i["is_img2img"])
    assert matrix["args"][0]["label"] and matrix["is_alwayson"] is False
    assert client.get(f"{API}/extensions").json() == [
        {**item, "problems": list(item["problems"])} for item in extensions.api_list()]

    r = client.post(f"{API}/txt2img", json={**SMALL, "script_name": "Prompt Matrix", "script_args": [True]})
    assert r.status_code == 200, r.text
    p = runtime.seen[-1]
    runner = scripts.runner_for("txt2img")
    assert p.scripts is runner
    matrix_script = next(s for s in runner.selectable_scripts if s.name == "prompt matrix")
    assert p.script_args[0] == runner.selectable_scripts.index(matrix_script) + 1
    assert p.script_args[matrix_script.args_from] is True


# ---------------------------------------------------------------------------------------------------------------------
# Security
# ---------------------------------------------------------------------------------------------------------------------
def api_routes(client: TestClient, auth: tuple[str, str] | None = None) -> list[tuple[str, str]]:
    """Every (method, concrete path) of the API, from its OpenAPI schema."""
    paths = client.get("/openapi.json", auth=auth).json()["paths"]
    return [(method.upper(), path.replace("{task_id}", "task(x)").replace("{index}", "0"))
            for path, operations in paths.items() if path.startswith(API) for method in operations]


def test_api_auth_guards_every_route(tmp_path):
    runtime = make_runtime(tmp_path, "--api-auth", "alice:s3cret,bob:pw")
    try:
        with TestClient(create_api_app(runtime)) as client:
            routes = api_routes(client, auth=("alice", "s3cret"))
            assert len(routes) > 30
            for method, path in routes:
                for auth in (None, ("alice", "wrong"), ("mallory", "s3cret")):
                    r = client.request(method, path, auth=auth, content=b"{broken json")
                    assert r.status_code == 401, (method, path, auth)
                    assert r.headers["www-authenticate"] == "Basic"
            for header in ("Basic !!!", "Bearer abc", "Basic " + base64.b64encode(b"alice").decode(), ""):
                assert client.get(f"{API}/options", headers={"Authorization": header}).status_code == 401
            assert client.get(f"{API}/sd-models", auth=("alice", "s3cret")).status_code == 200
            assert client.get(f"{API}/options", auth=("bob", "pw")).status_code == 200
            flags = client.get(f"{API}/cmd-flags", auth=("bob", "pw")).json()
            assert flags["api_auth"] == "<hidden>" and "s3cret" not in json.dumps(flags)
    finally:
        runtime.queue.close()


def test_no_cors_unless_asked(client, tmp_path):
    origin = {"Origin": "http://evil.example"}
    assert "access-control-allow-origin" not in client.get(f"{API}/options", headers=origin).headers
    preflight = client.options(f"{API}/txt2img", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers

    runtime = make_runtime(tmp_path / "cors", "--cors-allow-origins", "http://good.example")
    try:
        with TestClient(create_api_app(runtime)) as cors:
            good = cors.get(f"{API}/options", headers={"Origin": "http://good.example"})
            assert good.headers["access-control-allow-origin"] == "http://good.example"
            assert "access-control-allow-origin" not in cors.get(f"{API}/options", headers=origin).headers
    finally:
        runtime.queue.close()


def test_docs_pages_work_offline_from_local_assets(client):
    """/docs and /redoc load their scripts and styles from this server (no CDN), and every one of them answers."""
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", html)
        urls = [a or b for a, b in urls]
        assert any(u.endswith(".js") for u in urls), (page, urls)
        assert "://" not in html.replace("http://www.w3.org", ""), page  # nothing from another host
        for url in urls:
            assert url.startswith("/"), (page, url)
            assert client.get(url).status_code == 200, url
