"""Training loop overhead: steps per second of the Train tab's TI and LoRA loops vs a bare loop, and peak memory.

    ./venv/bin/python benchmarks/bench_training.py [--model PATH] [--steps 30] [--warmup 5] [--batch 4] [--threads 1]
                                                   [--repeats 3]

Each loop runs in its own process on the same model, dataset and batch size; its speed is timed over ``--steps``
steps after ``--warmup`` steps (dataset encoding and set-up excluded), and its process's peak RSS is read at the end.
Each loop and its bare twin run back to back ``--repeats`` times, taking turns at going first; the table gives
medians (the ratio is the median of the per-pair ratios), which evens out a busy machine.

- ``TI``: ``modules.training.train_embedding`` (templates, tag handling, progress, tqdm included);
  ``bare TI``: a hand-written loop on a fixed batch: token embeddings replaced by a hook, text encoder, UNet, MSE,
  backward, AdamW.
- ``LoRA``: ``modules.training.train_lora``; ``bare LoRA``: PEFT adapter on the UNet's attention, fixed batch and
  conditioning, UNet, MSE, backward, AdamW.

Without ``--model`` the shipped default model is used, or the tests' tiny SD1 model when none is shipped.
Prints a Markdown table (target: ours / bare >= 0.95).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from modules import world  # noqa: E402
from modules.options import Options  # noqa: E402
from modules.paths import CONFIGS_DIR, Paths  # noqa: E402
from modules.progress import JobState  # noqa: E402
from modules.sd_models import ModelManager  # noqa: E402

CASES = ("TI", "bare TI", "LoRA", "bare LoRA")
LORA_RANK = 4
LEARN_RATE = 1e-3


@dataclass
class StepClock(JobState):
    """A job state that notes the time whenever the loop reports a finished step."""

    times: list[float] = field(default_factory=list)

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name == "sampling_step" and value:
            self.times.append(time.perf_counter())


def steps_per_second(times: list[float], warmup: int) -> float:
    return (len(times) - warmup) / (times[-1] - times[warmup - 1])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------------------------------------------
# Set-up (parent process)


def write_dataset(folder: Path, size: int, count: int = 8) -> Path:
    rng = random.Random(0)
    items = []
    for _ in range(count):  # scene, then its caption, from one generator
        scene = world.sample_scene(rng, styles=("striped",))
        items.append((scene, world.caption(scene, rng)))
    return world.save_dataset(folder, items, size=size)


def tiny_model(work: Path) -> tuple[Path, Path]:
    """The tests' tiny SD1 checkpoint and its config folders."""
    from tests.fixtures_models import build_tiny, write_checkpoint, write_tiny_configs

    configs = write_tiny_configs(work / "configs")
    return write_checkpoint(build_tiny("sd1"), work / "tiny-sd1.safetensors"), configs


# --------------------------------------------------------------------------------------------------------------------
# One case (child process)


def load_model(model_file: Path, configs: Path | None, work: Path):
    paths = Paths.from_args(data_dir=work / "data")
    paths.ckpt_dir.mkdir(parents=True, exist_ok=True)
    target = paths.ckpt_dir / model_file.name
    if not target.exists():
        target.symlink_to(model_file.resolve())
    dirs = (configs, CONFIGS_DIR) if configs else (CONFIGS_DIR,)
    return ModelManager(paths, Options(), configs_dirs=dirs).load(model_file.name), paths


def fixed_batch(model, dataset: Path, batch: int):
    from modules.training.dataset import LatentCache, list_images, load_images

    images = list_images(dataset)[:batch]
    size = model.native_size
    latents = LatentCache(model, load_images(images, size, size), "deterministic", torch.Generator()).mean
    return latents, [image.with_suffix(".txt").read_text() for image in images]


