"""Live previews during sampling, by A1111's ``show_progress_type``: Approx cheap (default), Approx NN, TAESD, Full.

- **Approx cheap**: a linear map from the latent channels to RGB (plus a bias), at latent resolution, scaled up to the
  image size. For the standard SD1/SD2 and SDXL VAEs the published 4x3 factors are used; for any other VAE (e.g. the
  default model's f=4 VAE) the map is fitted by least squares from a few encode/decode round trips of coloured
  pictures, once per VAE when the model loads (``prepare``), and kept with that VAE. Costs microseconds per preview.
- **TAESD**: diffusers' ``AutoencoderTiny`` from a diffusers folder in ``models/VAE-approx`` (``taesd`` for SD1/SD2,
  ``taesdxl`` for SDXL, or any folder whose latent channels and scale factor match the model). Pickled ``.pth``
  files are never loaded. Without a matching folder the cheap map is used and the job's ``textinfo`` says so.
- **Approx NN**: A1111's own small network is a pickled file this product does not load; the neural approximation
  here is TAESD when its weights are installed, else the cheap map.
- **Full**: a real VAE decode.

TAESD and Full decodes run on one background thread, never on the sampling thread: a new frame replaces a frame that
has not started decoding yet, so a busy decoder drops frames instead of slowing the job.
"""
from __future__ import annotations

import json
import logging
import threading
import weakref
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

log = logging.getLogger(__name__)

METHODS = ("Full", "Approx NN", "Approx cheap", "TAESD")

# Published latent -> RGB factors of the standard VAEs (rows: latent channels; columns: R, G, B; output in [-1, 1]),
# applied to the UNet-space (scaled) latents.
_KNOWN_FACTORS: dict[str, tuple[list[list[float]], float]] = {
    # family: (factors, the VAE scaling factor they belong to)
    "sd1": ([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]],
            0.18215),
    "sdxl": ([[0.3920, 0.4054, 0.4549], [-0.2634, -0.0196, 0.0653], [0.0568, 0.1687, -0.0755],
              [-0.3112, -0.2359, -0.2076]], 0.13025),
}
_KNOWN_FACTORS["sd2"] = _KNOWN_FACTORS["sd1"]
_KNOWN_FACTORS["sdxl-refiner"] = _KNOWN_FACTORS["sdxl"]
_TAESD_NAMES = {"sd1": ("taesd",), "sd2": ("taesd",), "sdxl": ("taesdxl",), "sdxl-refiner": ("taesdxl",)}


