"""Generation on Ray worker actors (``--ray-address``): the front end keeps the UI, API, queue and SQLite history;
each job runs in a ``GenerationWorker`` actor, one per GPU (``num_gpus=1``) or per CPU slot (``--ray-cpu-workers``).

Ray is an optional dependency: this module is only imported with ``--ray-address`` (and ``describe`` without a pool
never touches Ray).

- Each worker is an app ``Runtime`` of its own (same ``--data-dir`` / ``--ckpt-dir`` paths, its own model LRU); it
  runs the job's ``p`` (its scripts stay in the front end) and saves its files under its own data dir.
- Routing: a free worker that has the job's checkpoint loaded, else the free one that has done the fewest jobs. The
  queue gets one worker thread per ready worker, so that many jobs (or batches, ``modules.batching``) run at once.
- Live state: while a job runs, its front-end ``JobState`` gets the worker's step, ETA inputs, text and preview every
  ``POLL_S``; interrupt / skip / "stop after this image" are forwarded as soon as they are set (the worker is a
  threaded actor, so its ``control`` call runs while ``generate`` does: it stops at the next step).
- Faults: a worker that dies under a job (``RayActorError``) is dropped; the job runs once more on another worker
  (noted in its history row), then fails with a clear error. A pool thread keeps the number of workers: dead ones
  are replaced, and GPUs of machines that join later get workers of their own.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Collection

from modules.progress import JobState

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.1             # how often a running job's progress is fetched from its worker
CONTROL_S = 0.02         # how often the front-end flags (interrupt, skip) are looked at while a job runs
SYNC_S = 2.0             # how often the pool looks for dead workers and new GPUs
ACQUIRE_TIMEOUT_S = 600  # how long a job waits for a worker before it fails
RAY_MISSING = ("--ray-address needs the optional package Ray, which is not installed: "
               "venv/bin/python -m pip install 'ray==2.60.*' (see README, 'Several GPUs or machines with Ray')")


class WorkerLost(RuntimeError):
    """The workers running a job died (twice), or no worker could be found for it."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SystemExit(RAY_MISSING) from None
    return ray


# ---------------------------------------------------------------------------------------------------------------------
# the actor (runs in a Ray worker process)
# ---------------------------------------------------------------------------------------------------------------------
class GenerationWorker:
    """One generation worker: the app's own ``Runtime`` on this process's device."""

    def __init__(self, args: dict[str, Any], name: str, device: str) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from modules.runtime import Runtime

        namespace = argparse.Namespace(**args)
        namespace.device = device
        self.runtime = Runtime.create(namespace)
        self.name = name
        self.state: JobState | None = None
        self.task_id: str | None = None
        self.jobs_done = 0
        self.controls: list[tuple[str, int]] = []   # (what, steps done when it arrived), for the running job

    def describe(self) -> dict[str, Any]:
        import ray

        return {"name": self.name, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "device": str(self.runtime.device), "loaded_models": self._loaded(), "running": self.task_id,
                "jobs_done": self.jobs_done}

    def _loaded(self) -> list[str]:
        return [m.sd_checkpoint_info.title for m in self.runtime.models.loaded()]

    def generate(self, task_id: str, p: Any, native_size: list[str], checkpoint: str | None) -> dict[str, Any]:
        state = JobState()
        state.begin(job=task_id)
        self.state, self.task_id, self.controls = state, task_id, []
        try:
            if checkpoint and not (p.override_settings or {}).get("sd_model_checkpoint"):
                self.runtime.models.load(checkpoint)
            processed = self.runtime.run(p, state, native_size)
            model = processed.p.sd_model
            info = model.sd_checkpoint_info
            return {
                "images": processed.images, "infotexts": processed.infotexts, "seed": processed.seed,
                "all_prompts": processed.all_prompts, "all_negative_prompts": processed.all_negative_prompts,
                "all_seeds": processed.all_seeds, "all_subseeds": processed.all_subseeds,
                "index_of_first_image": processed.index_of_first_image, "comments": processed.comments,
                "interrupted": processed.interrupted, "files": processed.files, "timings": processed.timings,
                "js": processed.js(), "width": processed.p.width, "height": processed.p.height,
                "extra_generation_params": dict(processed.p.extra_generation_params),
                "clip_skip": processed.p.clip_skip,
                "model": {"title": info.title, "model_name": info.model_name, "hash": model.sd_model_hash,
                          "vae_name": getattr(model, "sd_vae_name", None),
                          "vae_hash": getattr(model, "sd_vae_hash", None), "native_size": model.native_size},
                "worker": self.name, "loaded_models": self._loaded(), "controls": list(self.controls),
                "steps_done": state.sampling_step,
            }
        finally:
            self.task_id = None
            self.jobs_done += 1

    def progress(self, last_preview: int) -> dict[str, Any]:
        s = self.state
        if s is None:
            return {}
        snap = {name: getattr(s, name) for name in ("job_no", "job_count", "sampling_step", "sampling_steps",
                                                    "textinfo", "id_live_preview")}
        snap["preview"] = None
        image = s.current_image
        if image is not None and s.id_live_preview != last_preview:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            snap["preview"] = buf.getvalue()
        return snap

    def control(self, what: str) -> int:
        """``interrupt``, ``skip`` or ``stop_generating`` on the running job; returns the steps done when it arrived."""
        s = self.state
        if s is None or what not in ("interrupt", "skip", "stop_generating"):
            return -1
        step = s.sampling_step
        getattr(s, what)()
        self.controls.append((what, step))
        return step

    def pid(self) -> int:
        return os.getpid()


