"""Hub-ready folders: the tokenizer folder, whole model folders with their remote code, and push.

A model folder exported here loads from the Hub the way users expect::

    tok = AutoTokenizer.from_pretrained("user/name", trust_remote_code=True)   # our tokenizer code
    model = AutoModelForCausalLM.from_pretrained("user/name")                # plain GPT-2: no code
    pipe = pipeline("midi-generation", model="user/name", trust_remote_code=True)

The code that travels is found by following the relative imports of the entry files, so the Hub
folder holds exactly what the tokenizer, the pipeline and (for the LSTM) the model need.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from pathlib import Path

from .tokenization_midi import MidiTokenizer
from .utils import atomic_folder

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
    with atomic_folder(out) as tmp:
        tokenizer.save_pretrained(tmp)
        add_tokenizer_code(tmp)
    return out



class HubError(ValueError):
    """A folder that cannot be exported or pushed: the message names the file or the problem."""


PIPELINE_TASK = "midi-generation"
PIPELINE_FILE = "pipeline_midi_generation.py"
PIPELINE_CLASS = "MidiGenerationPipeline"
LSTM_FILE = "modeling_musicrnn.py"
_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import", re.MULTILINE)
# Files a trained folder may hold besides the weights; anything else (checkpoints, logs) stays behind.
_MODEL_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "vocab.json",
                "special_tokens_map.json")


def code_closure(*entries: str) -> list[str]:
    """The package files that ``entries`` need, following ``from .x import`` recursively."""
    seen: list[str] = []
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = PACKAGE_DIR / name
        if not path.is_file():
            raise HubError(f"{path}: remote-code file is missing from the package")
        seen.append(name)
        todo += [f"{m}.py" for m in _RELATIVE_IMPORT.findall(path.read_text(encoding="utf-8"))]
    return sorted(seen)


def _weight_files(model_dir: Path) -> list[Path]:
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [index, *(model_dir / s for s in shards)]
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")):
        raise HubError(f"{model_dir}: only safetensors weights are exported (found pickle-based weights)")
    raise HubError(f"{model_dir}: no model.safetensors (or sharded index) to export")


def export_model_folder(
    model_dir: str | os.PathLike, out: str | os.PathLike, card: str | os.PathLike | None = None
) -> Path:
    """Assemble a Hub-ready model folder from a trained folder (written atomically).

    Copies the weights, config, generation config and tokenizer; adds the tokenizer's code and
    ``auto_map``, the pipeline's code and a ``custom_pipelines`` entry, the LSTM's modeling code
    when the model is a MusicRNN, and ``card`` as ``README.md``.
    """
    model_dir, out = Path(model_dir), Path(out)
    if not model_dir.is_dir():
        raise HubError(f"{model_dir}: no such model folder")
    for required in ("config.json", "generation_config.json", "tokenizer_config.json"):
        if not (model_dir / required).is_file():
            raise HubError(f"{model_dir}: {required} is missing (not a complete hf-midi model folder)")
    if card is not None and not Path(card).is_file():
        raise HubError(f"{card}: model card not found")
    weights = _weight_files(model_dir)
    if out.resolve() == model_dir.resolve():
        raise HubError(f"{out}: the export folder must differ from the model folder")

    with atomic_folder(out) as tmp:
        for f in [*weights, *(model_dir / n for n in _MODEL_FILES if (model_dir / n).is_file())]:
            shutil.copyfile(f, tmp / f.name)
        add_tokenizer_code(tmp)
        config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        entries = [PIPELINE_FILE]
        if config.get("model_type") == "musicrnn":
            entries.append(LSTM_FILE)
            config["auto_map"] = {
                "AutoConfig": "modeling_musicrnn.MusicRNNConfig",
                "AutoModelForCausalLM": "modeling_musicrnn.MusicRNNForCausalLM",
            }
        for name in code_closure(*entries):
            shutil.copyfile(PACKAGE_DIR / name, tmp / name)
        # Only in exported folders: in-process, a config with custom_pipelines makes transformers
        # demand trust_remote_code even though hf_midi registered the task itself.
        config["custom_pipelines"] = {
            PIPELINE_TASK: {
                "impl": f"{Path(PIPELINE_FILE).stem}.{PIPELINE_CLASS}",
                "pt": ["AutoModelForCausalLM"],
                "tf": [],
                "type": "multimodal",
            }
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if card is not None:
            shutil.copyfile(card, tmp / "README.md")
    return out


def push_folder(
    folder: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = False,
    commit_message: str = "Upload hf-midi model",
) -> str:
    """Upload ``folder`` to the Hub repo ``repo_id`` (created if needed); returns the commit URL.

    The token comes from ``token``, else the usual places (``HF_TOKEN``, ``hf auth login``).
    """
    from huggingface_hub import HfApi, get_token

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise HubError(f"{folder}: not an exported model folder (no config.json); run `hf-midi export` first")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise HubError(f"repo id {repo_id!r} is not of the form 'user/name'")
    token = token or get_token()
    if not token:
        raise HubError(
            "no Hugging Face token: run `hf auth login`, set HF_TOKEN, or pass --token"
        )
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                             commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


def bundle_model(
    model_dir: str | os.PathLike, out: str | os.PathLike | None = None, context: int | None = None,
    dtype: str = "float32",
) -> Path:
    """Copy a trained GPT-2 folder into the package (``hf_midi/pretrained/default``), atomically.

    ``context`` cuts the position table to the first ``context`` rows (and ``n_positions`` with
    it): a model trained on shorter blocks than its table never learned the later rows, so
    generation must slide its window within the trained ones. ``dtype``: of the stored weights
    ("float32", or "bfloat16" for a model trained and returned in bf16: half the bytes, nothing
    lost); the package's loaders compute in float32 on a CPU either way.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in ("float32", "bfloat16"):
        raise HubError(f"dtype {dtype!r}: float32 or bfloat16")
    out = Path(out) if out is not None else PACKAGE_DIR / "pretrained" / "default"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if context is not None:
        if model.config.model_type != "gpt2":
            raise HubError(f"{model_dir}: context trimming is for GPT-2 models, not {model.config.model_type}")
        if not 0 < context <= model.config.n_positions:
            raise HubError(f"context must be in 1..{model.config.n_positions}, got {context}")
        wpe = model.transformer.wpe
        wpe.weight = torch.nn.Parameter(wpe.weight.data[:context].clone())
        wpe.num_embeddings = context
        model.config.n_positions = context
        tokenizer.model_max_length = context
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)  # in-package, AutoTokenizer finds MidiTokenizer by name: no code copy
    return out


