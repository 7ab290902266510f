"""Checkpoint Merger memory: peak RAM of a weighted-sum merge of two ~1 GB fp32 checkpoints (SD1 key layout).

    python benchmarks/bench_merge.py [--gb 1.0] [--keep DIR]

Builds two random checkpoints of SD1's key names (the tiny SD1 model's keys, every weight of two or more dimensions
grown so that each file holds about ``--gb`` GB; streamed to disk one tensor at a time), then merges them in a fresh
process while a thread samples /proc/self/status. Reports, as a Markdown table: the files' size, the merge's time,
the peak anonymous (private) memory the merge added, and the peak total RSS (which also counts the memory-mapped
input pages the kernel can drop at any time). The merger's claim: the added anonymous memory is about a few tensors,
not the models' size.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def build_inputs(ckpt_dir: Path, gb: float) -> list[Path]:
    import torch

    from modules.merger import _write_safetensors
    from tests.fixtures_models import build_tiny, ldm_state_dict

    layout = ldm_state_dict(build_tiny("sd1"))
    big = [k for k, v in layout.items() if v.ndim >= 2 and v.is_floating_point()]
    columns = 1024
    rows = max(1, int(gb * 1e9 / 4 / columns / len(big)))
    plan = [(k, [rows, columns] if k in big else list(v.shape), v.dtype) for k, v in layout.items()]
    paths = []
    for seed, name in enumerate(("bench-a", "bench-b")):
        generator = torch.Generator().manual_seed(seed)
        tensors = ((k, torch.randn(s, generator=generator).to(d) if d.is_floating_point else layout[k])
                   for k, s, d in plan)
        path = ckpt_dir / f"{name}.safetensors"
        _write_safetensors(path, plan, {"sd_config": "sd15"}, tensors)
        paths.append(path)
    return paths


CHILD = r"""
import json, sys, threading, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from modules.merger import MergeRequest, merge_checkpoints
from modules.options import Options
from modules.paths import Paths
from modules.sd_models import ModelManager

def status():
    fields = {}
    for line in open("/proc/self/status"):
        name, _, value = line.partition(":")
        if name in ("RssAnon", "VmRSS"):
            fields[name] = int(value.split()[0]) * 1024
    return fields

paths = Paths.from_args(data_dir=Path(sys.argv[1]))
models = ModelManager(paths, Options.load(paths.config_file))
for info in models.list_checkpoints():
    models.calculate_hash(info)  # hashing reads the files; done before the measured merge
base = status()
peak = dict(base)
done = threading.Event()
def sample():
    while not done.is_set():
        for k, v in status().items():
            peak[k] = max(peak[k], v)
        time.sleep(0.02)
thread = threading.Thread(target=sample, daemon=True)
thread.start()
start = time.perf_counter()
result = merge_checkpoints(models, MergeRequest(primary_model_name="bench-a", secondary_model_name="bench-b",
                                                multiplier=0.5, custom_name="bench-merged"))
seconds = time.perf_counter() - start
done.set(); thread.join()
print(json.dumps({"seconds": seconds, "base": base, "peak": peak, "out": str(result.path)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0, help="size of each input file")
    parser.add_argument("--keep", type=Path, help="data dir to build in and keep (default: a temporary one)")
    args = parser.parse_args()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="bench-merge-"))
    ckpt_dir = data_dir / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    inputs = build_inputs(ckpt_dir, args.gb)
    out = subprocess.run([sys.executable, "-c", CHILD, str(data_dir), str(REPO)], check=True, capture_output=True,
                         text=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    mb = 1 / 2**20
    anon = (report["peak"]["RssAnon"] - report["base"]["RssAnon"]) * mb
    rss = report["peak"]["VmRSS"] * mb
    sizes = " + ".join(f"{p.stat().st_size * mb:.0f}" for p in inputs)
    print("| inputs (MiB) | merge time (s) | peak anonymous memory added (MiB) | peak RSS incl. mapped files (MiB) |")
    print("|---|---|---|---|")
    print(f"| {sizes} | {report['seconds']:.1f} | {anon:.0f} | {rss:.0f} |")
    if not args.keep:
        for path in ckpt_dir.iterdir():
            path.unlink()


if __name__ == "__main__":
    main()
