"""Where a txt2img job's time goes (issue 21): ours vs the raw floor with the time inside the UNet split out, and
optionally a cProfile of our jobs.

    python benchmarks/profile_job.py [--size 64] [--steps 20] [--rounds 4] [--threads 1] [--previews] [--cprofile]

Default model (or --model), DPM++ 2M / Automatic, CFG 7, saving on. "ours" and "floor" (the UNet on the CFG batch at
every step + text encode + VAE decode, as in bench_core.py) run in interleaved rounds after a warm-up; a forward
hook on the UNet sums the time spent inside it, so "outside the UNet" is what the generation path adds.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from modules import conditioning, cpu_threads  # noqa: E402
from modules.options import Options  # noqa: E402
from modules.paths import Paths  # noqa: E402
from modules.processing import StableDiffusionProcessingTxt2Img, process_images  # noqa: E402
from modules.progress import JobState  # noqa: E402
from modules.sd_models import ModelManager  # noqa: E402

PROMPT = "a red circle on a blue background"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None, help="a data dir with models/ (default: this checkout's)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--previews", action="store_true", help="live previews on (the default setting)")
    ap.add_argument("--cprofile", action="store_true", help="also print a cProfile of 5 of our jobs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu_threads.configure(args.threads)
    manager = ModelManager(Paths.from_args(args.model or REPO), Options())
    model = manager.load(manager.list_checkpoints()[0].title)
    out = tempfile.mkdtemp(prefix="profile-job-")
    opts = Options(outdir_samples=out, live_previews_enable=args.previews)
    inside = {"t": 0.0, "start": 0.0}
    model.unet.register_forward_pre_hook(lambda *_: inside.__setitem__("start", time.perf_counter()))
    model.unet.register_forward_hook(lambda *_: inside.__setitem__("t", inside["t"] + time.perf_counter()
                                                                   - inside["start"]))

    def ours() -> None:
        p = StableDiffusionProcessingTxt2Img(prompt=PROMPT, steps=args.steps, width=args.size, height=args.size,
                                             seed=1)
        p.sd_model, p.opts, p.state, p.data_dir = model, opts, JobState(), out
        process_images(p)

    f = model.vae_scale_factor
    latents = torch.randn(2, model.unet.config.in_channels, args.size // f, args.size // f)
    cond = conditioning.encode_prompts(model, [PROMPT], args.steps, clip_skip=1)
    embeds, _ = conditioning.stack_conds([cond.at_step(1)[0][0][0]] * 2)

    def floor() -> None:
        with torch.inference_mode():
            conditioning.encode_prompts(model, [PROMPT], args.steps, clip_skip=1)
            conditioning.encode_prompts(model, [""], args.steps, clip_skip=1, negative=True)
            for t in range(args.steps):
                model.unet(latents, 999 - t * (1000 // args.steps), encoder_hidden_states=embeds)
            model.vae.decode(latents[:1] / model.vae.config.scaling_factor)

    total: dict[str, list[float]] = {"ours": [], "floor": []}
    unet: dict[str, list[float]] = {"ours": [], "floor": []}
    ours(), floor()
    for _ in range(args.rounds):
        for name, fn in (("ours", ours), ("floor", floor)):
            inside["t"] = 0.0
            t = time.perf_counter()
            fn()
            total[name].append(time.perf_counter() - t)
            unet[name].append(inside["t"])
    med = {name: (statistics.median(total[name]), statistics.median(unet[name])) for name in total}
    for name, (t, u) in med.items():
        print(f"{name}: {t:.3f} s a job, {u:.3f} s inside the UNet ({u / t * 100:.0f} %)")
    load = os.getloadavg()
    print(f"ours / floor: {med['ours'][0] / med['floor'][0]:.3f} ({args.size}², {args.steps} steps, previews "
          f"{'on' if args.previews else 'off'}, {args.threads} thread(s), load average {load[0]:.1f} / {load[1]:.1f})")
    if args.cprofile:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(5):
            ours()
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
