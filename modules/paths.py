"""Where things live on disk. Everything is relative to one data dir (``--data-dir``), the repo root by default."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    ckpt_dir: Path
    vae_dir: Path
    lora_dir: Path
    embeddings_dir: Path
    extensions_dir: Path
    outputs_dir: Path
    allowed_output_dirs: tuple[Path, ...] = ()
    """Folders outside the data dir that outputs and logs may be written to (``--allowed-output-dirs``)."""

    @classmethod
    def from_args(cls, data_dir: str | Path | None = None, ckpt_dir: str | Path | None = None,
                  vae_dir: str | Path | None = None, lora_dir: str | Path | None = None,
                  embeddings_dir: str | Path | None = None, allowed_output_dirs: str | None = None) -> "Paths":
        root = Path(data_dir).resolve() if data_dir else REPO_ROOT
        models = root / "models"
        return cls(
            data_dir=root,
            ckpt_dir=Path(ckpt_dir).resolve() if ckpt_dir else models / "Stable-diffusion",
            vae_dir=Path(vae_dir).resolve() if vae_dir else models / "VAE",
            lora_dir=Path(lora_dir).resolve() if lora_dir else models / "Lora",
            embeddings_dir=Path(embeddings_dir).resolve() if embeddings_dir else models / "embeddings",
            extensions_dir=root / "extensions",
            outputs_dir=root / "outputs",
            allowed_output_dirs=tuple(Path(d.strip()).resolve() for d in (allowed_output_dirs or "").split(",")
                                      if d.strip()),
        )

    def confine(self, directory: str | Path, name: str) -> Path:
        """Where output folder ``directory`` (relative to the data dir) really is; ``ValueError`` naming ``name`` when
        that is outside the data dir and ``--allowed-output-dirs``."""
        return confine(directory, self.data_dir, self.allowed_output_dirs, name)

    @property
    def config_file(self) -> Path:
        return self.data_dir / "config.json"

    @property
    def cache_file(self) -> Path:
        """Hash cache (A1111 keeps the same in cache.json)."""
        return self.data_dir / "cache.json"

    @property
    def configs_dir(self) -> Path:
        """Extra architecture config folders (diffusers config-only dirs) a checkpoint can name in its metadata."""
        return self.data_dir / "configs"

    @property
    def vae_approx_dir(self) -> Path:
        """Live-preview approximations (TAESD as diffusers ``AutoencoderTiny`` folders), as A1111's VAE-approx."""
        return self.data_dir / "models" / "VAE-approx"

    @property
    def history_db(self) -> Path:
        return self.data_dir / "history.sqlite3"

    def ensure(self) -> None:
        for d in (self.ckpt_dir, self.vae_dir, self.lora_dir, self.embeddings_dir, self.outputs_dir):
            d.mkdir(parents=True, exist_ok=True)


def confine(directory: str | Path, data_dir: str | Path, allowed: Sequence[Path] = (), name: str = "directory") -> Path:
    """``directory`` (relative to ``data_dir``) resolved, symbolic links followed, when it lies inside ``data_dir`` or
    one of ``allowed``; else ``ValueError`` naming ``name``. Outputs and logs are written only through this, so neither
    a setting, a request nor a link inside the outputs can make the server write elsewhere."""
    root = Path(data_dir).resolve()
    path = (root / directory).resolve()  # an absolute ``directory`` replaces the root
    if any(path.is_relative_to(r) for r in (root, *(Path(a).resolve() for a in allowed))):
        return path
    raise ValueError(f"{name}: {str(directory)!r} is outside the data folder {str(root)!r}; start the server with "
                     "--allowed-output-dirs naming it to allow it")
