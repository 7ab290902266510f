"""Core benchmarks (issue: generation core; issue 21: performance as users run it), each a ratio measured in one run.

    python benchmarks/bench_core.py [--model PATH] [--repeats 5] [--threads N] [--no-sd15] [--no-app]
        [--sd15-size 256] [--sd15-steps 4] [--sd15-repeats 2] [--sd15-512] [--first-load]

An affordable run on 2 shared cores (about 5 min): ``--threads 1 --repeats 5 --sd15-repeats 2 --no-app``; the
SD1.5-size jobs take ~3 s per UNet call at 256² (9 s at 512²), so every extra round there costs minutes.

(a) txt2img with the DEFAULT settings (live previews on, saving on, the default sampler DPM++ 2M / Automatic) / raw
    compute floor (steps x UNet on the CFG batch + text encode + VAE decode), and the same with previews off
(b) ours (default settings) / diffusers' own StableDiffusionPipeline on the same model, sampler, steps and seed
    (a) and (b) at 64x64 on the default model (20 steps) and at 256x256 (--sd15-size; 512 is optional, slow on 2
    cores) on an SD1.5-architecture checkpoint with random weights built here (6 steps); each variant is timed in
    interleaved rounds, medians reported
(f) with --first-load: the first load of the SD1.5-size file (no cached hash) / diffusers' from_single_file
(c) `python app.py` to the first HTTP 200 on /
(d) switching to a cached checkpoint
(e) resident memory after 30 switches among 3 checkpoints vs after the first 3

Prints a Markdown table; paste it into benchmarks/RESULTS.md (with the threads and the machine's load).
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
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from modules import cpu_threads  # noqa: E402
from modules.options import Options  # noqa: E402
from modules.paths import CONFIGS_DIR, Paths  # noqa: E402
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


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, timed in rounds that run every function once (after one warm-up round), so
    a change in the machine's load hits every variant alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_generation(model, repeats: int, size: int, steps: int) -> dict[str, float]:
    """Ours with the default settings, ours with previews off, the raw floor and diffusers' pipeline, on one job."""
    from diffusers import StableDiffusionPipeline

    from modules import conditioning, sd_samplers

    out_dir = Path(tempfile.mkdtemp(prefix="bench-out-"))
    defaults = Options(outdir_samples=str(out_dir))               # previews on, saving on: what a user runs
    no_previews = Options(outdir_samples=str(out_dir), live_previews_enable=False)
    sampler, schedule = StableDiffusionProcessingTxt2Img().sampler_name, "Automatic"  # the UI's default sampler

    def ours(opts: Options) -> Callable[[], None]:
        def run() -> None:
            p = StableDiffusionProcessingTxt2Img(prompt=PROMPT, negative_prompt=NEG, steps=steps, width=size,
                                                 height=size, seed=1, sampler_name=sampler, scheduler=schedule)
            p.sd_model, p.opts, p.state, p.data_dir = model, opts, JobState(), str(out_dir)
            process_images(p)
        return run

    f = model.vae_scale_factor
    latents = torch.randn(2, model.unet.config.in_channels, size // f, size // f)
    cond = conditioning.encode_prompts(model, [PROMPT], steps, clip_skip=1)
    embeds, _ = conditioning.stack_conds([cond.at_step(1)[0][0][0]] * 2)

    def floor() -> None:
        with torch.inference_mode():
            conditioning.encode_prompts(model, [PROMPT], steps, clip_skip=1)
            conditioning.encode_prompts(model, [NEG], steps, clip_skip=1, negative=True)
            for t in range(steps):
                model.unet(latents, 999 - t * (1000 // steps), encoder_hidden_states=embeds)
            model.vae.decode(latents[:1] / model.vae.config.scaling_factor)

    pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                   unet=model.unet, scheduler=sd_samplers.create_scheduler(sampler, schedule,
                                                                                           model.scheduler_config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def diffusers_pipe() -> None:
        pipe(PROMPT, negative_prompt=NEG, num_inference_steps=steps, height=size, width=size, guidance_scale=7.0,
             generator=torch.Generator().manual_seed(1), output_type="pil")

    try:
        return interleaved({"ours": ours(defaults), "ours_no_previews": ours(no_previews), "floor": floor,
                            "diffusers": diffusers_pipe}, repeats)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def build_sd15_random(path: Path) -> Path:
    """An SD1.5-architecture single-file checkpoint (original layout, fp16 like the released one) with random
    weights, from the shipped sd15 config."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from modules.ldm_convert import diffusers_to_ldm

    config = CONFIGS_DIR / "sd15"
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
    state = diffusers_to_ldm(unet, vae, text_encoder, None, family="sd1")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(path))
    return path


def generation_rows(label: str, gen: dict[str, float]) -> list[tuple[str, str, float | None, str]]:
    print(f"{label}: {gen} (load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)  # partial results
    preview_cost = gen["ours"] / gen["ours_no_previews"] - 1
    return [
        (f"(a) {label}: txt2img, default settings / raw compute floor", f"{gen['ours']:.3f} s / {gen['floor']:.3f} s",
         gen["ours"] / gen["floor"], "≤ 1.05"),
        (f"(a) {label}: txt2img, previews off / raw compute floor",
         f"{gen['ours_no_previews']:.3f} s / {gen['floor']:.3f} s", gen["ours_no_previews"] / gen["floor"], ""),
        (f"(a) {label}: cost of the default live previews", f"{preview_cost * 100:+.1f} %", None, "≤ 2 %"),
        (f"(b) {label}: ours, default settings / diffusers StableDiffusionPipeline",
         f"{gen['ours']:.3f} s / {gen['diffusers']:.3f} s", gen["ours"] / gen["diffusers"], "≤ 0.95"),
    ]


def bench_first_load(sd15_dir: Path, repeats: int) -> dict[str, float]:
    """The first load of the SD1.5-size file by a fresh ModelManager with no cached hash (what a user's first switch
    to a new checkpoint costs) against diffusers' own single-file load of the same file, interleaved."""
    from diffusers import StableDiffusionPipeline

    ckpt = Paths.from_args(sd15_dir).ckpt_dir / "sd15-random.safetensors"

    def ours() -> None:
        data = Path(tempfile.mkdtemp(prefix="bench-load-"))
        try:
            (data / "models").mkdir()
            (data / "models" / "Stable-diffusion").symlink_to(ckpt.parent, target_is_directory=True)
            manager = ModelManager(Paths.from_args(data), Options())
            manager.load(ckpt.name)
            manager.unload()
        finally:
            shutil.rmtree(data, ignore_errors=True)
        gc.collect()

    def diffusers_load() -> None:
        pipe = StableDiffusionPipeline.from_single_file(str(ckpt), config=str(CONFIGS_DIR / "sd15"),
                                                        local_files_only=True, safety_checker=None,
                                                        requires_safety_checker=False)
        del pipe
        gc.collect()

    return interleaved({"ours": ours, "diffusers": diffusers_load}, repeats)


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
    ap.add_argument("--sd15-size", type=int, default=256, help="image side for the SD1.5-architecture job (512: slow)")
    ap.add_argument("--sd15-steps", type=int, default=4)
    ap.add_argument("--sd15-repeats", type=int, default=2, help="timed rounds of the SD1.5-architecture jobs")
    ap.add_argument("--sd15-512", action="store_true", help="also 512² on the SD1.5 architecture (2 steps; slow)")
    ap.add_argument("--first-load", action="store_true", help="also time the SD1.5-size file's first load")
    ap.add_argument("--no-sd15", action="store_true", help="skip the SD1.5-architecture jobs")
    ap.add_argument("--no-app", action="store_true", help="skip (c)-(e): start-up, switching, memory")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu_threads.configure(args.threads)
    model_file = args.model or next((REPO / "models" / "Stable-diffusion").glob("*.safetensors"))
    data_dir = make_data_dir(model_file, 3)
    rows = []
    try:
        manager = ModelManager(Paths.from_args(data_dir), Options())
        model = manager.load(manager.list_checkpoints()[0].title)
        rows += generation_rows(f"default model {SIZE}²", bench_generation(model, args.repeats, SIZE, STEPS))
        del model, manager
        gc.collect()
        if not args.no_sd15:
            sd15_dir = Path(tempfile.mkdtemp(prefix="bench-sd15-"))
            try:
                build_sd15_random(Paths.from_args(sd15_dir).ckpt_dir / "sd15-random.safetensors")
                manager = ModelManager(Paths.from_args(sd15_dir), Options())
                model = manager.load("sd15-random.safetensors")
                jobs = [(args.sd15_size, args.sd15_steps)] + ([(512, 2)] if args.sd15_512 else [])
                for size, steps in jobs:
                    label = f"SD1.5 architecture (random weights) {size}², {steps} steps"
                    rows += generation_rows(label, bench_generation(model, args.sd15_repeats, size, steps))
                del model, manager
                gc.collect()
                if args.first_load:
                    first = bench_first_load(sd15_dir, args.sd15_repeats)
                    rows.append(("(f) SD1.5-size file (2.1 GB fp16), first load (hash not cached) / diffusers "
                                 "`from_single_file`", f"{first['ours']:.2f} s / {first['diffusers']:.2f} s",
                                 first["ours"] / first["diffusers"], "≤ 1.05"))
            finally:
                shutil.rmtree(sd15_dir, ignore_errors=True)
        if not args.no_app:
            startup = statistics.median(bench_startup(data_dir) for _ in range(3))
            sw = bench_switching(data_dir)
            rows += [
                ("(c) `python app.py` → first HTTP 200", f"{startup:.2f} s", None, "≤ 5 s"),
                ("(d) switch to a cached checkpoint", f"{sw['switch_cached'] * 1000:.1f} ms", None, "≤ 0.1 s"),
                ("(e) RSS after 33 vs 3 loads (limit 1)", f"{sw['rss_33']:.0f} MB / {sw['rss_3']:.0f} MB",
                 sw["rss_33"] / sw["rss_3"], "≤ 1.05"),
            ]
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    load = os.getloadavg()
    print(f"Default model: `{model_file.name}`, {SIZE}x{SIZE}, {STEPS} steps; default settings = DPM++ 2M / "
          f"Automatic (Karras), CFG 7, live previews on (Approx cheap, every "
          f"{Options().show_progress_every_n_steps} steps), saving on; torch {torch.__version__}, "
          f"--threads {args.threads} (floor and diffusers run with {args.threads}; ours chooses per job: "
          f"{cpu_threads.describe()}), load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min) at the end, "
          f"{os.cpu_count()} cores\n")
    print("| benchmark | measured | ratio | target |\n|---|---|---|---|")
    for name, measured, ratio, target in rows:
        print(f"| {name} | {measured} | {'' if ratio is None else f'{ratio:.3f}'} | {target} |")


if __name__ == "__main__":
    main()
