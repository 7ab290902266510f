"""The same txt2img job through this app's API and ComfyUI's, timed in interleaved rounds (issue 21, item 5).

    python benchmarks/bench_peer_comfyui.py --comfyui /path/to/ComfyUI --comfy-python /path/to/comfy-venv/bin/python \
        [--ckpt FILE] [--size 256] [--steps 6] [--sampler euler] [--cfg 7] [--seed 1] [--rounds 5] [--threads 1]

ComfyUI is not a dependency of this product: give a checkout (``main.py`` in it) and the Python of ITS OWN virtual
environment (never this project's). Both servers are started here, on 127.0.0.1, with the same torch thread count
(``OMP_NUM_THREADS`` for ComfyUI, ``--threads`` for ours), ComfyUI with ``--cpu``; both see the same checkpoint
through a temporary data dir (ours) and ``--extra-model-paths-config`` (ComfyUI). Without ``--ckpt`` an
SD1.5-architecture checkpoint with random weights is built (as ``bench_core.py`` does).

One job = checkpoint, size, steps, sampler + schedule, CFG, seed, empty negative prompt; each server's default
previews and saving (ComfyUI's SaveImage node writes a PNG as ours does). ComfyUI caches node outputs, so every round
uses a new seed (the same one for both servers). Timed: POST to the finished job (ours: the txt2img response;
ComfyUI: /prompt, then /history/<id> polled every 20 ms until the prompt is there with its outputs). Prints the
medians and ours/ComfyUI per job.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# this app's (sampler, schedule) for ComfyUI's (sampler_name, scheduler)
SAMPLERS = {
    ("euler", "normal"): ("Euler", "Automatic"),
    ("euler", "karras"): ("Euler", "Karras"),
    ("euler_ancestral", "normal"): ("Euler a", "Automatic"),
    ("dpmpp_2m", "karras"): ("DPM++ 2M", "Karras"),
    ("dpmpp_2m", "normal"): ("DPM++ 2M", "Automatic"),
    ("ddim", "ddim_uniform"): ("DDIM", "Automatic"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, timeout: float = 3600) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def wait_until_up(url: str, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:g} s")


def comfy_graph(ckpt_name: str, prompt: str, size: int, steps: int, cfg: float, seed: int, sampler: str,
                scheduler: str) -> dict:
    """ComfyUI's API-format graph of a plain txt2img."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": seed,
            "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler, "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }


def run_comfy(base: str, graph: dict) -> None:
    prompt_id = http("POST", f"{base}/prompt", {"prompt": graph, "client_id": str(uuid.uuid4())})["prompt_id"]
    while True:
        history = http("GET", f"{base}/history/{prompt_id}")
        entry = history.get(prompt_id)
        if entry:
            status = entry.get("status", {})
            if status.get("status_str") == "error":
                raise RuntimeError(f"ComfyUI failed the job: {json.dumps(status)[:2000]}")
            if entry.get("outputs"):
                return
        time.sleep(0.02)


