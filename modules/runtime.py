"""The explicit bundle of what a running app has: paths, options, models, the job queue.

UI and API receive a ``Runtime``; nothing below them reaches for globals. ``modules.shared`` only mirrors it for
extensions written against A1111.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from modules.options import Options
from modules.paths import Paths
from modules.progress import JobState

if TYPE_CHECKING:
    import torch

    from modules.extra_networks import EmbeddingLibrary, PromptResources
    from modules.lora import LoraLibrary
    from modules.styles import StyleDatabase
    from modules.upscalers import UpscalerRegistry

log = logging.getLogger(__name__)


def pick_device(requested: str | None = None) -> "torch.device":
    import torch

    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Runtime:
    args: argparse.Namespace
    paths: Paths
    opts: Options
    models: Any            # modules.sd_models.ModelManager
    queue: Any = None      # modules.job_queue.JobQueue
    device: Any = "cpu"   # torch.device
    state: JobState = field(default_factory=JobState)   # the job that runs now (mirrors the queue's)
    model_ready: threading.Event = field(default_factory=threading.Event)  # set once the start-up load is done
    workers: Any = None    # modules.ray_workers.RayWorkerPool with --ray-address: jobs run on Ray worker actors

    @classmethod
    def create(cls, args: argparse.Namespace) -> "Runtime":
        from modules.sd_models import ModelManager

        paths = Paths.from_args(args.data_dir, args.ckpt_dir, getattr(args, "vae_dir", None),
                                getattr(args, "lora_dir", None), getattr(args, "embeddings_dir", None),
                                getattr(args, "allowed_output_dirs", None))
        paths.ensure()
        opts = Options.load(paths.config_file)
        if not paths.config_file.exists():
            opts.save()   # as A1111, the settings file exists once the app ran (extensions serve / read it)
        device = pick_device(getattr(args, "device", None))
        from modules.paths import CONFIGS_DIR

        models = ModelManager(paths, opts, device=device, configs_dirs=(paths.configs_dir, CONFIGS_DIR))
        runtime = cls(args=args, paths=paths, opts=opts, models=models, device=device)
        from modules import shared

        shared.bind(runtime)
        return runtime

    # -- models ----------------------------------------------------------------------------------------------------------
    def load_initial_model(self) -> None:
        """Load ``--ckpt`` or the configured checkpoint, else the default; a failure is logged, not fatal."""
        try:
            self._load_initial_model()
        finally:
            self.model_ready.set()

    def _load_initial_model(self) -> None:
        wanted = getattr(self.args, "ckpt", None) or self.opts.sd_model_checkpoint
        model = None
        if wanted:
            try:
                model = self.models.load(wanted)
            except Exception as e:  # noqa: BLE001 - reported; another checkpoint is tried
                log.error("Could not load checkpoint %r: %s", wanted, e)
        if model is None:
            try:
                model = self.models.select_default()
            except Exception as e:  # noqa: BLE001 - reported; the UI offers the list to pick another
                log.error("No checkpoint could be loaded: %s", e)
                return
        if model is not None:
            self.opts.sd_model_checkpoint = model.sd_checkpoint_info.title

    def switch_model(self, name: str) -> Any:
        """Load ``name`` (title, file name or hash) and make it current; on failure the previous one stays."""
        model = self.models.load(name)
        self.opts.sd_model_checkpoint = model.sd_checkpoint_info.title
        self.opts.save()
        return model

    # -- prompt resources: styles, textual-inversion embeddings, LoRA ----------------------------------------------------
    @cached_property
    def prompt_styles(self) -> StyleDatabase:
        """``styles.csv`` in the data dir (A1111's ``shared.prompt_styles``)."""
        from modules.styles import StyleDatabase

        return StyleDatabase(self.paths.data_dir / "styles.csv")

    @cached_property
    def embeddings(self) -> EmbeddingLibrary:
        """The embeddings folder, loaded for the model of the job that runs (``for_model``)."""
        from modules.extra_networks import EmbeddingLibrary

        return EmbeddingLibrary(self.paths.embeddings_dir)

    @cached_property
    def loras(self) -> LoraLibrary:
        """The LoRA files (``<lora:name:weight>``)."""
        from modules.lora import LoraLibrary

        return LoraLibrary(self.paths.lora_dir)

    def prompt_resources(self, model: Any) -> PromptResources:
        """What a job on ``model`` can use besides prompt words. The style file and the embeddings folder are read
        again when they changed on disk."""
        from modules.extra_networks import PromptResources
        from modules.lora import LoraNetwork

        self.prompt_styles.reload_if_changed()
        return PromptResources(styles=self.prompt_styles, embeddings=self.embeddings.for_model(model),
                               networks={"lora": LoraNetwork(self.loras)})

    @cached_property
    def upscalers(self) -> UpscalerRegistry:
        """None, Lanczos, Nearest and the upscaler model files (A1111's ``shared.sd_upscalers``)."""
        from modules.upscalers import UpscalerRegistry, default_folders

        return UpscalerRegistry(default_folders(self.paths.data_dir / "models", self.args), self.opts, self.device)

    # -- jobs ------------------------------------------------------------------------------------------------------------
    def prepare(self, p: Any, state: JobState, native_size: Collection[str] = ()) -> Any:
        """Attach model, options, data dir and progress to a processing object before it runs. The size fields named
        in `native_size` ("width", "height") take the native size of that model."""
        wanted = (p.override_settings or {}).get("sd_model_checkpoint")
        p.sd_model = self.models.load(wanted) if wanted else (self.models.current or self.models.select_default())
        if p.sd_model is None:
            from modules.processing import GenerationError

            raise GenerationError(f"no checkpoint is loaded: put a model in {self.paths.ckpt_dir}")
        for name in native_size:
            setattr(p, name, p.sd_model.native_size)
        p.opts = self.opts
        p.state = state
        p.data_dir = str(self.paths.data_dir)
        p.allowed_output_dirs = self.paths.allowed_output_dirs
        p.prompt_resources = self.prompt_resources(p.sd_model)
        p.upscalers = self.upscalers
        return p

    def run(self, p: Any, state: JobState, native_size: Collection[str] = ()) -> Any:
        """Run one generation job now (called on the queue's worker thread); `native_size` as in ``prepare``. A job
        the queue took with compatible ones runs in their shared batch (``modules.batching``); with ``--ray-address``
        it runs on a Ray worker (``modules.ray_workers``)."""
        from modules import batching

        self.state = state
        prepare = self.workers.prepare if self.workers is not None else self.prepare
        batched = batching.run_in_batch(p, state, lambda q, s: self._execute(q, s, native_size),
                                        lambda q, s: prepare(q, s, native_size))
        return batched if batched is not None else self._execute(p, state, native_size)

    def _execute(self, p: Any, state: JobState, native_size: Collection[str]) -> Any:
        from modules import batching, scripts

        if self.workers is not None and not batching.has_selected_script(p):
            return self.workers.run(p, state, native_size)
        self.prepare(p, state, native_size)
        try:
            return scripts.process_with_scripts(p)
        except BaseException as e:
            release_memory(e)
            raise

    def submit(self, kind: str, p: Any, task_id: str | None = None) -> Any:
        """Queue a generation job; returns the queue's ``Job`` (its ``result().value`` is the ``Processed``)."""
        from modules.job_queue import JobOutput

        def job(state: JobState) -> JobOutput:
            processed = self.run(p, state)
            return JobOutput(value=processed, infotext=processed.info, files=processed.files, notes=processed.comments)

        from modules.batching import batch_key

        params = p.model_dump(mode="json", exclude={"init_images", "mask"})
        return self.queue.submit(kind, params, job, task_id=task_id, batch_key=batch_key(kind, p))


def release_memory(error: BaseException) -> None:
    """After a failed job (out of memory above all): free what its frames held, now rather than when the error is
    forgotten. The traceback keeps every frame's locals (latents, activations, decoded images) alive for as long as the
    job's future holds the error; its frames are cleared (the lines stay for the log), then the garbage collector runs
    and free memory is handed back to the system (CUDA cache, glibc heap)."""
    import ctypes
    import gc
    import traceback

    traceback.clear_frames(error.__traceback__)
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