class LinearMap:
    """``rgb = latents · weight + bias`` per latent pixel; ``weight`` is [C, 3], ``bias`` [3], output in [-1, 1]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, source: str) -> None:
        self.weight, self.bias, self.source = weight.float(), bias.float(), source

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("bchw,cr->brhw", latents.float().cpu(), self.weight)
        return rgb + self.bias.view(1, 3, 1, 1)


_maps: "weakref.WeakKeyDictionary[torch.nn.Module, LinearMap]" = weakref.WeakKeyDictionary()
_maps_lock = threading.Lock()


def _latent_channels(model: Any) -> int:
    return int(model.vae.config.latent_channels)


def _is_standard_vae(model: Any) -> bool:
    known = _KNOWN_FACTORS.get(model.family)
    return (known is not None and model.vae_scale_factor == 8 and _latent_channels(model) == 4
            and abs(float(model.vae.config.scaling_factor) - known[1]) < 1e-6)


def linear_map(model: Any) -> LinearMap:
    """The cheap latent -> RGB map of the model's VAE in use: known factors, else fitted (once per VAE; a caller
    that arrives while the fit runs waits for it)."""
    vae = model.vae
    found = _maps.get(vae)
    if found is not None:
        return found
    with _maps_lock:
        found = _maps.get(vae)
        if found is None:
            if _is_standard_vae(model):
                found = LinearMap(torch.tensor(_KNOWN_FACTORS[model.family][0]), torch.zeros(3), "known factors")
            else:
                found = fit_linear_map(model)
            _maps[vae] = found
    return found


def prepare(model: Any) -> None:
    """Called when a model (or another VAE) is loaded: fit its cheap preview map on a background thread, so it is
    ready before the first preview without adding to the load time."""
    def fit() -> None:
        try:
            linear_map(model)
        except Exception:  # a preview must never stop a model from loading
            log.exception("could not prepare the live-preview map for %s", model.sd_checkpoint_info.title)

    if model.vae is not None and model.vae not in _maps:
        threading.Thread(target=fit, name="live-preview-fit", daemon=True).start()


def _fit_pictures(f: int, n: int = 32, size_latent: int = 8) -> torch.Tensor:
    """Pictures in [-1, 1] with flat coloured areas (objects on backgrounds, gradients) that span the colour cube."""
    g = torch.Generator().manual_seed(0)
    side = size_latent * f
    pics = torch.empty(n, 3, side, side)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    for i in range(n):
        background = torch.rand(3, 1, 1, generator=g) * 2 - 1
        pic = background.expand(3, side, side).clone()
        for _ in range(3):
            colour = torch.rand(3, 1, 1, generator=g) * 2 - 1
            cx, cy, r = (torch.rand(3, generator=g) * torch.tensor([1.2, 1.2, 0.4]) + torch.tensor([-0.6, -0.6, 0.2]))
            inside = ((xx - cx) ** 2 + (yy - cy) ** 2) < r ** 2
            pic = torch.where(inside, colour, pic)
        if i % 3 == 2:  # a smooth ramp as well, so intermediate colours are covered
            pic = (pic + torch.stack([xx, yy, -xx]) * 0.5).clamp(-1, 1)
        pics[i] = pic
    return pics


@torch.inference_mode()
def fit_linear_map(model: Any) -> LinearMap:
    """Least-squares fit of ``[latent, 1] -> decoded colour`` (averaged over each latent pixel's f x f patch)."""
    vae, f = model.vae, model.vae_scale_factor
    param = next(vae.parameters())
    pics = _fit_pictures(f).to(param.device, param.dtype)
    scale = float(vae.config.scaling_factor)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    latents = vae.encode(pics).latent_dist.mode()
    decoded = vae.decode(latents).sample.float().clamp(-1, 1)
    scaled = ((latents - shift) * scale).float()
    target = torch.nn.functional.avg_pool2d(decoded, f)                 # [N, 3, h, w]
    c = scaled.shape[1]
    x = scaled.permute(0, 2, 3, 1).reshape(-1, c).cpu()
    a = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)
    y = target.permute(0, 2, 3, 1).reshape(-1, 3).cpu()
    solution = torch.linalg.lstsq(a, y).solution                           # [C + 1, 3]
    return LinearMap(solution[:c], solution[c], "fitted")


