"""A1111's ``/sdapi/v1`` routes on FastAPI, plus queue and history routes.

Every generation (and every model switch) is a job on the runtime's ``JobQueue``: routes that generate await the
job's future, so progress / interrupt / skip / queue / history answer immediately while a job runs. Requests are
validated before anything is queued; bad input is a 4xx naming the field, and a refused request changes nothing.
"""
from __future__ import annotations

import asyncio
import errno
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import psutil
import torch
from fastapi import APIRouter, Body, FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from modules import (batching, extensions, images, infotext, limits, merger, postprocessing, processing, ray_workers,
                     restart, scripts, sd_samplers, sd_vae, training)
from modules.api import models as m
from modules.api.codec import MAX_INPUT_PIXELS, ImageDecodeError, decode_image, encode_image
from modules.api.docs import add_offline_docs
from modules.api.middleware import ApiRequestMiddleware
from modules.api.request_body import StrictJsonRoute, validation_error_handler
from modules.cmd_args import api_credentials
from modules.job_queue import HistoryEntry, Job, JobCancelled, JobOutput, JobQueue, QueueFull
from modules.progress import JobState
from modules.sd_models import CheckpointLoadError, CheckpointNotFoundError
from modules.upscalers import UpscalerError

if TYPE_CHECKING:
    from modules.runtime import Runtime

PREFIX = "/sdapi/v1"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
HIDDEN_FLAGS = ("api_auth", "gradio_auth")

# Request fields the API handles itself (never passed to the processing object).
_API_ONLY = {"sampler_index", "script_name", "script_args", "alwayson_scripts", "send_images", "save_images",
             "force_task_id", "infotext", "include_init_images", "init_images", "mask", "disable_extra_networks"}
# Accepted for compatibility with A1111 clients, but only at their default (null).
_UNSUPPORTED = {"s_min_uncond", "refiner_checkpoint", "refiner_switch_at", "firstpass_image", "hr_checkpoint_name",
                "latent_mask"}
# Infotext keys -> request fields: a request's ``infotext`` fills the fields the request does not set.
_INFOTEXT_FIELDS = {"Prompt": "prompt", "Negative prompt": "negative_prompt", "Steps": "steps",
                    "Sampler": "sampler_name", "Schedule type": "scheduler", "CFG scale": "cfg_scale", "Seed": "seed",
                    "Size-1": "width", "Size-2": "height", "Variation seed": "subseed",
                    "Variation seed strength": "subseed_strength", "Seed resize from-1": "seed_resize_from_w",
                    "Seed resize from-2": "seed_resize_from_h", "Denoising strength": "denoising_strength",
                    "CFG Rescale φ": "guidance_rescale", "Dynamic thresholding": "dynamic_thresholding",
                    "Dynamic thresholding mimic scale": "dynamic_thresholding_mimic_scale"}


