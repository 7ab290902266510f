"""Fuzzing every API operation from its OpenAPI schema (schemathesis + hypothesis): valid and invalid inputs, at
least 1000 requests in all, never a 5xx, and the server still generates afterwards.

The server is the real one over the tiny SD1 checkpoint, except that each generation job is interrupted as it starts
(``InstantRuntime``): requests still go through validation, the queue, model loading, options and processing set-up,
but fuzzed sizes and step counts cost nothing.
"""
from __future__ import annotations

import base64
import io
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from modules import scripts
from modules.api import create_api_app
from modules.job_queue import JobStatus
from modules.progress import JobState
from modules.runtime import Runtime
from tests.test_api_live import start_runtime

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402

EXAMPLES_PER_OPERATION = 100
MIN_REQUESTS = 1000


def explicit_examples() -> dict[str, dict[str, Any]]:
    """One valid body per generation (and extras) route, sent before the random ones (like hypothesis' ``@example``), so that
    every generation route reaches the queue and the generation path on every run, whatever the random draw."""
    image = png_b64((64, 64), "red")
    return {
        "/sdapi/v1/txt2img": {"prompt": "explicit", "width": 64, "height": 64, "steps": 2},
        "/sdapi/v1/img2img": {"prompt": "explicit", "init_images": [image], "mask": png_b64((64, 64), "white"),
                              "width": 64, "height": 64, "steps": 2, "denoising_strength": 0.5},
        "/sdapi/v1/extra-single-image": {"image": image, "upscaler_1": "Lanczos", "upscaling_resize": 2},
        "/sdapi/v1/extra-batch-images": {"imageList": [{"data": image, "name": "a.png"}], "resize_mode": 1,
                                         "upscaler_1": "Nearest", "upscaling_resize_w": 96, "upscaling_resize_h": 80},
    }


def png_b64(size: tuple[int, int], color: str) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def with_real_images(cases: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Give half the fuzzed bodies with ``init_images`` / ``mask`` real images (a fuzzer cannot invent a PNG), so
    that img2img is fuzzed past image decoding too."""
    image, mask = png_b64((64, 64), "red"), png_b64((64, 64), "white")

    def fill(case: Any, real: bool) -> Any:
        if real and isinstance(case.body, dict) and "init_images" in case.body:
            case.body["init_images"] = [image]
            if case.body.get("mask") is not None:
                case.body["mask"] = mask
        return case

    return st.tuples(cases, st.booleans()).map(lambda pair: fill(*pair))


class InstantRuntime(Runtime):
    """The real runtime whose generation jobs are interrupted before the first step."""

    def run(self, p: Any, state: JobState, native_size: Any = ()) -> Any:
        state.interrupt()
        return super().run(p, state, native_size)


@pytest.mark.timeout(600)
def test_fuzz_the_openapi_schema_without_a_server_error(tmp_path, tiny_models_dir, tiny_configs_dir):
    base = start_runtime(tmp_path, tiny_models_dir, tiny_configs_dir)
    runtime = InstantRuntime(**{f: getattr(base, f) for f in ("args", "paths", "opts", "models", "queue", "device")})
    app = create_api_app(runtime)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    examples = explicit_examples()
    # The app imports gradio while loading scripts at start; here the Extras runner's first use would (seconds).
    scripts.postprocessing_runner().create_args_for_run({})
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.method.upper() == "POST" and operation.path in examples:
                response = operation.Case(body=examples.pop(operation.path), media_type="application/json").call()
                statuses[response.status_code] += 1
                assert response.status_code < 400, f"{operation.path}: {response.status_code} {response.text[:300]}"
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                          phases=[Phase.generate], suppress_health_check=list(HealthCheck))
                @given(case=with_real_images(operation.as_strategy(generation_mode=mode)))
                def call(case: Any) -> None:
                    response = case.call()
                    statuses[response.status_code] += 1
                    if response.status_code >= 500:
                        failures.append(f"{case.method} {case.formatted_path} {case.body!r:.300} -> "
                                        f"{response.status_code} {response.text[:300]}")

                try:
                    call()
                except Unsatisfiable:
                    if mode is GenerationMode.POSITIVE:
                        raise  # an operation without inputs, or with only free-form ones, has no invalid input
        total = sum(statuses.values())
        assert not examples, f"routes missing from the schema: {sorted(examples)}"
        assert not failures, "\n".join(failures[:10])
        assert total >= MIN_REQUESTS, statuses
        for kind in ("txt2img", "img2img"):  # requests got past validation into the generation path
            assert runtime.queue.history(kind=kind, limit=1), kind

        # Healthy afterwards: nothing stuck in the queue, and a real generation still works.
        with TestClient(create_api_app(base)) as client:
            assert runtime.queue.current is None and runtime.queue.pending() == []
            client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "sd1.safetensors", "samples_format": "png"})
            r = client.post("/sdapi/v1/txt2img", json={"prompt": "after", "width": 64, "height": 64, "steps": 2,
                                                       "force_task_id": "task(after-fuzz)"})
            assert r.status_code == 200, r.text
            assert len(r.json()["images"]) == 1
            assert runtime.queue.history_entry("task(after-fuzz)").status is JobStatus.DONE
    finally:
        runtime.queue.close()
