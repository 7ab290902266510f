"""Core benchmarks (issue: generation core), each a ratio measured in one run on this machine.

    python benchmarks/bench_core.py [--model PATH] [--repeats 5]

(a) txt2img wall time / raw compute floor (steps x UNet on the CFG batch + text encode + VAE decode), 64x64, 20 steps
(b) ours / diffusers' own StableDiffusionPipeline on the same model, sampler, steps and seed
(c) `python app.py` to the first HTTP 200 on /
(d) switching to a cached checkpoint
(e) resident memory after 30 switches among 3 checkpoints vs after the first 3

Prints a Markdown table; paste it into benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from modules.options import Options  # noqa: E402
from modules.paths import Paths  # noqa: E402
from modules.processing import StableDiffusionProcessingTxt2Img, process_images  # noqa: E402
from modules.progress import JobState  # noqa: E402
from modules.sd_models import ModelManager  # noqa: E402

STEPS, SIZE, PROMPT, NEG = 20, 64, "a red circle on a blue background", ""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_data_dir(model_file: Path, copies: int) -> Path:
    root = Path(tempfile.mkdtemp(prefix="bench-"))
    ckpts = root / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    for i in range(copies):
        shutil.copy(model_file, ckpts / f"model{i}{model_file.suffix}")
        sidecar = model_file.with_name(model_file.name + ".sha256")
        if sidecar.exists():
            shutil.copy(sidecar, ckpts / f"model{i}{model_file.suffix}.sha256")
    return root


def bench_generation(model, repeats: int) -> dict[str, float]:
    from diffusers import StableDiffusionPipeline

    from modules import conditioning, sd_samplers

    opts = Options(samples_save=False, live_previews_enable=False)

    def ours():
        p = StableDiffusionProcessingTxt2Img(prompt=PROMPT, negative_prompt=NEG, steps=STEPS, width=SIZE, height=SIZE,
                                             seed=1, sampler_name="DPM++ 2M", scheduler="Karras",
                                             do_not_save_samples=True)
        p.sd_model, p.opts, p.state = model, opts, JobState()
        process_images(p)

    f = model.vae_scale_factor
    latents = torch.randn(2, model.unet.config.in_channels, SIZE // f, SIZE // f)
    cond = conditioning.encode_prompts(model, [PROMPT], STEPS, clip_skip=1)
    embeds, _ = conditioning.stack_conds([cond.at_step(1)[0][0][0]] * 2)

    def floor():
        with torch.inference_mode():
            conditioning.encode_prompts(model, [PROMPT], STEPS, clip_skip=1)
            conditioning.encode_prompts(model, [NEG], STEPS, clip_skip=1, negative=True)
            for t in range(STEPS):
                model.unet(latents, 999 - t * 50, encoder_hidden_states=embeds)
            model.vae.decode(latents[:1] / model.vae.config.scaling_factor)

    pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                   unet=model.unet, scheduler=sd_samplers.create_scheduler("DPM++ 2M", "Karras",
                                                                                           model.scheduler_config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def diffusers_pipe():
        pipe(PROMPT, negative_prompt=NEG, num_inference_steps=STEPS, height=SIZE, width=SIZE, guidance_scale=7.0,
             generator=torch.Generator().manual_seed(1), output_type="pil")

    t_ours = best(ours, repeats)
    t_floor = best(floor, repeats)
    t_diff = best(diffusers_pipe, repeats)
    return {"ours": t_ours, "floor": t_floor, "diffusers": t_diff}


def bench_startup(data_dir: Path) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--data-dir", str(data_dir), "--port", str(port),
                             "--threads", str(torch.get_num_threads())], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request

    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("app.py exited")
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)


def bench_switching(data_dir: Path) -> dict[str, float]:
    paths = Paths.from_args(data_dir)
    cached = ModelManager(paths, Options(sd_checkpoints_limit=3))
    titles = [c.title for c in cached.list_checkpoints()][:3]
    for t in titles:
        cached.load(t)
    switch = best(lambda: cached.load(titles[0]) and cached.load(titles[1]), 10) / 2
    cached.unload()
    gc.collect()

    manager = ModelManager(paths, Options(sd_checkpoints_limit=1))
    for t in titles:
        manager.load(t)
    gc.collect()
    after_3 = rss_mb()
    for i in range(30):
        manager.load(titles[i % 3])
    gc.collect()
    after_33 = rss_mb()
    return {"switch_cached": switch, "rss_3": after_3, "rss_33": after_33}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None, help="checkpoint file (default: the shipped default model)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (1 on a busy machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_file = args.model or next((REPO / "models" / "Stable-diffusion").glob("*.safetensors"))
    data_dir = make_data_dir(model_file, 3)
    try:
        manager = ModelManager(Paths.from_args(data_dir), Options())
        model = manager.load(manager.list_checkpoints()[0].title)
        gen = bench_generation(model, args.repeats)
        del model, manager
        gc.collect()
        startup = statistics.median(bench_startup(data_dir) for _ in range(3))
        sw = bench_switching(data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    rows = [
        ("(a) txt2img / raw compute floor", f"{gen['ours']:.3f} s / {gen['floor']:.3f} s", gen["ours"] / gen["floor"], "≤ 1.05"),
        ("(b) ours / diffusers StableDiffusionPipeline", f"{gen['ours']:.3f} s / {gen['diffusers']:.3f} s", gen["ours"] / gen["diffusers"], "≤ 1.0 (aim 0.9)"),
        ("(c) `python app.py` → first HTTP 200", f"{startup:.2f} s", None, "≤ 5 s"),
        ("(d) switch to a cached checkpoint", f"{sw['switch_cached'] * 1000:.1f} ms", None, "≤ 0.1 s"),
        ("(e) RSS after 33 vs 3 loads (limit 1)", f"{sw['rss_33']:.0f} MB / {sw['rss_3']:.0f} MB", sw["rss_33"] / sw["rss_3"], "≤ 1.05"),
    ]
    print(f"Model: `{model_file.name}`, {SIZE}x{SIZE}, {STEPS} steps, DPM++ 2M Karras, CFG 7, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| benchmark | measured | ratio | target |\n|---|---|---|---|")
    for name, measured, ratio, target in rows:
        print(f"| {name} | {measured} | {'' if ratio is None else f'{ratio:.3f}'} | {target} |")


if __name__ == "__main__":
    main()
