"""Ray workers: the cost of the Ray hop per job, and two CPU workers against one.

    python benchmarks/bench_ray.py [--jobs 8] [--steps 10] [--size 64]

Starts a local Ray cluster (``ray.init(num_cpus=2)``, ended by ``ray.shutdown()`` of this process), and runs the same
txt2img jobs (default model) through the app's queue three ways, in one run: in-process, on one Ray CPU worker, on
two. Prints a Markdown table: wall time per job, the Ray hop's overhead per job (one worker against in-process),
two workers against one, and the time from submit to the first sampling step.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_runtime(data_dir: Path):
    from modules import cmd_args
    from modules.job_queue import JobQueue
    from modules.options import Options
    from modules.paths import Paths
    from modules.runtime import Runtime
    from modules.sd_models import ModelManager

    paths = Paths.from_args(str(data_dir))
    paths.ckpt_dir.mkdir(parents=True, exist_ok=True)
    for model in (REPO / "models" / "Stable-diffusion").iterdir():
        shutil.copy(model, paths.ckpt_dir)
    paths.config_file.write_text(json.dumps({"samples_save": False, "grid_save": False, "batch_compatible_jobs": 1}))
    opts = Options.load(paths.config_file)
    runtime = Runtime(args=cmd_args.parse_args(["--nowebui", "--data-dir", str(data_dir), "--threads", "1"]),
                      paths=paths, opts=opts, models=ModelManager(paths, opts))
    runtime.queue = JobQueue(data_dir / "history.db", batch_limit=1)
    return runtime


def run_jobs(runtime, n: int, steps: int, size: int) -> tuple[float, float]:
    """n jobs submitted at once; (wall seconds, median seconds from submit to the job's first step)."""
    from modules.processing import StableDiffusionProcessingTxt2Img

    t0 = time.perf_counter()
    jobs = [runtime.submit("txt2img", StableDiffusionProcessingTxt2Img(
        prompt="a red circle on a blue background", seed=i, steps=steps, width=size, height=size,
        sampler_name="Euler a", cfg_scale=6)) for i in range(n)]
    first_step: dict[str, float] = {}
    while not all(j.future.done() for j in jobs):
        for j in jobs:
            if j.id not in first_step and j.state.sampling_step >= 1:
                first_step[j.id] = time.time() - j.created
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    for j in jobs:
        j.result()
    return wall, statistics.median(first_step.values()) if first_step else float("nan")


def one_at_a_time(runtime, n: int, steps: int, size: int) -> tuple[float, float]:
    walls, firsts = [], []
    for _ in range(n):
        wall, first = run_jobs(runtime, 1, steps, size)
        walls.append(wall)
        firsts.append(first)
    return sum(walls), statistics.median(firsts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    import ray
    import torch

    from modules import ray_workers

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        local = make_runtime(tmp / "local")
        local.models.select_default()
        one_at_a_time(local, 1, args.steps, args.size)   # warm-up
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(tmp / "ray"))
        remote = make_runtime(tmp / "remote")
        remote.workers = ray_workers.RayWorkerPool(remote, cpu_workers=1, sync_interval=0.5)
        remote.workers.wait_ready(1)
        one_at_a_time(remote, 1, args.steps, args.size)  # warm-up: the worker loads the model
        rows = {}
        for round_ in range(2):   # interleaved rounds, best of two
            for name, rt in (("in-process", local), ("Ray, 1 worker", remote)):
                wall, first = one_at_a_time(rt, args.jobs, args.steps, args.size)
                best = rows.get(name)
                rows[name] = (wall, first) if best is None or wall < best[0] else best
        remote.workers.cpu_workers = 2
        remote.workers.wait_ready(2)
        run_jobs(remote, 2, args.steps, args.size)  # warm-up of the second worker
        two = run_jobs(remote, args.jobs, args.steps, args.size)
        remote.workers.close()
        ray.shutdown()
        local.queue.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    local_wall, local_first = rows["in-process"]
    ray_wall, ray_first = rows["Ray, 1 worker"]
    print(f"{args.jobs} txt2img jobs, {args.size}x{args.size}, {args.steps} steps, Euler a, default model, "
          f"1 torch thread per process\n")
    print("| measure | in-process | Ray | ratio |\n|---|---|---|---|")
    print(f"| wall per job, one at a time (Ray: 1 CPU worker) | {local_wall / args.jobs:.3f} s | "
          f"{ray_wall / args.jobs:.3f} s | {ray_wall / local_wall:.2f} "
          f"(overhead {100 * (ray_wall / local_wall - 1):+.0f} %) |")
    print(f"| submit → first step (median) | {local_first * 1000:.0f} ms | {ray_first * 1000:.0f} ms | "
          f"{ray_first / local_first:.2f} |")
    print(f"| {args.jobs} jobs at once: 2 CPU workers vs 1 (one at a time) | {ray_wall:.2f} s | {two[0]:.2f} s | "
          f"{ray_wall / two[0]:.2f} |")


if __name__ == "__main__":
    main()
