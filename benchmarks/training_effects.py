"""What textual inversion and LoRA training teach the shipped default model, over several training seeds.

    ./venv/bin/python benchmarks/training_effects.py [--seeds 0 1 2] [--prompts 12] [--eval-seeds 3]
                                                     [--lora-steps 2000 --lora-lr 1e-3 --rank 16] [--json out.json]

The experiments are modules.training.effects (the same as tests/test_training_effects.py, which asserts one run):
a textual-inversion embedding for "large orange triangle" and a LoRA for the narrow style, each trained once per
--seeds value on one torch thread, then read back by the analyser. Prints a Markdown table for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from modules import lora  # noqa: E402
from modules.options import Options  # noqa: E402
from modules.paths import REPO_ROOT, Paths  # noqa: E402
from modules.progress import JobState  # noqa: E402
from modules.sd_models import ModelManager  # noqa: E402
from modules.training import (CreateEmbeddingRequest, TrainingEnv, create_embedding, effects,  # noqa: E402
                              train_embedding, train_lora)

SUBJECT_SEEDS = (1, 2, 3, 4, 5)


def make_env(data_dir: Path, ckpt_dir: Path) -> TrainingEnv:
    paths = Paths.from_args(data_dir, ckpt_dir)
    paths.ensure()
    model = ModelManager(paths, Options()).select_default()
    if model is None:
        sys.exit(f"no checkpoint in {ckpt_dir}")
    opts = Options(samples_save=False, live_previews_enable=False)
    return TrainingEnv(model, paths.embeddings_dir, paths.lora_dir, data_dir, opts, lora.LoraLibrary(paths.lora_dir))


def subject_run(env: TrainingEnv, seed: int) -> dict[str, float]:
    name = f"zq-shape-{seed}"  # a word the model does not know
    create_embedding(env, CreateEmbeddingRequest(name=name, num_vectors_per_token=2))
    before = effects.subject_share(env, name, SUBJECT_SEEDS)
    t0 = time.perf_counter()
    train_embedding(env, effects.subject_request(env, name, seed), JobState())
    seconds = time.perf_counter() - t0
    return {"before": before, "after": effects.subject_share(env, name, SUBJECT_SEEDS), "train_s": seconds}


def style_run(env: TrainingEnv, seed: int, training: dict, prompts: int, eval_seeds: int) -> dict[str, float]:
    name = f"narrow-{seed}"
    t0 = time.perf_counter()
    train_lora(env, effects.style_request(env, name, seed, **training), JobState())
    seconds = time.perf_counter() - t0
    shares = effects.style_shares(env, name, prompts, tuple(range(1, eval_seeds + 1)))
    lora.unload(env.model)
    return {**shares, "train_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt-dir", type=Path, default=REPO_ROOT / "models" / "Stable-diffusion")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds, one run each")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--eval-seeds", type=int, default=3)
    parser.add_argument("--lora-steps", type=int, default=effects.STYLE_TRAINING["steps"])
    parser.add_argument("--lora-lr", default=effects.STYLE_TRAINING["learn_rate"])
    parser.add_argument("--rank", type=int, default=effects.STYLE_TRAINING["rank"])
    parser.add_argument("--skip", choices=("subject", "style"), help="leave one experiment out")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    training = {**effects.STYLE_TRAINING, "steps": args.lora_steps, "learn_rate": args.lora_lr, "rank": args.rank}
    results: dict[str, list[dict[str, float]]] = {"subject": [], "style": []}
    with tempfile.TemporaryDirectory() as tmp:
        env = make_env(Path(tmp), args.ckpt_dir)
        for seed in args.seeds:
            if args.skip != "subject":
                results["subject"].append(subject_run(env, seed))
                print("subject", seed, results["subject"][-1], flush=True)
            if args.skip != "style":
                results["style"].append(style_run(env, seed, training, args.prompts, args.eval_seeds))
                print("style", seed, results["style"][-1], flush=True)

    def pct(v: float) -> str:
        return f"{100 * v:.0f} %"

    if results["subject"]:
        print(f"\nTextual inversion, {effects.SUBJECT_TRAINING}: orange triangles among "
              f"{len(effects.SUBJECT_EVAL_BACKGROUNDS)}×{len(SUBJECT_SEEDS)} images\n")
        print("| seed | before | after | training |\n|---|---|---|---|")
        for seed, r in zip(args.seeds, results["subject"]):
            print(f"| {seed} | {pct(r['before'])} | {pct(r['after'])} | {r['train_s']:.0f} s |")
    if results["style"]:
        print(f"\nLoRA narrow style, {training}: {args.prompts} prompts × {args.eval_seeds} seeds\n")
        print("| seed | narrow at 1 | narrow at 0 | colour at 1 | shape at 1 | training |\n|---|---|---|---|---|---|")
        for seed, r in zip(args.seeds, results["style"]):
            print(f"| {seed} | {pct(r['narrow at 1'])} | {pct(r['narrow at 0'])} | {pct(r['colour at 1'])} | "
                  f"{pct(r['shape at 1'])} | {r['train_s']:.0f} s |")
    if args.json:
        args.json.write_text(json.dumps({"training": {k: v for k, v in training.items()}, **results}, indent=1))


if __name__ == "__main__":
    main()
