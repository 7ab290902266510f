"""Build CLIP tokenizer files (vocab.json, merges.txt, configs) from the BPE vocabulary that open-clip-torch ships.

The result is committed under ``modules/configs/*/tokenizer*``; this module rebuilds and checks it. open-clip-torch
must be installed with ``--no-deps`` (its dependency torchvision would replace the CPU torch); it is never imported,
only its data file is read.

    python -m modules.clip_tokenizer_files          # rebuild every shipped tokenizer folder
"""
from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
N_MERGES = 49152 - 256 - 2  # 48,894 merges, as OpenAI's tokenizer uses


def find_bpe_file() -> Path:
    for package in ("open_clip", "clip"):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / BPE_FILE
            if path.exists():
                return path
    raise FileNotFoundError(f"{BPE_FILE} not found: pip install --no-deps open-clip-torch")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def build_vocab_and_merges(bpe_path: Path) -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1:N_MERGES + 1]
    base = list(bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base] + ["".join(m.split(" ")) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == 49408, len(vocab)
    return vocab, merges


def tokenizer_config(pad_token: str) -> dict:
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
        "do_lower_case": True,
    }


def write_tokenizer(out_dir: Path, pad_token: str = "<|endoftext|>", bpe_path: Path | None = None) -> None:
    vocab, merges = build_vocab_and_merges(bpe_path or find_bpe_file())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(pad_token), indent=2), encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad_token}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")


def main() -> None:
    from modules.paths import CONFIGS_DIR

    # OpenAI CLIP pads with <|endoftext|>; OpenCLIP (SD2, SDXL's second encoder) pads with "!" (id 0).
    for tok_dir in sorted(CONFIGS_DIR.glob("*/tokenizer*")):
        pad = json.loads((tok_dir / "tokenizer_config.json").read_text())["pad_token"] if (tok_dir / "tokenizer_config.json").exists() else "<|endoftext|>"
        write_tokenizer(tok_dir, pad_token=pad)
        print("wrote", tok_dir)


if __name__ == "__main__":
    main()
