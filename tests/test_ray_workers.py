"""Generation on Ray worker actors: a local Ray cluster (``ray.init(num_cpus=2)``, ended with ``ray.shutdown()`` by
this process that started it) with two CPU workers behind the app's queue."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from modules import cmd_args, ray_workers
from modules.job_queue import JobQueue, JobStatus
from modules.options import Options
from modules.processing import StableDiffusionProcessingTxt2Img
from modules.runtime import Runtime
from modules.sd_models import ModelManager
from tests.fixtures_models import SHIPPED, paths_with_shipped_models

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not SHIPPED, reason="needs the shipped model")
TIMEOUT = 180
SMALL = dict(width=64, height=64, steps=4, sampler_name="Euler a", cfg_scale=6.0)
LONG = dict(width=128, height=128, steps=400, sampler_name="Euler a", cfg_scale=6.0)   # a job that runs a while


def make_runtime(data_dir: Path, batch_limit: int = 1) -> Runtime:
    paths = paths_with_shipped_models(data_dir)
    paths.config_file.write_text(json.dumps({"samples_save": False, "grid_save": False}))  # the workers read it
    opts = Options.load(paths.config_file)
    opts.batch_compatible_jobs = batch_limit
    runtime = Runtime(args=cmd_args.parse_args(["--nowebui", "--data-dir", str(data_dir)]), paths=paths, opts=opts,
                      models=ModelManager(paths, opts))
    runtime.queue = JobQueue(data_dir / "history.db", batch_limit=lambda: runtime.opts.batch_compatible_jobs)
    return runtime


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ray.init(num_cpus=2, include_dashboard=False, namespace="sd-webui-test", log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    rt = make_runtime(tmp_path_factory.mktemp("front"))
    rt.workers = ray_workers.start(rt, "auto", 2)   # what app.py does with --ray-address (Ray is already up here)
    assert rt.args.skip_load_model_at_start and rt.models.current is None   # the front end loads no model
    rt.workers.wait_ready(2, timeout=TIMEOUT)
    yield rt
    rt.queue.close(timeout=10)
    rt.workers.close()
    ray.shutdown()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The in-process path on the same model, for reference images."""
    rt = make_runtime(tmp_path_factory.mktemp("local"))
    rt.models.select_default()
    yield rt
    rt.queue.close()


def wait_until(predicate, timeout: float = TIMEOUT) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_jobs_spread_over_both_workers_and_equal_the_in_process_images(cluster, local):
    jobs = [cluster.submit("txt2img", StableDiffusionProcessingTxt2Img(prompt=f"a red circle {i}", seed=40 + i,
                                                                       **SMALL)) for i in range(12)]
    results = [job.result(TIMEOUT).value for job in jobs]
    used = {r.worker for r in results}
    assert len(used) == 2, f"only {used} ran jobs"
    for i in (0, 5, 11):
        alone = local.submit("txt2img", StableDiffusionProcessingTxt2Img(prompt=f"a red circle {i}", seed=40 + i,
                                                                        **SMALL)).result(TIMEOUT).value
        assert np.abs(pixels(results[i].images[0]) - pixels(alone.images[0])).max() <= 2
        assert results[i].info == alone.info   # same infotext (model hash, seed, prompt) as in-process
        assert f'"seed": {40 + i}' in results[i].js()
    for job in jobs:
        assert cluster.queue.history_entry(job.id).status is JobStatus.DONE
    status = ray_workers.describe(cluster)
    assert len(status) == 2 and all(w["loaded_models"] for w in status) and {w["device"] for w in status} == {"cpu"}


def test_progress_comes_from_the_worker_and_interrupt_stops_it_within_one_step(cluster):
    job = cluster.submit("txt2img", StableDiffusionProcessingTxt2Img(prompt="a blue square", seed=1, **LONG))
    wait_until(lambda: job.state.sampling_step >= 3)
    progress = cluster.queue.progress(job.id)
    assert progress.active and progress.progress > 0 and job.state.sampling_steps == LONG["steps"]
    assert progress.eta is not None and progress.eta > 0
    from modules.ui import progress_html

    assert f"on {processed_worker(cluster, job)} (cpu)" in progress_html(job.state)   # the page's progress line
    wait_until(lambda: job.state.current_image is not None, 60)   # the worker's live preview (every 5 steps)
    with_preview = cluster.queue.progress(job.id, live_preview=True)
    assert with_preview.live_preview.startswith("data:image/png;base64,") and with_preview.id_live_preview > 0
    cluster.queue.interrupt(job.id)
    processed = job.result(TIMEOUT).value
    assert processed.interrupted and processed.images == []
    last = next(w for w in cluster.workers.workers if w.name == processed.worker).last
    [(what, arrived_at)] = last["controls"]
    assert what == "interrupt" and last["steps_done"] <= arrived_at + 1   # stopped at the next step at the latest
    assert cluster.queue.history_entry(job.id).status is JobStatus.INTERRUPTED


