"""diffusers -> original (LDM / "single file") checkpoint key layout.

diffusers ships only the other direction (``from_single_file``). This module writes the layout that A1111, ComfyUI
and ``from_single_file`` read, so tests can build real-looking checkpoints from tiny random models and the default
model can be shipped as one ``.safetensors`` file. The index arithmetic is driven by the UNet's own config
(``layers_per_block``, which blocks have attention), never by hard-coded SD1.5 numbers.

Text encoder layouts by family:

- ``sd1``: HF CLIP under ``cond_stage_model.transformer.text_model.``
- ``sd2``: OpenCLIP under ``cond_stage_model.model.`` (fused ``in_proj``, ``text_projection`` stored transposed). SD2
  reads the penultimate layer of a 24-layer OpenCLIP, so diffusers' SD2 encoder has 23 layers and its loader drops
  file block 23: a 23-layer encoder gets the unused 24th block appended, a deeper one is refused.
- ``sdxl``: HF CLIP under ``conditioner.embedders.0.transformer.text_model.`` and OpenCLIP under
  ``conditioner.embedders.1.model.``; the UNet's ``add_embedding`` becomes ``label_emb``.
- ``sdxl-refiner``: OpenCLIP only, under ``conditioner.embedders.0.model.`` (pass it as ``text_encoder_2`` or
  ``text_encoder``).

UNet under ``model.diffusion_model.``, VAE under ``first_stage_model.`` for every family.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Family = Literal["sd1", "sd2", "sdxl", "sdxl-refiner"]
StateDict = dict[str, torch.Tensor]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TE_PREFIXES: dict[Family, tuple[str | None, str | None]] = {
    # family: (HF CLIP prefix for text_encoder, OpenCLIP prefix for the OpenCLIP encoder)
    "sd1": ("cond_stage_model.transformer.text_model.", None),
    "sd2": (None, "cond_stage_model.model."),
    "sdxl": ("conditioner.embedders.0.transformer.text_model.", "conditioner.embedders.1.model."),
    "sdxl-refiner": (None, "conditioner.embedders.0.model."),
}
# diffusers' SD2 loader hard-codes dropping OpenCLIP block 23 (SD2 uses the penultimate of 24 layers).
SD2_OPENCLIP_DEPTH = 24

_UNET_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))
_OPENCLIP_LAYER = (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
                   ("self_attn.out_proj", "attn.out_proj"))


def diffusers_to_ldm(unet: nn.Module, vae: nn.Module, text_encoder: nn.Module | None,
                     text_encoder_2: nn.Module | None = None, family: Family = "sd1") -> StateDict:
    """Return the whole model as one original-layout state dict (tensors share storage with the modules' weights
    where no reshape is needed; ``safetensors.torch.save_file`` accepts the result as is)."""
    if family not in TE_PREFIXES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(TE_PREFIXES)}")
    clip_prefix, openclip_prefix = TE_PREFIXES[family]
    openclip_model = {"sd2": text_encoder, "sdxl-refiner": text_encoder_2 or text_encoder}.get(family, text_encoder_2)
    if clip_prefix and text_encoder is None:
        raise ValueError(f"family {family!r} needs text_encoder (HF CLIP)")
    if openclip_prefix and openclip_model is None:
        raise ValueError(f"family {family!r} needs an OpenCLIP-style text encoder")

    out: StateDict = {}
    out.update(_prefixed(UNET_PREFIX, convert_unet(unet.state_dict(), dict(unet.config))))
    out.update(_prefixed(VAE_PREFIX, convert_vae(vae.state_dict(), len(vae.config["up_block_types"]))))
    if clip_prefix:
        out.update(_prefixed(clip_prefix, _clip_body(text_encoder.state_dict())))
    if openclip_prefix:
        out.update(_prefixed(openclip_prefix, convert_openclip(openclip_model.state_dict(), sd2_layout=family == "sd2")))
    return {k: v.detach().contiguous() for k, v in out.items()}


def _prefixed(prefix: str, sd: StateDict) -> StateDict:
    return {prefix + k: v for k, v in sd.items()}


class _KeyMover:
    """Moves subtrees of a source state dict to new names and checks at the end that every tensor was placed."""

    def __init__(self, what: str, sd: StateDict) -> None:
        self.what, self.sd = what, sd
        self.out: StateDict = {}
        self.unused = set(sd)

    def move(self, old: str, new: str, renames: tuple[tuple[str, str], ...] = ()) -> StateDict:
        """Keys under ``old.`` go to ``new.``, with the first matching child rename applied to the remainder.
        Returns what was moved (keys in the new layout)."""
        moved: StateDict = {}
        for key in [k for k in self.unused if k.startswith(old + ".")]:
            rest = key[len(old) + 1:]
            for src, dst in renames:
                if rest.startswith(src + "."):
                    rest = dst + rest[len(src):]
                    break
            moved[f"{new}.{rest}"] = self.sd[key]
            self.unused.discard(key)
        self.out.update(moved)
        return moved

    def result(self) -> StateDict:
        if self.unused:
            raise ValueError(f"{self.what} layout not understood: {len(self.unused)} tensors have no LDM name, "
                             f"e.g. {sorted(self.unused)[:5]}")
        return self.out


# -- UNet ------------------------------------------------------------------------------------------------------------

def convert_unet(sd: StateDict, config: dict) -> StateDict:
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError(f"per-block layers_per_block {layers!r} has no LDM layout")
    m = _KeyMover("UNet", sd)
    for old, new in (("time_embedding.linear_1", "time_embed.0"), ("time_embedding.linear_2", "time_embed.2"),
                     ("conv_in", "input_blocks.0.0"), ("conv_norm_out", "out.0"), ("conv_out", "out.2"),
                     ("add_embedding.linear_1", "label_emb.0.0"), ("add_embedding.linear_2", "label_emb.0.2"),
                     ("class_embedding.linear_1", "label_emb.0.0"), ("class_embedding.linear_2", "label_emb.0.2")):
        m.move(old, new)

    # Each down block is ``layers`` LDM input blocks plus one for its downsampler; input_blocks.0 is conv_in.
    for i in range(len(config["down_block_types"])):
        for j in range(layers):
            n = (layers + 1) * i + j + 1
            m.move(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{n}.0", _UNET_RESNET)
            m.move(f"down_blocks.{i}.attentions.{j}", f"input_blocks.{n}.1")
        m.move(f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{(layers + 1) * (i + 1)}.0.op")

    mid_has_attention = any(k.startswith("mid_block.attentions.") for k in sd)
    for k in range(2):
        m.move(f"mid_block.resnets.{k}", f"middle_block.{2 * k if mid_has_attention else k}", _UNET_RESNET)
    m.move("mid_block.attentions.0", "middle_block.1")

    # Each up block is ``layers + 1`` LDM output blocks; its upsampler sits in the last one, after the attention.
    for i in range(len(config["up_block_types"])):
        has_attention = any(k.startswith(f"up_blocks.{i}.attentions.") for k in sd)
        for j in range(layers + 1):
            n = (layers + 1) * i + j
            m.move(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{n}.0", _UNET_RESNET)
            m.move(f"up_blocks.{i}.attentions.{j}", f"output_blocks.{n}.1")
        last = (layers + 1) * i + layers
        m.move(f"up_blocks.{i}.upsamplers.0", f"output_blocks.{last}.{2 if has_attention else 1}")
    return m.result()


# -- VAE -------------------------------------------------------------------------------------------------------------

def convert_vae(sd: StateDict, num_blocks: int) -> StateDict:
    m = _KeyMover("VAE", sd)
    for part in ("encoder", "decoder"):
        for old, new in (("conv_in", "conv_in"), ("conv_out", "conv_out"), ("conv_norm_out", "norm_out"),
                         ("mid_block.resnets.0", "mid.block_1"), ("mid_block.resnets.1", "mid.block_2")):
            m.move(f"{part}.{old}", f"{part}.{new}")
        attention = m.move(f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", _VAE_ATTENTION)
        # LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers.
        m.out.update({k: v.reshape(*v.shape, 1, 1) for k, v in attention.items() if v.ndim == 2})
    for name in ("quant_conv", "post_quant_conv"):
        m.move(name, name)
    for i in range(num_blocks):
        m.move(f"encoder.down_blocks.{i}.resnets", f"encoder.down.{i}.block")
        m.move(f"encoder.down_blocks.{i}.downsamplers.0", f"encoder.down.{i}.downsample")
        ldm_i = num_blocks - 1 - i  # LDM numbers decoder blocks from the lowest resolution up
        m.move(f"decoder.up_blocks.{i}.resnets", f"decoder.up.{ldm_i}.block")
        m.move(f"decoder.up_blocks.{i}.upsamplers.0", f"decoder.up.{ldm_i}.upsample")
    return {k.replace(".conv_shortcut.", ".nin_shortcut."): v for k, v in m.result().items()}


# -- text encoders ---------------------------------------------------------------------------------------------------

def _clip_body(sd: StateDict) -> StateDict:
    """HF CLIP keys without the ``text_model.`` wrapper (transformers >= 5.6 flattened ``CLIPTextModel``)."""
    return {k.removeprefix("text_model."): v for k, v in sd.items() if k != "text_projection.weight"}


def convert_openclip(sd: StateDict, sd2_layout: bool = False) -> StateDict:
    """HF ``CLIPTextModel(WithProjection)`` -> OpenCLIP text tower keys."""
    m = _KeyMover("OpenCLIP text encoder", _clip_body(sd))
    for old, new in (("embeddings.token_embedding", "token_embedding"), ("final_layer_norm", "ln_final")):
        m.move(old, new)
    m.out["positional_embedding"] = m.sd["embeddings.position_embedding.weight"]
    m.unused.discard("embeddings.position_embedding.weight")
    embedding = m.out["token_embedding.weight"]
    # OpenCLIP applies ``x @ text_projection``; HF stores the nn.Linear weight, i.e. the transpose. diffusers' SD2
    # encoder has no projection; SD2 files still carry one (unused when loading), so write the identity there.
    if "text_projection.weight" in sd:
        m.out["text_projection"] = sd["text_projection.weight"].T.contiguous()
    elif sd2_layout:
        m.out["text_projection"] = torch.eye(embedding.shape[1], dtype=embedding.dtype)

    depth = 1 + max(int(k.split(".")[2]) for k in m.sd if k.startswith("encoder.layers."))
    if sd2_layout and depth >= SD2_OPENCLIP_DEPTH:
        raise ValueError(f"an SD2 text encoder with {depth} layers cannot be stored: diffusers drops OpenCLIP block "
                         f"{SD2_OPENCLIP_DEPTH - 1} when loading SD2 files (SD2 reads the penultimate of 24 layers)")
    for i in range(depth):
        old, new = f"encoder.layers.{i}", f"transformer.resblocks.{i}"
        for kind in ("weight", "bias"):
            q, k, v = (f"{old}.self_attn.{p}_proj.{kind}" for p in "qkv")
            m.out[f"{new}.attn.in_proj_{kind}"] = torch.cat([m.sd[q], m.sd[k], m.sd[v]], dim=0)
            m.unused -= {q, k, v}
        m.move(old, new, _OPENCLIP_LAYER)
    if sd2_layout and depth == SD2_OPENCLIP_DEPTH - 1:
        m.out.update(_identity_resblock(m.out, depth - 1, depth))
    return m.result()


def _identity_resblock(sd: StateDict, template: int, index: int) -> StateDict:
    """The unused last OpenCLIP block of SD2 files: zero weights (a residual no-op), unit layer-norm scales."""
    src, dst = f"transformer.resblocks.{template}.", f"transformer.resblocks.{index}."
    block: StateDict = {}
    for key, value in sd.items():
        if key.startswith(src):
            is_norm_scale = key.endswith(("ln_1.weight", "ln_2.weight"))
            block[dst + key[len(src):]] = torch.ones_like(value) if is_norm_scale else torch.zeros_like(value)
    return block