def configure_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="a trained model folder (train.py's --output_dir)")
    p.add_argument("out", help="the Hub-ready folder to write")
    p.add_argument("--card", default=None, help="model card to ship as README.md (default: model_card.md if present)")
    p.add_argument("--merge", action="store_true",
                   help="model_dir is a LoRA adapter: fold it into its base and export a plain GPT-2 (no peft needed)")


def run_export(args: argparse.Namespace) -> int:
    import tempfile

    from .loading import is_adapter, merge_adapter

    card = args.card
    if card is None and Path("model_card.md").is_file():
        card = "model_card.md"
    if is_adapter(args.model_dir) and not args.merge:
        raise HubError(f"{args.model_dir}: a LoRA adapter; pass --merge to export it folded into its base model")
    if args.merge:
        if not is_adapter(args.model_dir):
            raise HubError(f"--merge: {args.model_dir} is not a LoRA adapter folder (no adapter_config.json)")
        parent = Path(args.out).resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".hf-midi-merge-", dir=parent) as tmp:
            merged = merge_adapter(args.model_dir, Path(tmp) / "merged")
            out = export_model_folder(merged, args.out, card)
    else:
        out = export_model_folder(args.model_dir, args.out, card)
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0


def configure_push(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="a folder written by `hf-midi export`")
    p.add_argument("repo_id", help="user/name on the Hugging Face Hub")
    p.add_argument("--token", default=None, help="a Hub token (default: HF_TOKEN or the saved login)")
    p.add_argument("--private", action="store_true")


def run_push(args: argparse.Namespace) -> int:
    print(push_folder(args.folder, args.repo_id, token=args.token, private=args.private))
    return 0


__all__ = [
    "HubError", "TOKENIZER_CODE", "add_tokenizer_code", "bundle_model", "code_closure", "export_model_folder",
    "push_folder", "write_tokenizer_folder",
]

if __name__ == "__main__":  # python -m hf_midi.hub [OUT]: regenerate the top-level tokenizer/ folder
    import sys

    print(write_tokenizer_folder(sys.argv[1] if len(sys.argv) > 1 else "tokenizer"))
