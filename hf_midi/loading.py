"""Models by reference: the bundled ones by name, folders, Hub repo ids and LoRA adapters.

- ``bundled_models`` / ``resolve_model``: ``base`` and ``small`` ship in the package
  (``hf_midi/pretrained/``), ``default`` names the one that plays when none is named (``base``); any
  other reference is a folder or a Hub id.
- ``load_model(ref)``: the model and tokenizer behind a reference; an adapter folder
  (``adapter_config.json``) is loaded on top of its base model with peft (merged by default, so
  generation costs what the base costs). The vocabulary is checked against the codec first.
- ``load_pipeline(ref)``: ``pipeline("midi-generation")`` for a reference (the CLI's, the Space's and
  the benchmarks' loader).
- LoRA: ``add_lora`` wraps a GPT-2 so that only low-rank adapters of its attention and MLP matrices
  train; ``merge_adapter`` writes a plain merged GPT-2 that ``AutoModelForCausalLM`` loads without peft.

It sits above ``generation`` and ``pipeline_midi_generation`` and below training, evaluation, the Hub
export and the commands, which all load models through it.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from .remote_code.codec import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE
from .remote_code.errors import HfMidiError
from .remote_code.pipeline_midi_generation import weights_bar
from .utils import locate

ADAPTER_CONFIG = "adapter_config.json"
# LoRA's defaults, their one home (training's fields and hf-midi finetune read them from here). The targets
# are GPT-2's matrices: fused q/k/v, attention output and MLP output (both "c_proj"), MLP input.
DEFAULT_LORA_RANK = 16
DEFAULT_LORA_ALPHA = 32.0
DEFAULT_LORA_TARGETS = ("c_attn", "c_proj", "c_fc")


# The bundled models' folder, and the one that plays when none is named: ``base`` (GPT-2 8 x 512), the one
# listeners prefer and fast enough to play while it composes on one CPU thread (benchmarks/RESULTS.md, "A
# click gives music"); ``small`` (4 x 256) is the fast one.
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
DEFAULT_MODEL = "base"
DEFAULT_MODEL_DIR = PRETRAINED_DIR / DEFAULT_MODEL


def default_model_path() -> Path | None:
    """The default bundled model (``hf_midi/pretrained/base``), or None when not installed."""
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "config.json").is_file() else None


def bundled_critic_path() -> Path | None:
    """The bundled critic's folder (the default model's: ``critic.json`` + ``critic.safetensors`` beside its
    weights; ``small`` holds a copy), or None when not installed: what searches for a model with none of its own."""
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "critic.json").is_file() else None


class ModelLoadError(HfMidiError):
    """A model reference that cannot be used (missing, not a model folder, no tokenizer, foreign vocabulary,
    an adapter without its base); the message names the reference. Not a ``GenerationError``: nothing was
    generated, the model could not be had."""


def bundled_models() -> dict[str, Path]:
    """Models shipped in the package, by the name ``--model`` and ``load_pipeline`` accept: ``base`` (the
    default, GPT-2 8 x 512), ``small`` (4 x 256, several times faster on a CPU) and ``default`` (the
    default's other name)."""
    root = DEFAULT_MODEL_DIR.parent
    if not root.is_dir():
        return {}
    found = {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()}
    default = default_model_path()
    return found | ({"default": default} if default is not None and "default" not in found else {})


def resolve_model(model: str | Path | None) -> str | Path:
    """None -> the bundled default; a bundled model's name (when no such folder exists here) -> its
    folder; anything else unchanged (a folder or a Hub repo id)."""
    if model is None:
        path = default_model_path()
        if path is None:
            raise ModelLoadError(f"no default model is installed ({DEFAULT_MODEL_DIR} has no config.json); "
                                 "pass a model folder or Hub repo id (model=... / --model DIR_OR_REPO_ID)")
        return path
    bundled = bundled_models()
    if isinstance(model, str) and model in bundled and not Path(model).exists():
        return bundled[model]
    return model



def load_pipeline(model: str | Path | None = None, device=None, **kwargs):
    """``pipeline("midi-generation")`` for a model folder or Hub repo id (None: the bundled model).

    Checks a local folder first so a bad one gives a clear ``ModelLoadError``, and passes the
    class explicitly so an exported folder (with ``custom_pipelines`` in its config) runs this
    package's code instead of asking for ``trust_remote_code``.
    """
    from transformers import pipeline

    from .remote_code.pipeline_midi_generation import MidiGenerationPipeline

    model = resolve_model(model)
    check_model_folder(model)
    if is_adapter(model):  # a LoRA adapter: on its base, merged
        loaded, tokenizer = load_model(model)
        return pipeline("midi-generation", model=loaded, tokenizer=tokenizer, pipeline_class=MidiGenerationPipeline,
                        device=device, **kwargs)
    # (the task's model class loads a local folder without transformers' weights bar: weights_bar)
    return pipeline("midi-generation", model=str(model), pipeline_class=MidiGenerationPipeline, device=device,
                    **kwargs)


def check_model_folder(model: str | Path) -> None:
    """A local model folder must hold a config and a tokenizer (repo ids are checked on loading)."""
    path = Path(model)
    where = locate(model)
    if where == "missing":
        raise ModelLoadError(f"model {model}: no such folder")
    if where == "hub":
        return
    if not path.is_dir():
        raise ModelLoadError(f"model {model}: not a folder")
    if (path / "adapter_config.json").is_file():
        return  # a LoRA adapter folder: its base is checked when it is loaded (hf_midi.training.finetune)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model {model}: not a model folder (no config.json)")
    if not (path / "tokenizer_config.json").is_file():
        raise ModelLoadError(
            f"model {model}: no tokenizer (tokenizer_config.json); save one beside the model with "
            "MidiTokenizer().save_pretrained(folder)"
        )


def is_adapter(ref) -> bool:
    return Path(str(ref)).is_dir() and (Path(str(ref)) / ADAPTER_CONFIG).is_file()


def adapter_base(adapter: str | os.PathLike) -> str | Path:
    """The base model an adapter folder names, resolved: a folder that exists, a bundled model (also when
    the adapter was made on another machine, whose absolute path to the bundled folder differs), or a
    Hub id. ModelLoadError when it names a folder that is not there."""
    config = json.loads((Path(adapter) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"adapter {adapter}: {ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    bundled = bundled_models()
    where = locate(base)
    if base in bundled and where != "local":
        return bundled[base]
    path = Path(base)
    if where == "local":
        return path
    if path.parent.name == "pretrained" and path.name in bundled:  # made with another copy of hf_midi
        return bundled[path.name]
    if where == "missing":
        raise ModelLoadError(f"adapter {adapter}: its base model {base} is missing (no such folder); put it "
                            "back, or edit base_model_name_or_path in its adapter_config.json")
    return base  # a Hub repo id


def check_vocabulary(model, tokenizer, name) -> None:
    """The model must speak this package's event vocabulary: ModelLoadError naming ``name`` otherwise."""
    cfg = model.config
    problems = []
    if getattr(cfg, "vocab_size", 0) < VOCAB_SIZE:
        problems.append(f"{cfg.vocab_size} embedding rows for {VOCAB_SIZE} ids")
    for key, want in (("bos_token_id", BOS_ID), ("eos_token_id", EOS_ID), ("pad_token_id", PAD_ID)):
        got = getattr(cfg, key, None)
        if got is not None and got != want:
            problems.append(f"{key} {got} (the codec's is {want})")
    if tokenizer is None or not hasattr(tokenizer, "decode_midi"):
        problems.append("no MIDI tokenizer (tokenizer_config.json for MidiTokenizer) beside it")
    elif len(tokenizer) != VOCAB_SIZE:
        problems.append(f"a tokenizer of {len(tokenizer)} ids")
    if problems:
        raise ModelLoadError(f"model {name}: not this package's {VOCAB_SIZE}-event vocabulary: " + "; ".join(problems))


def load_model(ref=None, merge: bool = True, dtype=None):
    """``(model, tokenizer)`` for ``ref`` (None: the bundled default); see the module docstring.

    An adapter folder is loaded on its base with peft; ``merge`` folds it into the base's weights (a
    plain GPT-2 model), else the ``PeftModel`` is returned. Weights stored in bf16 come back in float32
    unless ``dtype`` says otherwise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = resolve_model(ref)
    path = Path(str(ref))
    adapter = is_adapter(path)
    if not adapter:
        check_model_folder(ref)
    base_ref = adapter_base(path) if adapter else ref
    try:
        with weights_bar(base_ref):
            model = AutoModelForCausalLM.from_pretrained(str(base_ref), dtype=dtype or torch.float32)
    except (OSError, ValueError) as e:
        what = f"adapter {ref}: its base model {base_ref}" if adapter else f"model {ref}"
        raise ModelLoadError(f"{what} cannot be loaded ({str(e).splitlines()[0][:300]})") from None
    tok_from = path if adapter and (path / "tokenizer_config.json").is_file() else base_ref
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tok_from))
    except (OSError, ValueError):
        tokenizer = None
    check_vocabulary(model, tokenizer, ref)
    if adapter:
        try:
            from peft import PeftModel
        except ImportError:
            raise ModelLoadError(f"adapter {ref}: loading a LoRA adapter needs peft (pip install peft)") from None
        model = PeftModel.from_pretrained(model, str(path))
        if merge:
            model = model.merge_and_unload()
            model.name_or_path = str(path)
    return model, tokenizer


# --------------------------------------------------------------------------- LoRA
def add_lora(model, rank: int = DEFAULT_LORA_RANK, alpha: float = DEFAULT_LORA_ALPHA, dropout: float = 0.0,
             targets=DEFAULT_LORA_TARGETS):
    """``model`` wrapped by peft: LoRA adapters of rank ``rank`` on the ``targets`` modules, everything
    else frozen. GPT-2 only (its Conv1D matrices store weights as fan-in x fan-out)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ModelLoadError("--lora needs peft (pip install peft, or hf-midi[train])") from None
    if model.config.model_type != "gpt2":
        raise ModelLoadError(f"--lora: LoRA is for GPT-2 models, not {model.config.model_type}")
    targets = [t.strip() for t in (targets.split(",") if isinstance(targets, str) else targets) if t.strip()]
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    unknown = [t for t in targets if t not in names]
    if unknown or not targets:
        raise ModelLoadError(f"--lora_targets: {unknown or targets} not among the model's modules "
                            f"(GPT-2: {', '.join(DEFAULT_LORA_TARGETS)})")
    if rank < 1 or alpha <= 0 or not 0 <= dropout < 1:
        raise ModelLoadError(f"LoRA rank {rank} / alpha {alpha} / dropout {dropout}: need rank >= 1, alpha > 0, "
                            "0 <= dropout < 1")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        fan_in_fan_out=True, task_type="CAUSAL_LM", bias="none")
    with warnings.catch_warnings():  # peft asks transformers a deprecated question (is_gradient_checkpointing)
        warnings.filterwarnings("ignore", category=FutureWarning)
        return get_peft_model(model, config)


def base_reference(init_from) -> str:
    """What an adapter records as its base: a bundled model's folder, a folder's absolute path, or a
    Hub id as given (``adapter_base`` maps a bundled folder back on another machine)."""
    ref = resolve_model(init_from)
    return str(Path(ref).resolve()) if Path(str(ref)).exists() else str(ref)


def merge_adapter(adapter: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A plain GPT-2 folder (weights with the adapter folded in, the base's generation config, the
    tokenizer) that ``AutoModelForCausalLM`` loads without peft."""
    from .utils import atomic_folder

    if not is_adapter(adapter):
        raise ModelLoadError(f"{adapter}: not a LoRA adapter folder (no {ADAPTER_CONFIG})")
    model, tokenizer = load_model(adapter, merge=True)
    base = adapter_base(adapter)
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if Path(str(base)).is_dir() and (Path(str(base)) / "generation_config.json").is_file():
            (tmp / "generation_config.json").write_bytes((Path(str(base)) / "generation_config.json").read_bytes())
    return Path(out)


__all__ = [
    "ADAPTER_CONFIG", "DEFAULT_LORA_ALPHA", "DEFAULT_LORA_RANK", "DEFAULT_LORA_TARGETS", "DEFAULT_MODEL",
    "DEFAULT_MODEL_DIR", "PRETRAINED_DIR", "ModelLoadError", "adapter_base", "add_lora", "base_reference",
    "bundled_models", "check_model_folder", "check_vocabulary", "default_model_path", "is_adapter", "load_model",
    "load_pipeline", "merge_adapter", "resolve_model",
]
