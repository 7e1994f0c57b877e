"""Hub-ready folders: the tokenizer folder with its remote code (and, later, whole model folders)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .tokenization_midi import MidiTokenizer

PACKAGE_DIR = Path(__file__).resolve().parent
# The files a Hub folder needs so that AutoTokenizer loads it with trust_remote_code=True where
# hf_midi is not installed: the tokenizer imports only the codec, relatively.
TOKENIZER_CODE = ("codec.py", "tokenization_midi.py")
TOKENIZER_AUTO_MAP = {"AutoTokenizer": ["tokenization_midi.MidiTokenizer", None]}


def add_tokenizer_code(folder: str | os.PathLike) -> None:
    """Copy the tokenizer's code into ``folder`` and point its ``auto_map`` at it."""
    folder = Path(folder)
    for name in TOKENIZER_CODE:
        shutil.copyfile(PACKAGE_DIR / name, folder / name)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["auto_map"] = TOKENIZER_AUTO_MAP
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_tokenizer_folder(
    out: str | os.PathLike, tokenizer: MidiTokenizer | None = None
) -> Path:
    """Write a Hub-ready tokenizer folder (``save_pretrained`` + code + ``auto_map``) atomically."""
    out = Path(out)
    tokenizer = tokenizer or MidiTokenizer()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer.save_pretrained(tmp)
        add_tokenizer_code(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


__all__ = ["TOKENIZER_CODE", "add_tokenizer_code", "write_tokenizer_folder"]

if __name__ == "__main__":  # python -m hf_midi.hub [OUT]: regenerate the top-level tokenizer/ folder
    import sys

    print(write_tokenizer_folder(sys.argv[1] if len(sys.argv) > 1 else "tokenizer"))