# ---------------------------------------------------------------------------------------------------------------------
# the front end's side
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class WorkerHandle:
    name: str
    actor: Any
    gpu: bool
    ready_ref: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    status: str = "starting"         # starting -> ready -> dead
    running: str | None = None       # task id
    loaded: list[str] = field(default_factory=list)
    jobs_done: int = 0
    last: dict[str, Any] = field(default_factory=dict)   # what the last job reported (controls, steps done)

    def as_dict(self) -> dict[str, Any]:
        device = self.info.get("device", "gpu" if self.gpu else "cpu")
        return {"name": self.name, "status": self.status, "device": device,
                "node": self.info.get("node"), "pid": self.info.get("pid"), "loaded_models": list(self.loaded),
                "running": self.running, "jobs_done": self.jobs_done}


class RayWorkerPool:
    def __init__(self, runtime: Any, cpu_workers: int | None = None, *, sync_interval: float = SYNC_S) -> None:
        self.ray = import_ray()
        self.runtime = runtime
        self.cpu_workers = cpu_workers
        self.workers: list[WorkerHandle] = []
        self._cond = threading.Condition()
        self._count = 0
        self._slots = 1              # queue worker threads (the queue starts with one)
        self._stop = threading.Event()
        self._actor_class = self.ray.remote(max_concurrency=4)(GenerationWorker)
        self._args = {k: v for k, v in vars(runtime.args).items() if isinstance(v, (str, int, float, bool, list,
                                                                                    type(None)))}
        self.sync()
        self._thread = threading.Thread(target=self._keep, args=(sync_interval,), name="ray-pool", daemon=True)
        self._thread.start()

    # -- the set of workers ----------------------------------------------------------------------------------------
    def sync(self) -> None:
        """Replace dead workers, start one for each GPU without one, mark started ones ready."""
        ray = self.ray
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = self.cpu_workers if self.cpu_workers is not None else (0 if gpus else 1)
        with self._cond:
            alive = [w for w in self.workers if w.status != "dead"]
            missing_gpu = gpus - sum(w.gpu for w in alive)
            missing_cpu = cpus - sum(not w.gpu for w in alive)
        for gpu in [True] * max(missing_gpu, 0) + [False] * max(missing_cpu, 0):
            self._spawn(gpu)
        self._ping_idle()
        with self._cond:
            starting = [w for w in self.workers if w.status == "starting"]
        for w in starting:
            done, _ = ray.wait([w.ready_ref], timeout=0)
            if not done:
                continue
            try:
                w.info = ray.get(w.ready_ref)
            except Exception as e:  # noqa: BLE001 - it never became ready
                log.error("Ray worker %s could not start: %s", w.name, e)
                self._mark_dead(w)
                continue
            with self._cond:
                w.status = "ready"
                ready = sum(x.status == "ready" for x in self.workers)
                extra = ready - self._slots
                if extra > 0:
                    self._slots += extra
                self._cond.notify_all()
            log.info("Ray worker %s ready on %s (pid %s)", w.name, w.info.get("device"), w.info.get("pid"))
            if extra > 0 and self.runtime.queue is not None:
                self.runtime.queue.add_workers(extra)

    def _ping_idle(self) -> None:
        """Ask idle workers how they are: a dead one is noticed before a job is sent to it; loaded models refresh."""
        ray = self.ray
        with self._cond:
            idle = [w for w in self.workers if w.status == "ready" and w.running is None]
        refs = {w.actor.describe.remote(): w for w in idle}
        if not refs:
            return
        done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=5)
        for ref in done:
            w = refs[ref]
            try:
                info = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                log.error("Ray worker %s is gone: %s", w.name, e)
                self._mark_dead(w)
                continue
            with self._cond:
                w.info, w.loaded = info, info["loaded_models"]

    def _spawn(self, gpu: bool) -> WorkerHandle:
        with self._cond:
            name = f"{'gpu' if gpu else 'cpu'}-worker-{self._count}"
            self._count += 1
        resources = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": 1}
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        for key in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "TOKENIZERS_PARALLELISM"):
            if key in os.environ:
                env[key] = os.environ[key]
        actor = self._actor_class.options(**resources, runtime_env={"env_vars": env}).remote(
            self._args, name, "cuda" if gpu else "cpu")
        handle = WorkerHandle(name=name, actor=actor, gpu=gpu, ready_ref=actor.describe.remote())
        with self._cond:
            self.workers.append(handle)
        log.info("Starting Ray worker %s", name)
        return handle

    def _keep(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - the pool thread must keep going
                log.exception("Ray worker pool")

    def _mark_dead(self, w: WorkerHandle) -> None:
        with self._cond:
            w.status, w.running = "dead", None
            self._cond.notify_all()

    def wait_ready(self, count: int, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while sum(w.status == "ready" for w in self.workers) < count:
            if time.time() > deadline:
                raise TimeoutError(f"fewer than {count} Ray workers are ready after {timeout:.0f}s")
            self.sync()
            time.sleep(0.2)

    def close(self) -> None:
        self._stop.set()
        for w in list(self.workers):
            try:
                self.ray.kill(w.actor)
            except Exception:  # noqa: BLE001
                pass

    def describe(self) -> list[dict[str, Any]]:
        with self._cond:
            return [w.as_dict() for w in self.workers if w.status != "dead"]

    # -- running a job ---------------------------------------------------------------------------------------------
    def _acquire(self, checkpoint: str | None, avoid: set[str], task_id: str) -> WorkerHandle:
        deadline = time.time() + ACQUIRE_TIMEOUT_S
        with self._cond:
            while True:
                free = [w for w in self.workers if w.status == "ready" and w.running is None and w.name not in avoid]
                if free:
                    affine = [w for w in free if checkpoint in w.loaded]
                    w = min(affine or free, key=lambda x: x.jobs_done)
                    w.running = task_id
                    return w
                if time.time() > deadline:
                    raise WorkerLost(f"no Ray worker became free within {ACQUIRE_TIMEOUT_S}s")
                self._cond.wait(0.5)

    def _release(self, w: WorkerHandle) -> None:
        with self._cond:
            w.running = None
            self._cond.notify_all()

    def checkpoint_for(self, p: Any) -> str | None:
        models = self.runtime.models
        wanted = (p.override_settings or {}).get("sd_model_checkpoint") or self.runtime.opts.sd_model_checkpoint
        try:
            info = models.get_info(wanted) if wanted else models.default_checkpoint()
        except Exception:  # noqa: BLE001 - the worker reports what it cannot load
            return wanted or None
        return info.title if info is not None else None

    def prepare(self, p: Any, state: JobState, native_size: Collection[str] = ()) -> Any:
        """What ``Runtime.prepare`` attaches, without loading a model here (a batch member's own infotext and file)."""
        p.opts, p.state = self.runtime.opts, state
        p.data_dir = str(self.runtime.paths.data_dir)
        p.allowed_output_dirs = self.runtime.paths.allowed_output_dirs
        return p

    def run(self, p: Any, state: JobState, native_size: Collection[str] = ()) -> Any:
        """Run ``p`` on a worker; a worker dying under it makes it run once more on another one. A batch count above
        1 is split over the free workers when there are several (``_run_split``)."""
        from modules import job_queue

        job = job_queue.current_job()
        parts = min(p.n_iter, self._free_count())
        if parts > 1 and isinstance(getattr(p, "hr_prompt", ""), str) and \
                isinstance(getattr(p, "hr_negative_prompt", ""), str):
            return self._run_split(p, state, native_size, job, parts)
        return self._run_one(p, state, native_size, job)

    def _free_count(self) -> int:
        with self._cond:
            return sum(w.status == "ready" and w.running is None for w in self.workers)

    def _run_one(self, p: Any, state: JobState, native_size: Collection[str], job: Any) -> Any:
        task_id = job.id if job is not None else f"task(direct-{id(p):x})"
        checkpoint = self.checkpoint_for(p)
        sendable = p.model_copy(update={"sd_model": None, "opts": None, "state": None, "scripts": None,
                                        "prompt_resources": None, "upscalers": None, "attention_controllers": []})
        died: list[str] = []
        while True:
            w = self._acquire(checkpoint, set(died), task_id)
            try:
                result = self._run_on(w, task_id, sendable, state, list(native_size), checkpoint)
            except self.ray.exceptions.RayActorError as e:
                self._mark_dead(w)
                died.append(w.name)
                log.error("Ray worker %s died while running %s: %s", w.name, task_id, e)
                if len(died) > 1:
                    raise WorkerLost(f"Ray workers {', '.join(died)} died while running this job; it was retried "
                                     f"once and is given up") from None
                note = f"Ray worker {w.name} died while running this job; retried on another worker"
                for member in (job.group or [job]) if job is not None else []:
                    member.notes.append(note)
                state.sampling_step = state.job_no = 0
                continue
            finally:
                self._release(w)
            return self._processed(p, result)

    def _run_on(self, w: WorkerHandle, task_id: str, p: Any, state: JobState, native_size: list[str],
                checkpoint: str | None) -> dict[str, Any]:
        ray = self.ray
        ref = w.actor.generate.remote(task_id, p, native_size, checkpoint)
        state.worker = f"{w.name} ({w.info.get('device', '?')})"   # shown with the progress in the page
        sent: set[str] = set()
        last_poll, last_preview = 0.0, -1
        while True:
            done, _ = ray.wait([ref], timeout=CONTROL_S)
            for flag, what in (("interrupted", "interrupt"), ("skipped", "skip"),
                               ("stopping_generation", "stop_generating")):
                if getattr(state, flag) and what not in sent:
                    w.actor.control.remote(what)
                    sent.add(what)
            if done:
                result = ray.get(ref)   # raises RayActorError when the worker died under the job
                with self._cond:
                    w.loaded, w.jobs_done, w.last = result["loaded_models"], w.jobs_done + 1, result
                return result
            if time.time() - last_poll >= POLL_S:
                last_poll = time.time()
                try:
                    snap = ray.get(w.actor.progress.remote(last_preview), timeout=5)
                except ray.exceptions.GetTimeoutError:
                    continue
                except ray.exceptions.RayActorError:
                    continue   # the generate call reports it
                last_preview = self._apply(state, snap, last_preview, sent)

    def _run_split(self, p: Any, state: JobState, native_size: Collection[str], job: Any, parts: int) -> Any:
        """A batch count split over ``parts`` workers: each part gets whole batches with the prompts and seeds those
        images have in a single run (image i keeps seed + i), so the images are the same; gathered in order."""
        from modules import images, processing, rng

        processing.fix_seed(p)
        n = p.batch_size * p.n_iter
        prompts = processing._expand(p.prompt, n)
        negatives = processing._expand(p.negative_prompt, n)
        seeds, subseeds = rng.job_seeds(processing._first(p.seed), processing._first(p.subseed), p.subseed_strength, n)
        if isinstance(p.seed, list):
            seeds = [int(v) for v in p.seed[:n]]
        if isinstance(p.subseed, list):
            subseeds = [int(v) for v in p.subseed[:n]]
        share, extra = divmod(p.n_iter, parts)
        chunks, start = [], 0
        for k in range(parts):
            iters = share + (k < extra)
            a, b = start * p.batch_size, (start + iters) * p.batch_size
            chunks.append(p.model_copy(update={
                "prompt": prompts[a:b], "negative_prompt": negatives[a:b], "seed": seeds[a:b],
                "subseed": subseeds[a:b], "n_iter": iters, "do_not_save_grid": True,
                "extra_generation_params": dict(p.extra_generation_params), "comments": dict(p.comments)}))
            start += iters
        states = [JobState() for _ in chunks]
        for s in states:
            s.begin(job=state.job)
        results: list[Any] = [None] * parts

        def part(k: int) -> None:
            try:
                results[k] = self._run_one(chunks[k], states[k], native_size, job)
            except BaseException as e:  # noqa: BLE001 - raised below, in the job's thread
                results[k] = e

        threads = [threading.Thread(target=part, args=(k,), daemon=True, name=f"ray-part-{k}") for k in range(parts)]
        for t in threads:
            t.start()
        log.info("Batch count %d split over %d Ray workers", p.n_iter, parts)
        state.job_count = p.n_iter
        while any(t.is_alive() for t in threads):
            for flag, what in (("interrupted", "interrupt"), ("skipped", "skip"),
                               ("stopping_generation", "stop_generating")):
                if getattr(state, flag):
                    for s in states:
                        if not getattr(s, flag):
                            getattr(s, what)()
            state.job_no = sum(s.job_no for s in states)
            state.sampling_steps = max(s.sampling_steps for s in states)
            state.sampling_step = min((s.sampling_step for s in states if s.job_no < s.job_count),
                                      default=state.sampling_steps)
            shown = next((s for s in states if s.current_image is not None), None)
            if shown is not None and shown.id_live_preview != state.id_live_preview:
                state.current_image, state.id_live_preview = shown.current_image, shown.id_live_preview
            time.sleep(CONTROL_S)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed
        first = results[0]
        p.sd_model, p.opts = first.p.sd_model, first.p.opts
        p.width, p.height, p.clip_skip = first.p.width, first.p.height, first.p.clip_skip
        p.extra_generation_params.update(first.p.extra_generation_params)
        p.all_prompts = [x for r in results for x in r.all_prompts]
        p.all_negative_prompts = [x for r in results for x in r.all_negative_prompts]
        p.all_seeds = [x for r in results for x in r.all_seeds]
        p.all_subseeds = [x for r in results for x in r.all_subseeds]
        outputs = [im for r in results for im in r.images[r.index_of_first_image:]]
        infotexts = [t for r in results for t in r.infotexts[r.index_of_first_image:]]
        files = [f for r in results for f in r.files]
        opts, index_of_first_image = p.opts, 0
        interrupted = any(r.interrupted for r in results)
        if len(outputs) > 1 and (opts.return_grid or opts.grid_save) and not p.do_not_save_grid:
            grid = images.image_grid(outputs, p.batch_size)
            if opts.enable_pnginfo:
                grid.info["parameters"] = infotexts[0]
            if opts.grid_save:
                p.data_dir = p.data_dir or str(self.runtime.paths.data_dir)
                fullfn, _ = images.save_image(grid, processing._outdir(p, grid=True), "grid", p.all_seeds[0],
                                              p.all_prompts[0], opts.grid_format, info=infotexts[0], grid=True, p=p,
                                              opts=opts)
                files.append(fullfn)
            if opts.return_grid:
                outputs.insert(0, grid)
                infotexts.insert(0, infotexts[0])
                index_of_first_image = 1
        processed = processing.Processed(
            p=p, images=outputs, infotexts=infotexts, seed=p.all_seeds[0], all_seeds=p.all_seeds,
            all_subseeds=p.all_subseeds, all_prompts=p.all_prompts, all_negative_prompts=p.all_negative_prompts,
            index_of_first_image=index_of_first_image, comments="\n".join(filter(None, (r.comments for r in results))),
            interrupted=interrupted, files=files, timings=first.timings)
        processed.worker = ",".join(r.worker for r in results)
        return processed

    @staticmethod
    def _apply(state: JobState, snap: dict[str, Any], last_preview: int, sent: set[str]) -> int:
        if not snap:
            return last_preview
        if snap["job_no"] > state.job_no:   # a new image of the job: a skip is for one image only
            state.skipped = False
            sent.discard("skip")
        for name in ("job_no", "job_count", "sampling_step", "sampling_steps", "textinfo"):
            setattr(state, name, snap[name])
        if snap["preview"] is not None:
            from PIL import Image

            state.set_current_image(Image.open(io.BytesIO(snap["preview"])))
            last_preview = snap["id_live_preview"]
        return last_preview

    def _processed(self, p: Any, r: dict[str, Any]) -> Any:
        """The worker's result as the front end's ``Processed`` (its ``js()`` is the worker's)."""
        from modules.processing import Processed, apply_overrides

        if p.opts is None:   # a batch's merged job: its members' infotexts read the options
            p.opts = apply_overrides(self.runtime.opts, p.override_settings) if p.override_settings else \
                self.runtime.opts
        model = r["model"]
        p.sd_model = SimpleNamespace(
            sd_checkpoint_info=SimpleNamespace(title=model["title"], model_name=model["model_name"]),
            sd_model_hash=model["hash"], sd_vae_name=model["vae_name"], sd_vae_hash=model["vae_hash"],
            native_size=model["native_size"])
        p.width, p.height, p.clip_skip = r["width"], r["height"], r["clip_skip"]
        p.extra_generation_params.update(r["extra_generation_params"])
        p.all_prompts, p.all_negative_prompts = r["all_prompts"], r["all_negative_prompts"]
        p.all_seeds, p.all_subseeds = r["all_seeds"], r["all_subseeds"]
        processed = Processed(p=p, images=r["images"], infotexts=r["infotexts"], seed=r["seed"],
                              all_prompts=r["all_prompts"], all_negative_prompts=r["all_negative_prompts"],
                              all_seeds=r["all_seeds"], all_subseeds=r["all_subseeds"],
                              index_of_first_image=r["index_of_first_image"], comments=r["comments"],
                              interrupted=r["interrupted"], files=r["files"], timings=r["timings"])
        processed.js = lambda: r["js"]
        processed.worker = r["worker"]
        return processed


def start(runtime: Any, address: str, cpu_workers: int | None) -> RayWorkerPool:
    """Connect to the Ray cluster at ``address`` and start the workers (the front end loads no model itself)."""
    ray = import_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, namespace="sd-webui", log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise SystemExit(f"--ray-address {address}: no Ray cluster could be reached ({e}). Start one first with "
                             f"`venv/bin/ray start --head --node-ip-address 127.0.0.1` (see README).") from None
    runtime.args.skip_load_model_at_start = True
    pool = RayWorkerPool(runtime, cpu_workers)
    log.info("Ray cluster at %s: %s; workers starting", address, ray.cluster_resources())
    return pool


def describe(runtime: Any) -> list[dict[str, Any]]:
    """``/sdapi/v1/workers``: every worker, its device, loaded models and the job it runs."""
    if runtime.workers is not None:
        return runtime.workers.describe()
    running = runtime.queue.running() if runtime.queue is not None else []
    return [{"name": "local", "status": "ready", "device": str(runtime.device), "node": None, "pid": os.getpid(),
             "loaded_models": [m.sd_checkpoint_info.title for m in runtime.models.loaded()],
             "running": running[0].id if running else None, "jobs_done": None}]