def bare_loop(model, latents: torch.Tensor, conditioning, optimizer, args: argparse.Namespace) -> list[float]:
    """The bare training step, ``--warmup`` + ``--steps`` times: noise, UNet on ``conditioning()``, MSE, backward,
    optimizer step. Returns the time after each step."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(model.scheduler_config)
    generator = torch.Generator().manual_seed(0)
    times = []
    with torch.enable_grad():
        for _ in range(args.warmup + args.steps):
            noise = torch.randn(latents.shape, generator=generator)
            timesteps = torch.randint(0, 1000, (latents.shape[0],), generator=generator)
            prediction = model.unet(scheduler.add_noise(latents, noise, timesteps), timesteps,
                                    encoder_hidden_states=conditioning()).sample
            torch.nn.functional.mse_loss(prediction, noise).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter())
    return times


def bare_ti(model, dataset: Path, args: argparse.Namespace) -> list[float]:
    """Train 2 vectors replacing the first prompt tokens; fixed latents and token ids."""
    latents, captions = fixed_batch(model, dataset, args.batch)
    tokenizer, encoder = model.tokenizer, model.text_encoder
    ids = tokenizer([f"xx yy {caption}" for caption in captions], padding="max_length", max_length=77,
                    truncation=True, return_tensors="pt").input_ids
    vectors = torch.nn.Parameter(encoder.get_input_embeddings().weight[ids[0, 1:3]].detach().clone())

    def replace(_module, _inputs, output):
        output = output.clone()
        output[:, 1:3] = vectors
        return output

    encoder.get_input_embeddings().register_forward_hook(replace)
    optimizer = torch.optim.AdamW([vectors], lr=LEARN_RATE, weight_decay=0.0)
    return bare_loop(model, latents, lambda: encoder(input_ids=ids).last_hidden_state, optimizer, args)


def bare_lora(model, dataset: Path, args: argparse.Namespace) -> list[float]:
    """PEFT LoRA on the UNet's attention projections; fixed latents and conditioning."""
    from peft import LoraConfig

    latents, captions = fixed_batch(model, dataset, args.batch)
    ids = model.tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        embeds = model.text_encoder(input_ids=ids).last_hidden_state
    model.unet.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK,
                                      target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    parameters = [p for name, p in model.unet.named_parameters() if ".lora_" in name]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=LEARN_RATE, weight_decay=1e-2)
    return bare_loop(model, latents, lambda: embeds, optimizer, args)


def ours(case: str, model, paths: Paths, dataset: Path, args: argparse.Namespace) -> list[float]:
    from modules.training import (CreateEmbeddingRequest, TrainEmbeddingRequest, TrainingEnv, TrainLoraRequest,
                                  create_embedding, train_embedding, train_lora)

    env = TrainingEnv(model, paths.embeddings_dir, paths.lora_dir, paths.data_dir, Options(samples_save=False))
    clock = StepClock()
    steps, size = args.warmup + args.steps, model.native_size
    if case == "TI":
        create_embedding(env, CreateEmbeddingRequest(name="bench", num_vectors_per_token=2, overwrite_old=True))
        train_embedding(env, TrainEmbeddingRequest(
            embedding_name="bench", data_root=str(dataset), learn_rate=str(LEARN_RATE), batch_size=args.batch,
            training_width=size, training_height=size, steps=steps, template_filename="subject_filewords.txt",
            save_embedding_every=0, create_image_every=0, seed=0), clock)
    else:
        train_lora(env, TrainLoraRequest(name="bench", data_root=str(dataset), rank=LORA_RANK,
                                         learn_rate=str(LEARN_RATE), steps=steps, batch_size=args.batch,
                                         overwrite=True, seed=0), clock)
    return clock.times


def run_case(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    model, paths = load_model(args.model, args.configs, work)
    if args.case == "bare TI":
        times = bare_ti(model, args.dataset, args)
    elif args.case == "bare LoRA":
        times = bare_lora(model, args.dataset, args)
    else:
        times = ours(args.case, model, paths, args.dataset, args)
    print(json.dumps({"case": args.case, "steps_per_s": steps_per_second(times, args.warmup),
                      "peak_rss_mb": peak_rss_mb()}))


# --------------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: the shipped model, else the tiny test one)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--configs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        run_case(args)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    shipped = sorted((REPO / "models" / "Stable-diffusion").glob("*.safetensors"))
    configs = None
    if args.model is None and shipped:
        args.model = shipped[0]
    elif args.model is None:
        args.model, configs = tiny_model(work)
    size = load_model(args.model, configs, work)[0].native_size
    dataset = write_dataset(work / "dataset", size)

    def run(case: str) -> dict[str, float]:
        command = [sys.executable, __file__, "--case", case, "--model", str(args.model), "--dataset", str(dataset),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
                   "--threads", str(args.threads)] + (["--configs", str(configs)] if configs else [])
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        return json.loads(output.strip().splitlines()[-1])

    print(f"Model: {args.model.name}, {size}x{size}, batch {args.batch}, {args.steps} timed steps after "
          f"{args.warmup}, torch threads {args.threads}, median of {args.repeats} runs\n")
    print("| loop | steps/s | bare steps/s | ours / bare | peak RSS (MB) | bare peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for name in ("TI", "LoRA"):
        pairs = []
        for repeat in range(args.repeats):  # ours and bare run back to back, taking turns at going first
            order = (name, f"bare {name}") if repeat % 2 == 0 else (f"bare {name}", name)
            runs = {case: run(case) for case in order}
            pairs.append((runs[name], runs[f"bare {name}"]))
        mine = statistics.median(m["steps_per_s"] for m, _ in pairs)
        bare = statistics.median(b["steps_per_s"] for _, b in pairs)
        ratio = statistics.median(m["steps_per_s"] / b["steps_per_s"] for m, b in pairs)
        print(f"| {name} | {mine:.2f} | {bare:.2f} | {ratio:.2f} | {max(m['peak_rss_mb'] for m, _ in pairs):.0f} | "
              f"{max(b['peak_rss_mb'] for _, b in pairs):.0f} |")

if __name__ == "__main__":
    main()