def test_a_worker_killed_mid_job_is_replaced_and_the_job_is_retried_on_another(cluster):
    job = cluster.submit("txt2img", StableDiffusionProcessingTxt2Img(prompt="a green star", seed=3,
                                                                     **{**LONG, "steps": 30}))
    wait_until(lambda: job.state.sampling_step >= 2)
    victim = next(w for w in cluster.workers.workers if w.running == job.id)
    os.kill(victim.info["pid"], signal.SIGKILL)
    processed = job.result(TIMEOUT).value
    assert len(processed.images) == 1 and processed.worker != victim.name
    entry = cluster.queue.history_entry(job.id)
    assert entry.status is JobStatus.DONE
    assert f"Ray worker {victim.name} died while running this job; retried on another worker" in entry.error
    # the pool starts a replacement; a worker that joined later gets jobs
    wait_until(lambda: sum(w.status == "ready" for w in cluster.workers.workers) == 2)
    newcomer = next(w for w in cluster.workers.workers if w.status == "ready" and w.jobs_done == 0)
    jobs = [cluster.submit("txt2img", StableDiffusionProcessingTxt2Img(prompt="x", seed=i, **SMALL)) for i in range(4)]
    assert newcomer.name in {j.result(TIMEOUT).value.worker for j in jobs}


def test_a_job_whose_retry_dies_too_fails_clearly_and_the_front_end_goes_on(cluster):
    from modules.ray_workers import WorkerLost

    ready = lambda: [w for w in cluster.workers.workers if w.status == "ready"]  # noqa: E731
    wait_until(lambda: len(ready()) == 2)
    job = cluster.submit("txt2img", StableDiffusionProcessingTxt2Img(prompt="a red star", seed=9,
                                                                     **{**LONG, "steps": 200}))
    wait_until(lambda: job.state.sampling_step >= 2)
    first = next(w for w in cluster.workers.workers if w.running == job.id)
    os.kill(first.info["pid"], signal.SIGKILL)
    wait_until(lambda: any(w.running == job.id and w is not first for w in cluster.workers.workers)
               and job.state.sampling_step >= 1)
    second = next(w for w in cluster.workers.workers if w.running == job.id)
    os.kill(second.info["pid"], signal.SIGKILL)
    with pytest.raises(WorkerLost, match="retried once and is given up"):
        job.result(TIMEOUT)
    entry = cluster.queue.history_entry(job.id)
    assert entry.status is JobStatus.FAILED and first.name in entry.error and second.name in entry.error
    wait_until(lambda: len(ready()) == 2)   # both replaced; the queue still serves
    assert len(cluster.submit("txt2img", StableDiffusionProcessingTxt2Img(prompt="x", **SMALL)).result(
        TIMEOUT).value.images) == 1


def test_compatible_jobs_are_batched_on_the_workers_and_equal_their_solo_runs(cluster, local):
    cluster.opts.batch_compatible_jobs = 4
    try:
        before = sum(w.jobs_done for w in cluster.workers.workers)
        hold = threading.Event()
        for _ in range(2):   # both queue threads held, so the eight jobs are pending together
            cluster.queue.submit("hold", {}, lambda state: _output(hold.wait(TIMEOUT)))
        jobs = [cluster.submit("txt2img", StableDiffusionProcessingTxt2Img(prompt=f"a yellow star {i}", seed=70 + i,
                                                                           **SMALL)) for i in range(8)]
        hold.set()
        results = [job.result(TIMEOUT).value for job in jobs]
        assert sum(w.jobs_done for w in cluster.workers.workers) - before == 2   # two batches of four
        for i in (0, 3, 6):
            alone = local.submit("txt2img", StableDiffusionProcessingTxt2Img(prompt=f"a yellow star {i}",
                                                                            seed=70 + i, **SMALL)).result(TIMEOUT).value
            assert np.abs(pixels(results[i].images[0]) - pixels(alone.images[0])).max() <= 2
            assert results[i].info == alone.info
    finally:
        cluster.opts.batch_compatible_jobs = 1


def _output(value):
    from modules.job_queue import JobOutput

    return JobOutput(value=value)


def test_without_ray_address_nothing_imports_ray():
    import subprocess
    import sys

    code = ("import sys; import app; from modules.api import api; from modules import ray_workers, runtime, batching; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr


def test_ray_address_without_ray_installed_stops_with_a_clear_message(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)   # import ray -> ImportError
    with pytest.raises(SystemExit) as info:
        ray_workers.import_ray()
    assert "--ray-address needs the optional package Ray" in str(info.value)
    assert "pip install 'ray==2.60.*'" in str(info.value)


def test_a_batch_count_is_split_over_free_workers_and_keeps_each_images_seed(cluster, local):
    wait_until(lambda: cluster.workers._free_count() == 2)
    params = dict(prompt="a blue circle", seed=500, n_iter=4, **SMALL)
    result = cluster.submit("txt2img", StableDiffusionProcessingTxt2Img(**params)).result(TIMEOUT).value
    assert len(set(result.worker.split(","))) == 2   # both workers made part of it
    alone = local.submit("txt2img", StableDiffusionProcessingTxt2Img(**params)).result(TIMEOUT).value
    assert result.all_seeds == alone.all_seeds == [500, 501, 502, 503]
    mine, theirs = result.images[result.index_of_first_image:], alone.images[alone.index_of_first_image:]
    assert len(mine) == len(theirs) == 4
    for a, b in zip(mine, theirs):
        assert np.abs(pixels(a) - pixels(b)).max() <= 2
    assert result.infotexts[result.index_of_first_image:] == alone.infotexts[alone.index_of_first_image:]
    assert result.index_of_first_image == alone.index_of_first_image   # the grid, as in a single run


def processed_worker(cluster, job) -> str:
    return next(w.name for w in cluster.workers.workers if w.running == job.id)
