"""Batching of compatible jobs in the in-process worker: 8 compatible jobs queued together run as batches, and each
image (and infotext, and saved file) equals the job's solo run."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from modules import batching, cmd_args
from modules.job_queue import JobOutput, JobQueue, JobStatus
from modules.options import Options
from modules.processing import StableDiffusionProcessingTxt2Img
from modules.runtime import Runtime
from modules.sd_models import ModelManager
from tests.fixtures_models import SHIPPED, paths_with_shipped_models

pytestmark = pytest.mark.skipif(not SHIPPED, reason="needs the shipped model")
TIMEOUT = 120
SMALL = dict(width=64, height=64, steps=6, sampler_name="Euler a", cfg_scale=6.0)
PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow star", "a red square", "a blue circle",
           "a green star", "a yellow triangle"]


def make_runtime(data_dir: Path, batch_limit: int) -> Runtime:
    paths = paths_with_shipped_models(data_dir)
    opts = Options(samples_save=True, grid_save=False, live_previews_enable=False, batch_compatible_jobs=batch_limit)
    runtime = Runtime(args=cmd_args.parse_args(["--nowebui", "--data-dir", str(data_dir)]), paths=paths, opts=opts,
                      models=ModelManager(paths, opts))
    runtime.queue = JobQueue(data_dir / "history.db", batch_limit=lambda: runtime.opts.batch_compatible_jobs)
    runtime.models.select_default()
    return runtime


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    rt = make_runtime(tmp_path_factory.mktemp("batching"), batch_limit=4)
    yield rt
    rt.queue.close()


def unet_batches(runtime: Runtime) -> list[int]:
    """Records the batch size of every UNet forward (CFG doubles it)."""
    unet = runtime.models.current.unet
    sizes: list[int] = []
    real = unet.forward

    def forward(x, *args, **kwargs):
        sizes.append(x.shape[0])
        return real(x, *args, **kwargs)

    unet.forward = forward
    return sizes


def block_queue(runtime: Runtime) -> threading.Event:
    """A job that holds the worker until released, so the next jobs are pending together."""
    release = threading.Event()
    job = runtime.queue.submit("hold", {}, lambda state: JobOutput(value=release.wait(TIMEOUT)))
    for _ in range(TIMEOUT * 100):
        if job.status is JobStatus.RUNNING:
            break
        threading.Event().wait(0.01)
    return release


def test_eight_compatible_jobs_run_as_batches_and_each_image_equals_its_solo_run(runtime):
    sizes = unet_batches(runtime)
    release = block_queue(runtime)
    jobs = [runtime.submit("txt2img", StableDiffusionProcessingTxt2Img(prompt=prompt, seed=100 + i, **SMALL))
            for i, prompt in enumerate(PROMPTS)]
    assert len({job.batch_key for job in jobs}) == 1 and jobs[0].batch_key is not None
    release.set()
    batched = [job.result(TIMEOUT).value for job in jobs]
    assert max(sizes) == 2 * 4   # four jobs (x2 for CFG) per UNet call: the batch limit of 4
    assert sizes.count(8) == 2 * SMALL["steps"]   # two batches of four

    sizes.clear()
    for i, (prompt, result) in enumerate(zip(PROMPTS, batched)):
        solo = runtime.submit("txt2img", StableDiffusionProcessingTxt2Img(prompt=prompt, seed=100 + i, **SMALL))
        alone = solo.result(TIMEOUT).value
        assert len(result.images) == 1 and result.all_seeds == [100 + i] and result.all_prompts == [prompt]
        a, b = (np.asarray(im, dtype=np.int16) for im in (result.images[0], alone.images[0]))
        assert np.abs(a - b).max() <= 2, f"job {i}: the batched image differs from the solo run"
        assert result.info == alone.info   # same infotext: its own prompt and seed, no trace of the batch
        assert f"Seed: {100 + i}" in result.info and prompt in result.info
        entry = runtime.queue.history_entry(jobs[i].id)
        assert entry.status is JobStatus.DONE and len(entry.files) == 1 and Path(entry.files[0]).is_file()
    assert max(sizes) == 2   # run one by one, nothing is batched


def test_jobs_that_differ_in_steps_or_carry_lora_tags_are_not_batched(runtime):
    base = StableDiffusionProcessingTxt2Img(prompt="a red circle", **SMALL)
    other_steps = StableDiffusionProcessingTxt2Img(prompt="a red circle", **{**SMALL, "steps": 7})
    assert batching.batch_key("txt2img", base) != batching.batch_key("txt2img", other_steps)
    assert batching.batch_key("txt2img", StableDiffusionProcessingTxt2Img(prompt="x <lora:a:1>", **SMALL)) is None
    assert batching.batch_key("txt2img", StableDiffusionProcessingTxt2Img(prompt="x", n_iter=2, **SMALL)) is None
    assert batching.batch_key("img2img", base) is None


def test_interrupting_one_member_keeps_the_batch_going_for_the_others(runtime):
    release = block_queue(runtime)
    jobs = [runtime.submit("txt2img", StableDiffusionProcessingTxt2Img(prompt=p, seed=7, **SMALL)) for p in PROMPTS[:2]]
    release.set()
    for _ in range(TIMEOUT * 100):
        if jobs[0].status is JobStatus.RUNNING:
            break
        threading.Event().wait(0.01)
    runtime.queue.interrupt(jobs[0].id)
    other = jobs[1].result(TIMEOUT).value
    assert len(other.images) == 1 and not other.interrupted
    jobs[0].result(TIMEOUT)
    assert runtime.queue.history_entry(jobs[1].id).status is JobStatus.DONE


def test_workers_route_lists_the_in_process_worker_with_its_model_and_running_job(runtime):
    from fastapi.testclient import TestClient

    from modules.api import create_api_app

    client = TestClient(create_api_app(runtime))
    release = block_queue(runtime)
    try:
        running = runtime.queue.current
        [worker] = client.get("/sdapi/v1/workers").json()
        assert worker["name"] == "local" and worker["device"] == "cpu" and worker["running"] == running.id
        assert worker["loaded_models"] == [runtime.models.current.sd_checkpoint_info.title]
    finally:
        release.set()
