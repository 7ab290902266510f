"""Prompt adherence of the shipped default model, read back by modules.analyser.

    ./venv/bin/python benchmarks/fidelity.py [--model models/Stable-diffusion/default-tiny.safetensors]
                                             [--prompts 150] [--steps 20] [--cfg 6] [--json out.json]

1. Validates the analyser on 500 ground-truth world images (accuracy per attribute).
2. Draws one full-caption prompt per (shape, colour, position) combination (background and size drawn from a fixed
   seed), renders each with DPM++ 2M Karras and Euler a at a fixed seed per prompt, and reports per attribute how
   often the analyser reads back what the prompt asked for.

Generation uses a plain diffusers StableDiffusionPipeline built from the single file, offline.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from modules import world  # noqa: E402
from modules.analyser import analyse  # noqa: E402
from modules.paths import CONFIGS_DIR, REPO_ROOT  # noqa: E402
from modules.train_default_model import EVAL_SAMPLERS, MODEL_NAME, eval_scheduler  # noqa: E402

SCORED = ("color", "background", "shape", "position", "size")
TARGETS = {"color": 0.95, "background": 0.95, "shape": 0.90, "position": 0.85}


def validate_analyser(count: int, seed: int = 12345) -> dict[str, float]:
    rng = random.Random(seed)
    scenes = [world.sample_scene(rng) for _ in range(count)]
    reads = [analyse(world.render(s)).as_dict() for s in scenes]
    return {k: float(np.mean([r[k] == getattr(s, k) for r, s in zip(reads, scenes)])) for k in world.ATTRIBUTES}


def benchmark_scenes(count: int, seed: int = 0) -> list[world.Scene]:
    """`count` scenes cycling through every (shape, colour, position) in a shuffled order, centred (no jitter)."""
    rng = random.Random(seed)
    combos = list(itertools.product(world.SHAPES, world.COLORS, world.POSITIONS))
    rng.shuffle(combos)
    scenes = []
    for i in range(count):
        shape, color, position = combos[i % len(combos)]
        background = rng.choice([c for c in world.COLORS if c != color])
        scenes.append(world.Scene(shape, color, background, position, world.SIZES[i % 2]))
    return scenes


def load_pipeline(model: Path, config: Path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_single_file(str(model), config=str(config), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompts: list[str], seeds: list[int], steps: int, cfg: float, batch: int = 10) -> np.ndarray:
    images = []
    for start in range(0, len(prompts), batch):
        gens = [torch.Generator().manual_seed(s) for s in seeds[start:start + batch]]
        out = pipe(prompts[start:start + batch], num_inference_steps=steps, guidance_scale=cfg, generator=gens,
                   output_type="np").images
        images.append((out * 255).round().astype(np.uint8))
    return np.concatenate(images)


def adherence(images: np.ndarray, scenes: list[world.Scene]) -> dict[str, float]:
    reads = [analyse(image).as_dict() for image in images]
    scores = {k: float(np.mean([r[k] == getattr(s, k) for r, s in zip(reads, scenes)])) for k in SCORED}
    scores["all four"] = float(np.mean([all(r[k] == getattr(s, k) for k in TARGETS) for r, s in zip(reads, scenes)]))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "Stable-diffusion" / f"{MODEL_NAME}.safetensors")
    parser.add_argument("--config", type=Path, default=CONFIGS_DIR / MODEL_NAME)
    parser.add_argument("--prompts", type=int, default=150, help="prompts per sampler")
    parser.add_argument("--analyser-images", type=int, default=500)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--save-grid", type=Path, help="write the first 40 images per sampler as a PNG grid")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    results: dict = {"analyser": validate_analyser(args.analyser_images), "samplers": {}}
    print(f"analyser on {args.analyser_images} ground-truth images:",
          ", ".join(f"{k} {v:.1%}" for k, v in results["analyser"].items()))

    pipe = load_pipeline(args.model, args.config)
    scenes = benchmark_scenes(args.prompts)
    prompts = [world.caption(s) for s in scenes]
    seeds = list(range(1000, 1000 + len(prompts)))
    grids = []
    for sampler in EVAL_SAMPLERS:
        pipe.scheduler = eval_scheduler(sampler)
        start = time.perf_counter()
        images = generate(pipe, prompts, seeds, args.steps, args.cfg)
        seconds = time.perf_counter() - start
        results["samplers"][sampler] = {**adherence(images, scenes), "seconds_per_image": seconds / len(prompts)}
        grids.append(images[:40])

    header = "| sampler | " + " | ".join(SCORED) + " | all four | s/img |"
    print(f"\n{args.prompts} prompts per sampler, {args.steps} steps, CFG {args.cfg}, seeds 1000+i\n")
    print(header + "\n|" + "---|" * (len(SCORED) + 3))
    for sampler, r in results["samplers"].items():
        print(f"| {sampler} | " + " | ".join(f"{r[k]:.1%}" for k in SCORED) + f" | {r['all four']:.1%} | {r['seconds_per_image']:.2f} |")
    overall = {k: float(np.mean([r[k] for r in results["samplers"].values()])) for k in (*SCORED, "all four")}
    results["overall"] = overall
    print("| **both** | " + " | ".join(f"{overall[k]:.1%}" for k in SCORED) + f" | {overall['all four']:.1%} | |")
    missed = [k for k, target in TARGETS.items() if overall[k] < target]
    print("\ntargets", "met" if not missed else f"MISSED for {', '.join(missed)}",
          "(" + ", ".join(f"{k} ≥ {v:.0%}" for k, v in TARGETS.items()) + ")")

    if args.save_grid:
        from PIL import Image

        rows = [np.concatenate(list(g.reshape(4, 10, 64, 64, 3).transpose(0, 2, 1, 3, 4).reshape(4, 64, 640, 3)), 0)
                for g in grids if len(g) == 40]
        if rows:
            Image.fromarray(np.concatenate(rows, 0)).save(args.save_grid)
    if args.json:
        args.json.write_text(json.dumps({**results, "settings": {k: str(v) for k, v in vars(args).items()}}, indent=2))
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
