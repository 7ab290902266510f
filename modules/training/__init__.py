"""The Train tab's backend: textual-inversion embeddings (create, train) and LoRA training.

Each training function is a job function for ``modules.job_queue``: it takes the app's ``Runtime`` (or a
``TrainingEnv`` naming a model and folders), a pydantic request with A1111's field names, and the job's ``JobState``
(progress, ETA text, live preview, interrupt), and returns a ``TrainResult``.

    create_embedding(runtime, CreateEmbeddingRequest(name="stripes", num_vectors_per_token=2)) -> Path
    train_embedding(runtime, TrainEmbeddingRequest(embedding_name="stripes", data_root=...), state) -> TrainResult
    train_lora(runtime, TrainLoraRequest(name="narrow", data_root=...), state) -> TrainResult

Modules: ``textual_inversion`` (embedding files and their training), ``lora_train`` (LoRA adapters -> kohya files),
``dataset`` (images, captions, prompt templates, latents), ``lr_schedule`` (A1111's ``0.005:100, 1e-3`` syntax),
``common`` (the frozen model, differentiable prompt encoding, the diffusion loss, the step loop, atomic saving),
``effects`` (what training teaches the default model, measured; imported on its own).
"""
from modules.training.common import TrainingEnv, TrainResult
from modules.training.dataset import list_templates, template_dirs
from modules.training.lora_train import UNET_MODULES, TrainLoraRequest, UnetModule, train_lora
from modules.training.lr_schedule import LearnRateSchedule, parse_learn_rate
from modules.training.textual_inversion import (CreateEmbeddingRequest, TrainEmbeddingRequest, create_embedding,
                                                train_embedding)

__all__ = [
    "CreateEmbeddingRequest", "LearnRateSchedule", "TrainEmbeddingRequest", "TrainLoraRequest", "TrainResult",
    "TrainingEnv", "UNET_MODULES", "UnetModule", "create_embedding", "list_templates", "parse_learn_rate",
    "template_dirs", "train_embedding", "train_lora",
]
