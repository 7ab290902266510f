"""Request and response models of the ``/sdapi/v1`` API, with A1111's field names and A1111's *API* defaults.

The API defaults differ from the UI's (steps 50, sampler via ``sampler_index`` = "Euler", denoising 0.75, inpaint
"only masked" with padding 0 and "fill", ``save_images`` False). One deliberate difference from A1111: a request
without width/height gets the checkpoint's native size, not 512 (SDXL and the 64-px default model draw poorly off
it). As in A1111 every generation field is nullable:
``null`` means "the default", the API default where this table has one, otherwise the UI's / the settings'.
Bounds match ``modules.processing`` so that the OpenAPI schema states them.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modules.job_queue import JobStatus

MAX_SIDE = 2048          # width / height: a multiple of 8 in [8, 2048]
SIZE_MULTIPLE = 8
MAX_BATCH_SIZE = 64
MAX_N_ITER = 1000
MAX_STEPS = 1000
MAX_INIT_IMAGES = 64
MAX_INFOTEXT_CHARS = 256 * 1024   # infotexts longer than any real one are refused, not parsed
MAX_SEED = 2**63 - 1     # -1 means random (below 2**32); room is left for seed + image index
NATIVE = ("null: the checkpoint's native size (512 for SD1.x, 768 for SD2.x v-models, 1024 for SDXL, 64 for the "
          "default model), where A1111 always takes 512")


class _Request(BaseModel):
    """Unknown fields are ignored (A1111 does); an explicit ``null`` takes the field's default."""
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k not in cls.model_fields
                    or cls.model_fields[k].default is None}
        return data


class GenerationRequest(_Request):
    """Fields shared by txt2img and img2img."""
    prompt: str | None = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int | None = Field(-1, ge=-1, le=MAX_SEED)
    subseed: int | None = Field(-1, ge=-1, le=MAX_SEED)
    subseed_strength: float | None = Field(0.0, ge=0.0, le=1.0)
    seed_resize_from_h: int | None = Field(-1, ge=-1, le=MAX_SIDE)
    seed_resize_from_w: int | None = Field(-1, ge=-1, le=MAX_SIDE)
    sampler_name: str | None = None
    sampler_index: str | None = Field("Euler", description="legacy name of sampler_name, used when that is null")
    scheduler: str | None = None
    batch_size: int | None = Field(1, ge=1, le=MAX_BATCH_SIZE)
    n_iter: int | None = Field(1, ge=1, le=MAX_N_ITER)
    steps: int | None = Field(50, ge=1, le=MAX_STEPS)
    cfg_scale: float | None = Field(7.0, ge=0.0, le=100.0, allow_inf_nan=False)
    guidance_rescale: float | None = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False,
                                           description="CFG rescale φ: 0 = off, 0.7 typical")
    dynamic_thresholding: float | None = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False,
                                               description="dynamic thresholding percentile of |x0| in [0.5, 1] "
                                                           "(0.995 typical); 0 = off")
    dynamic_thresholding_mimic_scale: float | None = Field(7.0, ge=1.0, le=100.0, allow_inf_nan=False,
                                                           description="CFG scale whose x0 range the thresholded "
                                                                       "prediction is rescaled to")
    width: int | None = Field(None, ge=SIZE_MULTIPLE, le=MAX_SIDE, multiple_of=SIZE_MULTIPLE, description=NATIVE)
    height: int | None = Field(None, ge=SIZE_MULTIPLE, le=MAX_SIDE, multiple_of=SIZE_MULTIPLE, description=NATIVE)
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = Field(False, description="overridden by save_images")
    do_not_save_grid: bool | None = Field(False, description="overridden by save_images")
    eta: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    denoising_strength: float | None = Field(0.75, ge=0.0, le=1.0, allow_inf_nan=False)
    s_min_uncond: float | None = Field(None, description="not supported; must be null")
    s_churn: float | None = Field(None, allow_inf_nan=False)
    s_tmax: float | None = Field(None, allow_inf_nan=False)
    s_tmin: float | None = Field(None, allow_inf_nan=False)
    s_noise: float | None = Field(None, allow_inf_nan=False)
    override_settings: dict[str, Any] | None = Field(None, description="option name -> value for this job only")
    override_settings_restore_afterwards: bool | None = True
    refiner_checkpoint: str | None = Field(None, description="not supported; must be null")
    refiner_switch_at: float | None = Field(None, description="not supported; must be null")
    disable_extra_networks: bool | None = False
    comments: dict[str, Any] | None = None
    force_task_id: str | None = Field(None, max_length=200, description="task id to use instead of a generated one")
    script_name: str | None = Field(None, description="title of a selectable script (GET /scripts lists them)")
    script_args: list[Any] | None = Field(default_factory=list)
    alwayson_scripts: dict[str, Any] | None = Field(default_factory=dict)
    send_images: bool | None = True
    save_images: bool | None = Field(False, description="save to the output folder (sets do_not_save_samples/grid)")
    infotext: str | None = Field(None, max_length=MAX_INFOTEXT_CHARS,
                                 description="an infotext whose values fill the fields this request leaves out")