def run_ours(base: str, body: dict) -> None:
    response = http("POST", f"{base}/sdapi/v1/txt2img", body)
    if not response.get("images"):
        raise RuntimeError(f"no image from our API: {str(response)[:500]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", type=Path, required=True, help="ComfyUI checkout (with main.py)")
    ap.add_argument("--comfy-python", type=Path, required=True, help="python of ComfyUI's own virtual environment")
    ap.add_argument("--ckpt", type=Path, default=None, help="checkpoint file (default: random SD1.5 architecture)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--sampler", default="euler", help="ComfyUI sampler_name (euler, euler_ancestral, dpmpp_2m, ddim)")
    ap.add_argument("--scheduler", default="normal", help="ComfyUI scheduler (normal, karras, ddim_uniform)")
    ap.add_argument("--cfg", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of both servers")
    ap.add_argument("--prompt", default="a photo of an astronaut riding a horse")
    args = ap.parse_args()
    if not (args.comfyui / "main.py").is_file():
        sys.exit(f"--comfyui: no main.py in {args.comfyui}")
    if not args.comfy_python.is_file():
        sys.exit(f"--comfy-python: {args.comfy_python} does not exist")
    if (args.sampler, args.scheduler) not in SAMPLERS:
        sys.exit(f"--sampler/--scheduler: pick one of {sorted(SAMPLERS)}")
    ours_sampler, ours_schedule = SAMPLERS[(args.sampler, args.scheduler)]

    work = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    procs: list[subprocess.Popen] = []
    try:
        ckpt_dir = work / "data" / "models" / "Stable-diffusion"
        ckpt_dir.mkdir(parents=True)
        if args.ckpt is None:
            from benchmarks.bench_core import build_sd15_random

            ckpt = build_sd15_random(ckpt_dir / "sd15-random.safetensors")
        else:
            ckpt = ckpt_dir / args.ckpt.name
            ckpt.symlink_to(args.ckpt.resolve())
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
               "GRADIO_ANALYTICS_ENABLED": "False", "DO_NOT_TRACK": "1"}
        (work / "extra_model_paths.yaml").write_text(
            f"bench:\n    base_path: {work / 'data'}\n    checkpoints: models/Stable-diffusion\n")
        comfy_port, our_port = free_port(), free_port()
        comfy_out = work / "comfy-output"
        procs.append(subprocess.Popen(
            [str(args.comfy_python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(comfy_port),
             "--extra-model-paths-config", str(work / "extra_model_paths.yaml"), "--output-directory", str(comfy_out),
             "--disable-auto-launch"],
            cwd=args.comfyui, env=env, stdout=open(work / "comfy.log", "w"), stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(
            [sys.executable, "app.py", "--nowebui", "--api", "--port", str(our_port), "--data-dir", str(work / "data"),
             "--ckpt", str(ckpt), "--threads", str(args.threads)],
            cwd=REPO, env=env, stdout=open(work / "ours.log", "w"), stderr=subprocess.STDOUT))
        comfy, ours = f"http://127.0.0.1:{comfy_port}", f"http://127.0.0.1:{our_port}"
        wait_until_up(f"{comfy}/system_stats", procs[0], "ComfyUI")
        wait_until_up(f"{ours}/sdapi/v1/sd-models", procs[1], "this app")

        def comfy_job(seed: int) -> None:
            run_comfy(comfy, comfy_graph(ckpt.name, args.prompt, args.size, args.steps, args.cfg, seed,
                                         args.sampler, args.scheduler))

        def our_job(seed: int) -> None:
            run_ours(ours, {"prompt": args.prompt, "negative_prompt": "", "steps": args.steps, "cfg_scale": args.cfg,
                            "width": args.size, "height": args.size, "seed": seed, "sampler_name": ours_sampler,
                            "scheduler": ours_schedule})

        times: dict[str, list[float]] = {"ours": [], "comfyui": []}
        for round_no in range(args.rounds + 1):       # round 0 warms both up (model loads, first-call costs)
            seed = args.seed + round_no
            for name, job in (("ours", our_job), ("comfyui", comfy_job)):
                t = time.perf_counter()
                job(seed)
                if round_no:
                    times[name].append(time.perf_counter() - t)
        medians = {name: statistics.median(values) for name, values in times.items()}
        load = os.getloadavg()
        print(f"Job: `{ckpt.name}`, {args.size}x{args.size}, {args.steps} steps, {ours_sampler} / {ours_schedule} "
              f"(ComfyUI {args.sampler} / {args.scheduler}), CFG {args.cfg:g}, {args.rounds} interleaved rounds after "
              f"a warm-up, {args.threads} torch thread(s) each, load average {load[0]:.1f} / {load[1]:.1f} at the "
              f"end, {os.cpu_count()} cores\n")
        print("| job | ours | ComfyUI | ours / ComfyUI | target |\n|---|---|---|---|---|")
        print(f"| txt2img {args.size}², {args.steps} steps, {ours_sampler} | {medians['ours']:.2f} s | "
              f"{medians['comfyui']:.2f} s | {medians['ours'] / medians['comfyui']:.3f} | ≤ 0.9 |")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
