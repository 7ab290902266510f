"""The position toy (modules.training.position_toy): SD's schedule with ε-prediction against zero terminal SNR with
v-prediction, trained for the same number of steps, sampled with the app's schedulers, position read back.

    ./venv/bin/python benchmarks/position_toy.py [--steps 300] [--seeds 0 1] [--eval-seeds 4]

Prints a Markdown table for benchmarks/RESULTS.md (one torch thread per run).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from modules.training import position_toy  # noqa: E402

SAMPLERS = ("DPM++ 2M", "Euler a")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eval-seeds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| recipe | training seed | steps | sampler | position right | train + eval s |")
    print("|---|---|---|---|---|---|")
    for recipe in ("epsilon", "ztsnr"):
        for seed in args.seeds:
            trained = position_toy.train(recipe, args.steps, seed=seed)
            for sampler in SAMPLERS:
                r = position_toy.position_accuracy(recipe, args.steps, seed=seed, eval_seeds=args.eval_seeds,
                                                   sampler=sampler, trained=trained)
                print(f"| {recipe} | {seed} | {args.steps} | {sampler} | {r.correct} of {r.total} | {r.seconds:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