class Txt2ImgRequest(GenerationRequest):
    enable_hr: bool | None = False
    firstphase_width: int | None = Field(0, ge=0, le=MAX_SIDE)
    firstphase_height: int | None = Field(0, ge=0, le=MAX_SIDE)
    hr_scale: float | None = Field(2.0, ge=1.0, le=8.0, allow_inf_nan=False)
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = Field(0, ge=0, le=MAX_STEPS)
    hr_resize_x: int | None = Field(0, ge=0, le=MAX_SIDE)
    hr_resize_y: int | None = Field(0, ge=0, le=MAX_SIDE)
    hr_checkpoint_name: str | None = Field(None, description="not supported; must be null")
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""
    firstpass_image: str | None = Field(None, description="not supported; must be null")


class Img2ImgRequest(GenerationRequest):
    init_images: list[str] | None = Field(None, max_length=MAX_INIT_IMAGES,
                                          description="base64 images, with or without a data: URL prefix")
    resize_mode: int | None = Field(0, ge=0, le=3)
    image_cfg_scale: float | None = Field(None, allow_inf_nan=False)
    mask: str | None = Field(None, description="base64 image; white = inpaint")
    mask_blur_x: int | None = Field(4, ge=0, le=256)
    mask_blur_y: int | None = Field(4, ge=0, le=256)
    mask_blur: int | None = Field(None, ge=0, le=256)
    mask_round: bool | None = True
    inpainting_fill: int | None = Field(0, ge=0, le=3)
    inpaint_full_res: bool | None = True
    inpaint_full_res_padding: int | None = Field(0, ge=0, le=1024)
    inpainting_mask_invert: int | None = Field(0, ge=0, le=1)
    initial_noise_multiplier: float | None = Field(None, ge=0.0, le=1.5, allow_inf_nan=False)
    latent_mask: str | None = Field(None, description="not supported; must be null")
    include_init_images: bool | None = Field(False, description="echo init_images and mask in `parameters`")


class GenerationResponse(BaseModel):
    images: list[str] = Field(description="base64 images (no data: prefix)")
    parameters: dict[str, Any]
    info: str = Field(description="generation info as a JSON string")