def _field_error(loc: tuple[str | int, ...], msg: str, status: int = 422) -> HTTPException:
    """An error in FastAPI's validation layout: ``{"detail": [{"loc": ["body", ...], "msg": ..., "type": ...}]}``."""
    return HTTPException(status, detail=[{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


def _validation_error(e: ValidationError) -> HTTPException:
    errors = e.errors(include_url=False, include_context=False, include_input=False)
    return HTTPException(422, detail=[{**err, "loc": ["body", *err["loc"]]} for err in errors])


class Api:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def queue(self) -> JobQueue:
        return self.runtime.queue

    # -- routes ----------------------------------------------------------------------------------------------------
    def router(self) -> APIRouter:
        router = APIRouter(route_class=StrictJsonRoute)
        get, post = router.get, router.post
        post(f"{PREFIX}/txt2img", response_model=m.GenerationResponse)(self.txt2img)
        post(f"{PREFIX}/img2img", response_model=m.GenerationResponse)(self.img2img)
        post(f"{PREFIX}/extra-single-image", response_model=m.ExtrasSingleImageResponse)(self.extra_single_image)
        post(f"{PREFIX}/extra-batch-images", response_model=m.ExtrasBatchImagesResponse)(self.extra_batch_images)
        post(f"{PREFIX}/png-info", response_model=m.PNGInfoResponse)(self.png_info)
        get(f"{PREFIX}/progress", response_model=m.ProgressResponse)(self.progress)
        post(f"{PREFIX}/interrupt")(self.interrupt)
        post(f"{PREFIX}/skip")(self.skip)
        get(f"{PREFIX}/options", response_model=dict[str, Any])(self.get_options)
        post(f"{PREFIX}/options")(self.set_options)
        get(f"{PREFIX}/cmd-flags", response_model=dict[str, Any])(self.cmd_flags)
        get(f"{PREFIX}/samplers", response_model=list[m.SamplerItem])(self.samplers)
        get(f"{PREFIX}/schedulers", response_model=list[m.SchedulerItem])(self.schedulers)
        get(f"{PREFIX}/upscalers", response_model=list[m.UpscalerItem])(self.upscalers)
        get(f"{PREFIX}/latent-upscale-modes", response_model=list[m.LatentUpscalerModeItem])(self.latent_upscale_modes)
        get(f"{PREFIX}/sd-models", response_model=list[m.SDModelItem])(self.sd_models)
        post(f"{PREFIX}/merge-checkpoint", response_model=m.MergeCheckpointResponse,
             summary="Checkpoint Merger (not in A1111's API): merge two or three checkpoints into a new one")(
            self.merge_checkpoint)
        get(f"{PREFIX}/sd-vae", response_model=list[m.SDVaeItem])(self.sd_vae)
        post(f"{PREFIX}/refresh-checkpoints")(self.refresh_checkpoints)
        post(f"{PREFIX}/refresh-vae")(self.refresh_checkpoints)
        post(f"{PREFIX}/unload-checkpoint")(self.unload_checkpoint)
        post(f"{PREFIX}/reload-checkpoint")(self.reload_checkpoint)
        get(f"{PREFIX}/prompt-styles", response_model=list[m.PromptStyleItem])(self.prompt_styles)
        get(f"{PREFIX}/embeddings", response_model=m.EmbeddingsResponse)(self.embeddings)
        post(f"{PREFIX}/refresh-embeddings")(self.refresh_embeddings)
        get(f"{PREFIX}/loras", response_model=list[m.LoraItem])(self.loras)
        post(f"{PREFIX}/refresh-loras")(self.refresh_loras)
        get(f"{PREFIX}/realesrgan-models", response_model=list[m.RealesrganItem])(self.realesrgan_models)
        for name in ("hypernetworks", "face-restorers"):
            get(f"{PREFIX}/{name}", response_model=list[dict[str, Any]])(self.nothing)
        get(f"{PREFIX}/scripts", response_model=m.ScriptsList)(self.scripts)
        get(f"{PREFIX}/script-info", response_model=list[m.ScriptInfo])(self.script_info)
        get(f"{PREFIX}/extensions", response_model=list[m.ExtensionItem])(self.extensions)
        get(f"{PREFIX}/memory", response_model=m.MemoryResponse)(self.memory)
        get(f"{PREFIX}/workers", summary="Generation workers (not in A1111's API): device, loaded models, running job")(
            self.workers)
        post(f"{PREFIX}/create/embedding")(self.create_embedding)
        post(f"{PREFIX}/train/embedding")(self.train_embedding)
        post(f"{PREFIX}/train/lora")(self.train_lora)
        get(f"{PREFIX}/queue", response_model=m.QueueResponse)(self.get_queue)
        get(f"{PREFIX}/queue/{{task_id}}", response_model=m.TaskProgressResponse)(self.task_progress)
        router.delete(f"{PREFIX}/queue/{{task_id}}", response_model=m.JobItem)(self.cancel_task)
        get(f"{PREFIX}/history", response_model=list[m.HistoryItem])(self.history)
        get(f"{PREFIX}/history/{{task_id}}", response_model=m.HistoryItem)(self.history_entry)
        get(f"{PREFIX}/history/{{task_id}}/files/{{index}}", response_class=FileResponse)(self.history_file)
        if getattr(self.runtime.args, "api_server_stop", False):       # A1111: only with --api-server-stop
            post(f"{PREFIX}/server-restart")(self.server_restart)
            post(f"{PREFIX}/server-stop")(self.server_stop)
            post(f"{PREFIX}/server-kill")(self.server_stop)
        return router

    # -- generation ------------------------------------------------------------------------------------------------
    async def txt2img(self, req: m.Txt2ImgRequest) -> m.GenerationResponse:
        req = await run_in_threadpool(_apply_infotext, req)
        p = await run_in_threadpool(self._processing, processing.StableDiffusionProcessingTxt2Img, req, {})
        return await self._generate("txt2img", req, p)

    async def img2img(self, req: m.Img2ImgRequest) -> m.GenerationResponse:
        if not req.init_images:
            raise HTTPException(404, "Init image not found")  # A1111's status and message
        req = await run_in_threadpool(_apply_infotext, req)
        opts = self.runtime.opts
        if len(req.init_images) > opts.limit_init_images:
            raise _field_error(("init_images",), f"init_images: {len(req.init_images)} images; the limit is "
                                                 f"{opts.limit_init_images} (setting limit_init_images)")
        init_images, mask = await run_in_threadpool(_decode_inputs, req.init_images, req.mask, opts.limit_input_pixels)
        p = await run_in_threadpool(self._processing, processing.StableDiffusionProcessingImg2Img, req,
                                    {"init_images": init_images, "mask": mask})
        return await self._generate("img2img", req, p)

    def _processing(self, cls: type[processing.StableDiffusionProcessing], req: m.GenerationRequest,
                    extra: dict[str, Any]) -> processing.StableDiffusionProcessing:
        """Check what only the server can check (sampler, overrides, scripts) and build the processing object."""
        for name in sorted(_UNSUPPORTED & req.model_fields_set):
            if getattr(req, name) is not None:
                raise _field_error((name,), f"{name} is not supported by this server; leave it null")
        sampler = req.sampler_name or req.sampler_index or "Euler"
        try:
            sd_samplers.split_sampler_name(sampler)
        except ValueError as e:  # A1111 answers 400 "Sampler not found"
            raise _field_error(("sampler_name" if req.sampler_name else "sampler_index",), f"Sampler not found: {e}",
                               status=400) from None
        try:
            sd_samplers.resolve(sampler, req.scheduler)
        except ValueError as e:
            raise _field_error(("scheduler",), str(e)) from None
        self._check_options(req.override_settings or {}, ("override_settings",))
        hr_upscaler = getattr(req, "hr_upscaler", None)
        if getattr(req, "enable_hr", False) and hr_upscaler and hr_upscaler not in processing.LATENT_UPSCALE_MODES:
            try:
                self.runtime.upscalers.find(hr_upscaler, "hr_upscaler")
            except UpscalerError as e:
                raise _field_error(("hr_upscaler",), f"{e}, {', '.join(processing.LATENT_UPSCALE_MODES)}") from None
        fields = req.model_dump(exclude=_API_ONLY, exclude_none=True)
        fields.update(sampler_name=sampler, do_not_save_samples=not req.save_images,
                      do_not_save_grid=not req.save_images, **extra)
        try:
            p = cls(**fields)
            # Sizes left out take the model's native size on the worker, where they are checked again.
            limits.check_job(p, self.runtime.opts, sizes=req.width is not None and req.height is not None)
        except ValidationError as e:
            raise _validation_error(e) from None
        except limits.LimitError as e:
            raise _field_error((e.field,), str(e)) from None
        _bind_scripts(p, req)
        return p

    def _check_options(self, values: dict[str, Any], loc: tuple[str, ...] = ()) -> None:
        """Validate option values (and that a ``sd_model_checkpoint`` exists) on a copy of the settings: a 422
        naming the first bad option, nothing changed."""
        if loc:  # a request's override_settings: never the server's limits
            try:
                limits.check_overrides(values)
            except limits.LimitError as e:
                raise _field_error((*loc, e.field.rpartition(".")[2]), str(e)) from None
        trial = self.runtime.opts.model_copy(deep=True)
        for key, value in values.items():
            if key == "sd_model_checkpoint":
                self._checkpoint_title(value, (*loc, key))
                continue
            if key == "sd_vae":
                self._check_vae(value, (*loc, key))
            if key.startswith("outdir_") and isinstance(value, str) and value:
                try:
                    self.runtime.paths.confine(value, key)
                except ValueError as e:
                    raise _field_error((*loc, key), str(e)) from None
            try:
                trial.set(key, value)
            except ValueError as e:
                raise _field_error((*loc, key), str(e)) from None

    async def _generate(self, kind: str, req: m.GenerationRequest,
                        p: processing.StableDiffusionProcessing) -> m.GenerationResponse:
        models = self.runtime.models
        if models.current is None and models.default_checkpoint() is None:
            raise HTTPException(503, f"no checkpoint found in {self.runtime.paths.ckpt_dir}; add one, then POST "
                                     f"{PREFIX}/refresh-checkpoints")
        restore = req.override_settings_restore_afterwards is not False
        native_size = [name for name in ("width", "height") if getattr(req, name) is None]
        job = self._submit(kind, _echo(req), self._generation_job(p, req.override_settings or {}, restore, native_size),
                           task_id=req.force_task_id, batch_key=batching.batch_key(kind, p, native_size))
        processed, info = (await self._wait(job)).value
        fmt, quality = self.runtime.opts.samples_format, self.runtime.opts.jpeg_quality
        encoded = await run_in_threadpool(lambda: [encode_image(im, fmt, quality) for im in processed.images]
                                          if req.send_images else [])
        echo = _echo(req, include_images=bool(getattr(req, "include_init_images", False)))
        return m.GenerationResponse(images=encoded, parameters=echo, info=info)

    def _generation_job(self, p: processing.StableDiffusionProcessing, overrides: dict[str, Any], restore: bool,
                        native_size: list[str]) -> Callable[[JobState], JobOutput]:
        """Run ``p`` on the worker (the size fields in `native_size` take the model's native size); afterwards restore a
        checkpoint switched by ``override_settings`` (or, without ``override_settings_restore_afterwards``, keep the
        overrides as the current settings, as A1111 does). The job's value is ``(Processed, info JSON)``: the info is
        read while the job's model is still loaded (restoring may unload a checkpoint the override loaded)."""
        models, opts = self.runtime.models, self.runtime.opts

        def run(state: JobState) -> JobOutput:
            previous = models.current
            succeeded = False
            try:
                processed = self.runtime.run(p, state, native_size)
                info = processed.js()
                succeeded = True
            finally:
                switched = models.current is not previous and previous is not None
                if switched and (restore or not succeeded):
                    models.load(previous.sd_checkpoint_info.title)
            if not restore:
                for key, value in overrides.items():
                    if key == "sd_model_checkpoint":   # the job's model (with Ray workers none is loaded here)
                        opts.sd_model_checkpoint = processed.p.sd_model.sd_checkpoint_info.title
                    else:
                        opts.set(key, value)
            return JobOutput(value=(processed, info), infotext=processed.info, files=list(processed.files),
                             notes=processed.comments)

        return run

    # -- extras ----------------------------------------------------------------------------------------------------
    async def extra_single_image(self, req: m.ExtrasSingleImageRequest) -> m.ExtrasSingleImageResponse:
        if not req.image:
            raise _field_error(("image",), "image: give a base64 image")
        image = await run_in_threadpool(_decode, req.image, "image")
        result, encoded = await self._extras(req, [postprocessing.ExtrasSource(image)])
        return m.ExtrasSingleImageResponse(html_info=result.html_info, image=encoded[0] if encoded else None)

    async def extra_batch_images(self, req: m.ExtrasBatchImagesRequest) -> m.ExtrasBatchImagesResponse:
        if not req.imageList:
            raise _field_error(("imageList",), "imageList: give at least one image")
        sources = await run_in_threadpool(lambda: [
            postprocessing.ExtrasSource(_decode(item.data, "imageList", i), item.name or None)
            for i, item in enumerate(req.imageList)])
        result, encoded = await self._extras(req, sources)
        return m.ExtrasBatchImagesResponse(html_info=result.html_info, images=encoded)

    async def _extras(self, req: m.ExtrasBaseRequest,
                      sources: list[postprocessing.ExtrasSource]) -> tuple[postprocessing.ExtrasResult, list[str]]:
        """Check the upscalers, queue the job (A1111's request fields become the "Upscale" script's args), wait."""
        for field in ("upscaler_1", "upscaler_2"):
            try:
                self.runtime.upscalers.find(getattr(req, field), field)
            except UpscalerError as e:
                raise _field_error((field,), str(e)) from None
        runner = await run_in_threadpool(scripts.postprocessing_runner)
        args = await run_in_threadpool(runner.create_args_for_run, {"Upscale": {
            "upscale_enabled": True, "upscale_mode": req.resize_mode, "upscale_by": req.upscaling_resize,
            "max_side_length": 0, "upscale_to_width": req.upscaling_resize_w,
            "upscale_to_height": req.upscaling_resize_h, "upscale_crop": req.upscaling_crop,
            "upscaler_1_name": req.upscaler_1, "upscaler_2_name": req.upscaler_2,
            "upscaler_2_visibility": req.extras_upscaler_2_visibility}})
        opts, data_dir = self.runtime.opts, self.runtime.paths.data_dir

        def job(state: JobState) -> JobOutput:
            result = postprocessing.run_extras(runner, sources, args, opts=opts, save=bool(req.save_images),
                                               outdir=postprocessing.output_dir(opts, data_dir), state=state)
            return JobOutput(value=result, infotext=result.infotexts[0] if result.infotexts else None,
                             files=list(result.files))

        params = req.model_dump(mode="json", exclude={"image", "imageList"})
        result = (await self._wait(self._submit("extras", params, job))).value
        fmt, quality = opts.samples_format, opts.jpeg_quality
        encoded = await run_in_threadpool(lambda: [encode_image(im, fmt, quality) for im in result.images])
        return result, encoded

    # -- jobs ------------------------------------------------------------------------------------------------------
    def _submit(self, kind: str, params: dict[str, Any], fn: Callable[[JobState], JobOutput], *,
                task_id: str | None = None, task_id_field: str = "force_task_id", batch_key: Any = None) -> Job:
        try:
            return self.queue.submit(kind, params, fn, task_id=task_id, batch_key=batch_key)
        except QueueFull as e:
            raise HTTPException(429, str(e)) from None
        except ValueError as e:  # that task id is live or in the history: it names another job
            raise _field_error((task_id_field,), f"{task_id_field}: {e}", status=409) from None
        except RuntimeError as e:  # the queue is shut down: the server is stopping
            raise HTTPException(503, str(e)) from None

    @staticmethod
    async def _wait(job: Job) -> JobOutput:
        """Await a job without blocking the event loop; its failure becomes the matching HTTP error."""
        try:
            return await asyncio.shield(asyncio.wrap_future(job.future))
        except JobCancelled as e:
            raise HTTPException(409, str(e)) from None
        except ValidationError as e:
            raise _validation_error(e) from None
        except (ValueError, CheckpointLoadError, CheckpointNotFoundError) as e:  # the message names the parameter
            raise HTTPException(422, str(e)) from None
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:  # a name built from the request is longer than the file system allows
                raise HTTPException(422, f"a file or folder name made from this request is too long: {e}") from None
            raise HTTPException(500, f"{type(e).__name__}: {e}") from None
        except Exception as e:  # a server fault: the queue has logged the traceback
            raise HTTPException(500, f"{type(e).__name__}: {e}") from None

    async def _run_job(self, kind: str, fn: Callable[[], Any], params: dict[str, Any] | None = None) -> Any:
        """Run ``fn`` on the worker (so it never overlaps a generation) and return its result."""
        job = self._submit(kind, params or {}, lambda state: JobOutput(value=fn()))
        return (await self._wait(job)).value

    # -- training (queued like generation, so it never overlaps one; /interrupt stops it and saves) ----------------
    async def create_embedding(self, req: training.CreateEmbeddingRequest) -> dict[str, str]:
        path = await self._run_job("create-embedding", lambda: training.create_embedding(self.runtime, req),
                                   req.model_dump(mode="json"))
        return {"info": f"create embedding filename: {path}"}

    async def train_embedding(self, req: training.TrainEmbeddingRequest) -> dict[str, str]:
        try:
            self.runtime.paths.confine(req.log_directory, "log_directory")
        except ValueError as e:
            raise _field_error(("log_directory",), str(e)) from None
        result = await self._train("train-embedding", training.train_embedding, req, req.id_task)
        return {"info": f"train embedding complete: filename: {result.path} error: None"}

    async def train_lora(self, req: training.TrainLoraRequest) -> dict[str, Any]:
        result = await self._train("train-lora", training.train_lora, req)
        return {"info": result.message, "filename": str(result.path) if result.path else None,
                "steps": result.step, "loss": result.loss, "interrupted": result.interrupted}

    async def _train(self, kind: str, fn: Callable[..., Any], req: Any, task_id: str | None = None) -> Any:
        def run(state: JobState) -> JobOutput:
            result = fn(self.runtime, req, state)
            return JobOutput(value=result, infotext=result.message, files=[str(f) for f in result.files])

        job = self._submit(kind, req.model_dump(mode="json"), run, task_id=task_id, task_id_field="id_task")
        return (await self._wait(job)).value

    # -- png info / progress / control ------------------------------------------------------------------------------
    async def png_info(self, req: m.PNGInfoRequest) -> m.PNGInfoResponse:
        if not req.image.strip():
            return m.PNGInfoResponse(info="")
        return await run_in_threadpool(_png_info, req.image)

    async def progress(self, skip_current_image: bool = False) -> m.ProgressResponse:
        job = self.queue.current
        if job is None:
            return m.ProgressResponse(progress=0.0, eta_relative=0.0, state=m.ProgressState())
        s = job.state
        started = s.time_start or job.started or time.time()
        state = m.ProgressState(skipped=s.skipped, interrupted=s.interrupted, job=s.job, job_count=s.job_count,
                                job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(started)),
                                job_no=s.job_no, sampling_step=s.sampling_step, sampling_steps=s.sampling_steps)
        image = s.current_image
        current = None if skip_current_image or image is None else await run_in_threadpool(encode_image, image)
        return m.ProgressResponse(progress=s.progress(), eta_relative=s.eta() or 0.0, state=state,
                                  current_image=current, textinfo=s.textinfo, task_id=job.id)

    async def interrupt(self) -> dict[str, Any]:
        self.queue.interrupt()
        return {}

    async def skip(self) -> None:
        self.queue.skip()

    async def server_restart(self) -> dict[str, Any]:
        """Start the app again (under ./webui.sh, modules/restart.py); 409 saying why when it cannot."""
        try:
            restart.restart()
        except RuntimeError as e:
            raise HTTPException(409, str(e)) from None
        return {"restarting": True}

    async def server_stop(self) -> dict[str, Any]:
        restart.exit_soon(0)
        return {"stopping": True}

    # -- options / flags ---------------------------------------------------------------------------------------------
    async def get_options(self) -> dict[str, Any]:
        return self.runtime.opts.public_values()

    async def set_options(self, body: dict[str, Any] = Body(...)) -> None:
        """Validate everything first; switch the checkpoint (on the worker) if asked; then set and save the rest."""
        opts = self.runtime.opts
        self._check_options(body)
        if "sd_model_checkpoint" in body:
            title = self._checkpoint_title(body["sd_model_checkpoint"], ("sd_model_checkpoint",))
            current = self.runtime.models.current
            if current is None or current.sd_checkpoint_info.title != title:
                await self._run_job("checkpoint", lambda: self.runtime.switch_model(title), {"checkpoint": title})
            else:
                opts.sd_model_checkpoint = title
        for key, value in body.items():
            if key != "sd_model_checkpoint":
                opts.set(key, value)
        await run_in_threadpool(opts.save)

    def _check_vae(self, name: Any, loc: tuple[str, ...]) -> None:
        """``sd_vae`` is "Automatic", "None" or the name (or file) of a VAE the server lists."""
        vaes = self.runtime.models.list_vaes()
        if name in (sd_vae.AUTOMATIC, sd_vae.NONE) or any(name in (v.name, v.filename) for v in vaes):
            return
        choices = ", ".join([sd_vae.AUTOMATIC, sd_vae.NONE, *(v.name for v in vaes)])
        raise _field_error(loc, f"{'.'.join(loc)}: VAE {name!r} not found; available: {choices}")

    def _checkpoint_title(self, name: Any, loc: tuple[str, ...]) -> str:
        if not isinstance(name, str) or not name:
            raise _field_error(loc, "a checkpoint title, file name or hash is required")
        try:
            return self.runtime.models.get_info(name).title
        except CheckpointNotFoundError as e:
            raise _field_error(loc, str(e)) from None

    async def cmd_flags(self) -> dict[str, Any]:
        flags = dict(vars(self.runtime.args))
        for key in HIDDEN_FLAGS:
            if flags.get(key):
                flags[key] = "<hidden>"
        return flags

    # -- lists ------------------------------------------------------------------------------------------------------
    async def samplers(self) -> list[m.SamplerItem]:
        return [m.SamplerItem(name=s.name, aliases=list(s.aliases), options=dict(s.options))
                for s in sd_samplers.samplers]

    async def schedulers(self) -> list[m.SchedulerItem]:
        return [m.SchedulerItem(name=s.name, label=s.label, aliases=list(s.aliases)) for s in sd_samplers.schedulers]

    async def upscalers(self) -> list[m.UpscalerItem]:
        upscalers = await run_in_threadpool(self.runtime.upscalers.list)
        return [m.UpscalerItem(name=u.name, model_name=u.model_name, model_path=u.model_path, model_url=u.model_url,
                               scale=u.scale) for u in upscalers]

    async def latent_upscale_modes(self) -> list[m.LatentUpscalerModeItem]:
        return [m.LatentUpscalerModeItem(name=name) for name in processing.LATENT_UPSCALE_MODES]

    def sd_models(self) -> list[m.SDModelItem]:
        return [m.SDModelItem(title=c.title, model_name=c.model_name, hash=c.shorthash, sha256=c.sha256,
                              filename=str(c.filename)) for c in self.runtime.models.list_checkpoints()]

    async def sd_vae(self) -> list[m.SDVaeItem]:
        return [m.SDVaeItem(model_name=v.model_name, filename=v.filename) for v in self.runtime.models.list_vaes()]

    def refresh_checkpoints(self) -> None:
        """Rescan the checkpoint and VAE folders (A1111 has one route for each)."""
        self.runtime.models.refresh()

    async def merge_checkpoint(self, req: merger.MergeRequest) -> m.MergeCheckpointResponse:
        """The Checkpoint Merger tab's merge, queued like a generation; the result is in the checkpoint list."""
        def run(state: JobState) -> JobOutput:
            result = merger.merge_checkpoints(self.runtime.models, req, state)
            return JobOutput(value=result, infotext=result.message, files=[str(result.path)])

        try:
            await run_in_threadpool(merger.check_request, self.runtime.models, req)
        except merger.MergeError as e:
            raise HTTPException(422, str(e)) from None
        result = (await self._wait(self._submit("merge-checkpoint", req.model_dump(mode="json"), run))).value
        return m.MergeCheckpointResponse(info=result.message, title=result.info.title, filename=str(result.path),
                                         sha256=result.info.sha256)

    async def unload_checkpoint(self) -> dict[str, Any]:
        await self._run_job("checkpoint", self.runtime.models.unload, {"action": "unload"})
        return {}

    async def reload_checkpoint(self) -> dict[str, Any]:
        """Load the checkpoint the settings name (or the default one) again after an unload."""
        info = self.runtime.models.default_checkpoint()
        if info is None:
            raise HTTPException(404, f"no checkpoint found; put one in {self.runtime.paths.ckpt_dir}")
        await self._run_job("checkpoint", lambda: self.runtime.models.load(info.title),
                            {"action": "reload", "checkpoint": info.title})
        return {}

    def prompt_styles(self) -> list[m.PromptStyleItem]:
        styles = self.runtime.prompt_styles
        styles.reload_if_changed()
        return [m.PromptStyleItem(**item) for item in styles.api_listing()]

    def embeddings(self) -> m.EmbeddingsResponse:
        """The embeddings folder as loaded for the current model (empty while none is loaded)."""
        return m.EmbeddingsResponse(**self.runtime.embeddings.api_listing(self.runtime.models.current))

    async def refresh_embeddings(self) -> None:
        """Read the embeddings folder again now, even files changed in place (A1111's force reload)."""
        library = self.runtime.embeddings
        library.refresh()
        model = self.runtime.models.current
        if model is not None:
            await run_in_threadpool(library.for_model, model)

    def loras(self) -> list[m.LoraItem]:
        return [m.LoraItem(**item) for item in self.runtime.loras.api_listing()]

    def refresh_loras(self) -> None:
        self.runtime.loras.refresh()

    async def realesrgan_models(self) -> list[m.RealesrganItem]:
        """The upscaler files of the RealESRGAN folder."""
        upscalers = await run_in_threadpool(self.runtime.upscalers.list)
        return [m.RealesrganItem(name=u.name, path=u.data_path, scale=u.scale) for u in upscalers
                if u.model_name == "RealESRGAN"]

    async def nothing(self) -> list[dict[str, Any]]:
        """Lists of features this server does not have (hypernetworks, face restorers)."""
        return []

    async def scripts(self) -> m.ScriptsList:
        return m.ScriptsList(**scripts.api_scripts_list())

    def script_info(self) -> list[m.ScriptInfo]:
        return [m.ScriptInfo(**info) for info in scripts.api_script_info()]

    async def extensions(self) -> list[m.ExtensionItem]:
        return [m.ExtensionItem(**item) for item in extensions.api_list()]

    def workers(self) -> list[dict[str, Any]]:
        return ray_workers.describe(self.runtime)

    def memory(self) -> m.MemoryResponse:
        ram = psutil.virtual_memory()
        return m.MemoryResponse(ram={"free": ram.available, "used": ram.total - ram.available, "total": ram.total},
                                cuda=_cuda_memory())

    # -- queue / history --------------------------------------------------------------------------------------------
    async def get_queue(self) -> m.QueueResponse:
        current = self.queue.current
        return m.QueueResponse(running=_job_item(current) if current else None,
                               pending=[_job_item(j) for j in self.queue.pending()],
                               max_pending=self.queue.max_pending)

    async def task_progress(self, task_id: str, live_preview: bool = False,
                            id_live_preview: int = -1) -> m.TaskProgressResponse:
        progress = await run_in_threadpool(self.queue.progress, task_id, live_preview=live_preview,
                                           id_live_preview=id_live_preview)
        return m.TaskProgressResponse(**vars(progress))

    async def cancel_task(self, task_id: str) -> m.JobItem:
        try:
            return _job_item(self.queue.cancel(task_id))
        except KeyError:
            raise HTTPException(404, f"no queued or running task {task_id!r}") from None

    def history(self, limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=2**31),
                kind: str | None = None) -> list[m.HistoryItem]:
        return [_history_item(e) for e in self.queue.history(limit=limit, offset=offset, kind=kind)]

    def history_entry(self, task_id: str) -> m.HistoryItem:
        return _history_item(self._history_or_404(task_id))

    def history_file(self, task_id: str, index: int) -> FileResponse:
        """One output file of a finished job, served only from inside the output folders."""
        entry = self._history_or_404(task_id)
        if not 0 <= index < len(entry.files):
            raise HTTPException(404, f"task {task_id!r} has {len(entry.files)} file(s)")
        path = Path(entry.files[index]).resolve()
        if not any(path.is_relative_to(root) for root in self._output_roots()) or not path.is_file():
            raise HTTPException(404, "file not found in the output folders")
        return FileResponse(path, filename=path.name, content_disposition_type="attachment")

    def _history_or_404(self, task_id: str) -> HistoryEntry:
        entry = self.queue.history_entry(task_id)
        if entry is None:
            raise HTTPException(404, f"no finished task {task_id!r}")
        return entry

    def _output_roots(self) -> list[Path]:
        """The output folders, resolved; one a hand-edited setting put outside the data dir is not a root."""
        opts, paths = self.runtime.opts, self.runtime.paths
        configured = [opts.outdir_samples, opts.outdir_grids, opts.outdir_txt2img_samples,
                      opts.outdir_img2img_samples, opts.outdir_extras_samples, opts.outdir_txt2img_grids,
                      opts.outdir_img2img_grids]
        roots = [paths.outputs_dir.resolve()]
        for directory in filter(None, configured):
            try:
                roots.append(paths.confine(directory, "output folder"))
            except ValueError:
                continue
        return roots


# -- helpers ----------------------------------------------------------------------------------------------------------
_Request = TypeVar("_Request", bound=m.GenerationRequest)


def _bind_scripts(p: processing.StableDiffusionProcessing, req: m.GenerationRequest) -> None:
    """Attach the tab's scripts to ``p`` with the request's ``script_name`` / ``script_args`` / ``alwayson_scripts``
    (A1111's 422 when a script is unknown or its args do not fit)."""
    runner = scripts.runner_for(p.tab)
    if runner is None:
        for field, value in (("script_name", req.script_name if req.script_name != "None" else None),
                             ("alwayson_scripts", req.alwayson_scripts), ("script_args", req.script_args)):
            if value:
                raise _field_error((field,), f"{field}: no scripts are loaded")
        return
    try:
        runner.bind_api_args(p, req.script_name, req.script_args, req.alwayson_scripts)
    except ValueError as e:
        field = next((f for f in ("alwayson_scripts", "script_name") if str(e).startswith(f)), "script_args")
        raise _field_error((field,), str(e)) from None


def _apply_infotext(req: _Request) -> _Request:
    """Fill the fields ``req`` does not set from its ``infotext`` (its ``Clip skip`` and ``Noise Schedule`` become
    overrides), as A1111."""
    if not req.infotext:
        return req
    params = infotext.parse_generation_parameters(req.infotext)
    filled = {field: params[key] for key, field in _INFOTEXT_FIELDS.items()
              if key in params and field not in req.model_fields_set}
    overrides = {"CLIP_stop_at_last_layers": params["Clip skip"], **_infotext_settings(params),
                 **(req.override_settings or {})}
    try:
        return type(req).model_validate({**req.model_dump(exclude_unset=True), **filled,
                                         "override_settings": overrides})
    except ValidationError as e:
        raise _validation_error(e) from None


def _infotext_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Settings an infotext names (A1111 reads them as overrides): ``Noise Schedule`` -> ``sd_noise_schedule``."""
    from modules import noise_schedule

    value = params.get(noise_schedule.INFOTEXT_KEY)
    return {noise_schedule.OPTION: value} if value else {}


def _png_info(data: str) -> m.PNGInfoResponse:
    """Read and parse an image's infotext (on a worker thread: the parser is linear, but texts can be long)."""
    image = _decode(data, "image")
    try:
        geninfo, items = images.read_info_from_image(image)
    except Exception as e:  # noqa: BLE001 - a malformed EXIF / text chunk is the image's fault
        raise _field_error(("image",), f"image: its metadata cannot be read ({type(e).__name__})") from None
    if geninfo and len(geninfo) > m.MAX_INFOTEXT_CHARS:
        raise _field_error(("image",), f"image: its parameters text has {len(geninfo)} characters; at most "
                                       f"{m.MAX_INFOTEXT_CHARS} are read")
    parameters = infotext.parse_generation_parameters(geninfo) if geninfo else {}
    return m.PNGInfoResponse(info=geninfo or "", items=_jsonable_items(items), parameters=parameters)


def _decode_inputs(init_images: list[str], mask: str | None, budget: int) -> tuple[list[Any], Any]:
    """Decode img2img's images, each once, all together within ``budget`` pixels (``limit_input_pixels``): each
    size is read from its header and checked before its pixels are decoded."""
    decoded = []
    for i, data in enumerate(init_images):
        decoded.append(_decode(data, "init_images", i, max_pixels=budget))
        budget -= decoded[-1].width * decoded[-1].height
    return decoded, _decode(mask, "mask", max_pixels=budget) if mask else None


def _decode(data: str, field: str, index: int | None = None, max_pixels: int = MAX_INPUT_PIXELS) -> Any:
    try:
        return decode_image(data, max_pixels, "what is left of limit_input_pixels for this request")
    except ImageDecodeError as e:
        loc = (field,) if index is None else (field, index)
        raise _field_error(loc, f"{'.'.join(map(str, loc))}: {e}") from None


def _echo(req: m.GenerationRequest, *, include_images: bool = False) -> dict[str, Any]:
    """The request as A1111 echoes it in ``parameters`` (and the history records it); images left out by default."""
    params = req.model_dump(mode="json")
    if not include_images:
        params.update({k: None for k in ("init_images", "mask") if k in params})
    return params


def _jsonable_items(items: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for k, v in items.items()}


def _job_item(job: Job) -> m.JobItem:
    return m.JobItem(id=job.id, kind=job.kind, status=job.status, created=job.created, started=job.started)


def _history_item(e: HistoryEntry) -> m.HistoryItem:
    return m.HistoryItem(id=e.id, kind=e.kind, status=e.status, error=e.error, params=e.params,
                         infotext=e.infotext, files=e.files, created=e.created, started=e.started,
                         finished=e.finished, duration=e.duration)


def _cuda_memory() -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"error": "CUDA is not available"}
    free, total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()

    def pair(name: str) -> dict[str, int]:
        return {"current": stats.get(f"{name}.all.current", 0), "peak": stats.get(f"{name}.all.peak", 0)}

    return {"system": {"free": free, "used": total - free, "total": total},
            "active": pair("active_bytes"), "allocated": pair("allocated_bytes"),
            "reserved": pair("reserved_bytes"), "inactive": pair("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}


# -- wiring -----------------------------------------------------------------------------------------------------------
def mount_api(app: FastAPI, runtime: Runtime, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Api:
    """Add the ``/sdapi/v1`` routes (and, with ``--cors-allow-origins``, CORS) to ``app``; call before it starts."""
    api = Api(runtime)
    app.include_router(api.router())
    from modules.api import browser_routes   # the image browser (not in A1111's API)

    app.include_router(browser_routes.router(runtime))
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(ApiRequestMiddleware, prefix="/sdapi/", max_body_bytes=max_body_bytes,
                       credentials=api_credentials(runtime.args))
    origins = [o.strip() for o in (runtime.args.cors_allow_origins or "").split(",") if o.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"],
                           allow_credentials=True)
    return api


def create_api_app(runtime: Runtime, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """A FastAPI app serving only the API (``--nowebui``); docs at ``/docs``."""
    app = FastAPI(title="Stable Diffusion API (A1111-compatible)", docs_url=None, redoc_url=None)
    mount_api(app, runtime, max_body_bytes=max_body_bytes)
    add_offline_docs(app)
    return app