def to_image(rgb: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """[1, 3, h, w] in [-1, 1] -> PIL image of ``size`` (width, height)."""
    arr = ((rgb[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(arr)
    return image if image.size == size else image.resize(size, Image.Resampling.BILINEAR)


# -- TAESD ------------------------------------------------------------------------------------------------------------
_taesd_cache: dict[tuple[str, float], torch.nn.Module] = {}


def _taesd_scale_factor(config: dict[str, Any]) -> int:
    blocks = config.get("decoder_block_out_channels") or (64, 64, 64, 64)
    return int(config.get("upsampling_scaling_factor", 2)) ** (len(blocks) - 1)


def find_taesd(model: Any, approx_dir: Path) -> Path | None:
    """The diffusers ``AutoencoderTiny`` folder in ``approx_dir`` for this model, None when there is none."""
    if not approx_dir.is_dir():
        return None
    folders = sorted(d for d in approx_dir.iterdir() if (d / "config.json").is_file())
    preferred = _TAESD_NAMES.get(model.family, ())
    folders.sort(key=lambda d: (d.name not in preferred, d.name))
    for folder in folders:
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (config.get("_class_name") == "AutoencoderTiny"
                and int(config.get("latent_channels", 4)) == _latent_channels(model)
                and _taesd_scale_factor(config) == model.vae_scale_factor):
            return folder
    return None


def load_taesd(folder: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from diffusers import AutoencoderTiny

    key = (str(folder), max(p.stat().st_mtime for p in folder.iterdir()))
    if key not in _taesd_cache:
        _taesd_cache.clear()
        tiny = AutoencoderTiny.from_pretrained(folder, use_safetensors=True, local_files_only=True)
        _taesd_cache[key] = tiny.eval().requires_grad_(False)
    return _taesd_cache[key].to(device, dtype)


# -- the decoder thread -----------------------------------------------------------------------------------------------
class _BackgroundDecoder:
    """One thread that makes preview images; the newest request replaces one not yet started (dropped frame)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: tuple[Callable[[], Image.Image], Any, int] | None = None
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def submit(self, make: Callable[[], Image.Image], state: Any, step: int) -> None:
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = (make, state, step)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="live-preview", daemon=True)
                self._thread.start()
            self._cond.notify()

    def discard(self, state: Any) -> None:
        """Forget a frame of ``state`` not yet started (its job moved on)."""
        with self._cond:
            if self._pending is not None and self._pending[1] is state:
                self._pending = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None:
                    self._cond.wait()
                make, state, step = self._pending
                self._pending = None
            try:
                with torch.inference_mode():
                    image = make()
                state.set_current_image(image, step=step)
            except Exception:
                log.exception("live preview failed")


_decoder = _BackgroundDecoder()


# -- per job ----------------------------------------------------------------------------------------------------------
class Previewer:
    """Live previews for one sampling run: ``step(i, latents)`` after each step; honours the live-preview options."""

    def __init__(self, model: Any, opts: Any, state: Any, size: tuple[int, int], approx_dir: Path | None) -> None:
        self.model, self.state, self.size = model, state, size
        self.every = opts.show_progress_every_n_steps if opts.live_previews_enable else -1
        self.method = getattr(opts, "show_progress_type", "Approx cheap")
        self._taesd: Path | None = None
        if self.every > 0 and self.method in ("TAESD", "Approx NN"):
            self._taesd = find_taesd(model, approx_dir) if approx_dir is not None else None
            if self._taesd is None:
                note = (f"no TAESD weights for this model in {approx_dir}" if self.method == "TAESD"
                        else "Approx NN uses TAESD weights, none installed")
                state.textinfo = f"Live preview: {note}; showing Approx cheap"

    def wants(self, step: int, total: int) -> bool:
        return self.every > 0 and (step + 1) % self.every == 0 and step + 1 < total

    def step(self, step: int, total: int, latents: torch.Tensor) -> None:
        if not self.wants(step, total):
            return
        lat = latents[:1].detach()
        if self.method == "Full":
            _decoder.submit(lambda lat=lat.clone(): self._full(lat), self.state, step + 1)
        elif self._taesd is not None:
            _decoder.submit(lambda lat=lat.clone(): self._tiny(lat), self.state, step + 1)
        else:
            self.state.set_current_image(to_image(linear_map(self.model)(lat), self.size), step=step + 1)

    def finish(self) -> None:
        _decoder.discard(self.state)

    def _full(self, lat: torch.Tensor) -> Image.Image:
        vae = self.model.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        x = vae.decode(lat.to(vae.dtype) / vae.config.scaling_factor + shift).sample
        return to_image(x, self.size)

    def _tiny(self, lat: torch.Tensor) -> Image.Image:
        tiny = load_taesd(self._taesd, lat.device, torch.float32)
        x = tiny.decode(lat.float() / tiny.config.scaling_factor).sample
        return to_image(x, self.size)
