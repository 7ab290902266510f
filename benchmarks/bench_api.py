"""API throughput: 20 small txt2img requests sent concurrently vs the same 20 one after another.

    python benchmarks/bench_api.py [--model PATH] [--requests 20] [--batch-limit 8]

Starts `app.py --nowebui` on a loopback port with a data dir holding the model, and prints a Markdown table
(throughput ratio = sequential wall time / concurrent wall time; target >= 1.0). ``--batch-limit`` sets the
``batch_compatible_jobs`` setting (1 = batching off): concurrent compatible requests share UNet batches.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent


def start_server(model: Path, threads: int | None, batch_limit: int | None = None
                 ) -> tuple[subprocess.Popen, str, Path]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    if batch_limit is not None:
        (data_dir / "config.json").write_text(json.dumps({"batch_compatible_jobs": batch_limit}))
    ckpt_dir = data_dir / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    shutil.copy(model, ckpt_dir)
    sidecar = model.with_name(model.name + ".sha256")
    if sidecar.exists():
        shutil.copy(sidecar, ckpt_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "app.py", "--nowebui", "--data-dir", str(data_dir), "--port", str(port)]
    if threads:
        command += ["--threads", str(threads)]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/sdapi/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/sd-models", timeout=2).json():
                return proc, url, data_dir
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="the server's torch threads (1 on a busy machine)")
    ap.add_argument("--batch-limit", type=int, default=None, help="batch_compatible_jobs (default: the setting's)")
    args = ap.parse_args()
    model = args.model or next((REPO / "models" / "Stable-diffusion").glob("*.safetensors"))
    proc, url, data_dir = start_server(model, args.threads, args.batch_limit)
    body = {"prompt": "a red circle on a blue background", "steps": args.steps, "width": 64, "height": 64,
            "sampler_name": "Euler a", "cfg_scale": 6}

    def one(i: int) -> None:
        r = requests.post(f"{url}/txt2img", json={**body, "seed": i}, timeout=600)
        r.raise_for_status()

    try:
        one(0)  # warm-up: the model loads on first use
        t = time.perf_counter()
        for i in range(args.requests):
            one(i)
        sequential = time.perf_counter() - t
        t = time.perf_counter()
        with ThreadPoolExecutor(args.requests) as pool:
            list(pool.map(one, range(args.requests)))
        concurrent = time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"{args.requests} txt2img requests, 64x64, {args.steps} steps, Euler a, model `{model.name}`, "
          f"batch_compatible_jobs {args.batch_limit if args.batch_limit is not None else 'default'}\n")
    print("| benchmark | sequential | concurrent | throughput ratio | target |\n|---|---|---|---|---|")
    print(f"| API throughput | {sequential:.2f} s | {concurrent:.2f} s | {sequential / concurrent:.2f} | ≥ 1.0 (aim 1.3) |")


if __name__ == "__main__":
    main()