class ExtrasBaseRequest(_Request):
    """A1111's extras fields. Face restoration (GFPGAN / CodeFormer) is not available here: those fields are accepted
    at 0 only. ``upscale_first`` orders upscaling before face restoration, so without the latter it changes nothing."""
    resize_mode: int | None = Field(0, ge=0, le=1, description="0: scale by upscaling_resize; 1: scale to "
                                                                "upscaling_resize_w x upscaling_resize_h")
    show_extras_results: bool | None = Field(True, description="return the images (A1111: matters for folder batches)")
    gfpgan_visibility: float | None = Field(0, ge=0, le=1, allow_inf_nan=False)
    codeformer_visibility: float | None = Field(0, ge=0, le=1, allow_inf_nan=False)
    codeformer_weight: float | None = Field(0, ge=0, le=1, allow_inf_nan=False)
    upscaling_resize: float | None = Field(2, gt=0, le=8, allow_inf_nan=False)
    upscaling_resize_w: int | None = Field(512, ge=1, le=8192)
    upscaling_resize_h: int | None = Field(512, ge=1, le=8192)
    upscaling_crop: bool | None = True
    upscaler_1: str | None = "None"
    upscaler_2: str | None = "None"
    extras_upscaler_2_visibility: float | None = Field(0, ge=0, le=1, allow_inf_nan=False)
    upscale_first: bool | None = False
    save_images: bool | None = Field(False, description="also save the results in the extras output folder (not "
                                                        "an A1111 field; A1111's API never saves extras)")

    @field_validator("gfpgan_visibility", "codeformer_visibility")
    @classmethod
    def _no_face_restoration(cls, value: float | None, info) -> float | None:
        if value:
            raise ValueError(f"{info.field_name}: face restoration (GFPGAN / CodeFormer) is not available on this "
                             "server; leave it at 0")
        return value


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = Field("", description="base64 image, with or without a data: URL prefix")


class FileData(BaseModel):
    data: str = Field(description="base64 image")
    name: str = Field("", description="file name")


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData] = Field(default_factory=list, max_length=MAX_INIT_IMAGES)


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: str | None = None


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str] = Field(default_factory=list)


class PNGInfoRequest(_Request):
    image: str = Field(description="base64 image, with or without a data: URL prefix")


class PNGInfoResponse(BaseModel):
    info: str
    items: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None = None
    textinfo: str | None = None
    task_id: str | None = Field(None, description="the running task")


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float | None = None
    need_inner_model: bool | None = None


class UpscalerItem(BaseModel):
    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class RealesrganItem(BaseModel):
    name: str
    path: str | None = None
    scale: float | None = None


class LatentUpscalerModeItem(BaseModel):
    name: str


class MergeCheckpointResponse(BaseModel):
    info: str = Field(description="what was saved, in words")
    title: str = Field(description="the new checkpoint's title, as /sdapi/v1/sd-models lists it")
    filename: str
    sha256: str


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


class SDVaeItem(BaseModel):
    model_name: str
    filename: str


class PromptStyleItem(BaseModel):
    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, Any] = Field(default_factory=dict)
    skipped: dict[str, Any] = Field(default_factory=dict)


class ScriptsList(BaseModel):
    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)


class ScriptArg(BaseModel):
    label: str | None = None
    value: Any = None
    minimum: Any = None
    maximum: Any = None
    step: Any = None
    choices: list[Any] | None = None


class ScriptInfo(BaseModel):
    name: str
    is_alwayson: bool
    is_img2img: bool
    args: list[ScriptArg]


class LoraItem(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class ExtensionItem(BaseModel):
    name: str
    remote: str | None = None
    branch: str | None = None
    commit_hash: str | None = None
    commit_date: int | None = None
    version: str | None = None
    enabled: bool
    path: str | None = None
    status: str | None = None
    problems: list[str] = Field(default_factory=list)


class MemoryResponse(BaseModel):
    ram: dict[str, Any]
    cuda: dict[str, Any]


class JobItem(BaseModel):
    id: str
    kind: str
    status: JobStatus
    created: float
    started: float | None = None


class QueueResponse(BaseModel):
    running: JobItem | None
    pending: list[JobItem]
    max_pending: int


class TaskProgressResponse(BaseModel):
    """A1111's ``/internal/progress`` fields for one task, plus its status and queue position."""
    active: bool
    queued: bool
    completed: bool
    progress: float | None = None
    eta: float | None = None
    live_preview: str | None = None
    id_live_preview: int = -1
    textinfo: str | None = None
    status: JobStatus | None = None
    queue_position: int | None = None


class HistoryItem(BaseModel):
    id: str
    kind: str
    status: JobStatus
    error: str | None = None
    params: dict[str, Any]
    infotext: str
    files: list[str] = Field(description="output files, relative to the outputs folder where they are inside it")
    created: float
    started: float | None = None
    finished: float | None = Field(None, description="null while the job is queued or running")
    duration: float | None = None
