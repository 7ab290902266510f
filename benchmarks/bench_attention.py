"""Attention maps, prompt-to-prompt and dynamic thresholding on the shipped default model, over several seeds.

    ./venv/bin/python benchmarks/bench_attention.py [--seeds 16]

The measurements are modules.attention_effects (the same as tests/test_attention.py, test_prompt_to_prompt.py and
test_guidance.py, which assert them on 4-8 seeds). Prints a Markdown table for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from modules import attention_effects as fx, scripts  # noqa: E402
from modules.options import Options  # noqa: E402
from modules.paths import REPO_ROOT, Paths  # noqa: E402
from modules.sd_models import ModelManager  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16, help="seeds 1..N")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = list(range(1, args.seeds + 1))
    paths = Paths.from_args(data_dir=tempfile.mkdtemp(), ckpt_dir=REPO_ROOT / "models" / "Stable-diffusion")
    model = ModelManager(paths, Options()).select_default()
    scripts.load_scripts(None)
    runner = scripts.scripts_txt2img
    t0 = time.perf_counter()
    rows = []
    for layers in ("finest", "all", "coarsest"):
        s = fx.map_scores(model, seeds, layers)
        rows.append((f"map of \"circle\" vs object mask, IoU ({layers} layers)",
                     f"{np.mean(s.shape_iou):.2f} (min {min(s.shape_iou):.2f})"))
        rows.append((f"map of \"white\" peaks on the object ({layers} layers)",
                     f"{sum(s.background_peak_on_object)}/{len(seeds)}"))
    r = fx.replace_scores(model, runner, seeds)
    rows += [("P2P replace red→blue: edit reads blue", f"{sum(r.edited_blue)}/{len(seeds)}"),
             ("P2P replace red→blue: object mask IoU with the source",
              f"{np.mean(r.edited_iou):.2f} (min {min(r.edited_iou):.2f})"),
             ("plain regeneration, edited prompt, same seed: reads blue", f"{sum(r.regenerated_blue)}/{len(seeds)}"),
             ("plain regeneration: object mask IoU with the source",
              f"{np.mean(r.regenerated_iou):.2f} (min {min(r.regenerated_iou):.2f})")]
    for factor in (0.5, 2.0, 4.0):
        pairs = fx.reweight_red(model, runner, seeds, factor)
        rows.append((f"P2P re-weight \"red\" ×{factor}: red fraction source → edit (edit redder)",
                     f"{np.mean([a for a, _ in pairs]):.3f} → {np.mean([b for _, b in pairs]):.3f} "
                     f"({sum(b > a for a, b in pairs)}/{len(seeds)})"))
    plain6 = fx.saturation_at_cfg(model, seeds, cfg_scale=6)
    plain = fx.saturation_at_cfg(model, seeds)
    rows += [("saturated pixels, CFG 6", f"{100 * plain6:.2f} %"), ("saturated pixels, CFG 20", f"{100 * plain:.2f} %")]
    for kw in ({"dynamic_thresholding": 0.995}, {"dynamic_thresholding": 0.9}, {"guidance_rescale": 0.7}):
        rows.append((f"saturated pixels, CFG 20, {kw}", f"{100 * fx.saturation_at_cfg(model, seeds, **kw):.2f} %"))
    print(f"| measurement ({len(seeds)} seeds) | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\n{time.perf_counter() - t0:.0f} s on one torch thread")


if __name__ == "__main__":
    main()
