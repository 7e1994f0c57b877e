"""The models a run trains and writes: a preset's transformers config and weights (``build_model``), a
trained model to start from (``start_from``), the generation config shipped beside a model
(``generation_config``) and the export of a run's model folder (``export``)."""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

from ..remote_code.codec import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, never_generated
from ..remote_code.defaults import GENERATION_DEFAULTS, generation_config_for
from ..utils import fsync_files
from .args import ConfigError, ModelArguments, RunArguments, load_config, model_arguments


def model_config(m: ModelArguments):
    """The transformers config of ``m``, special ids set, vocabulary padded to ``m.vocab_multiple``."""
    vocab = math.ceil(VOCAB_SIZE / m.vocab_multiple) * m.vocab_multiple
    special = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    if m.architecture == "musicrnn":
        from ..remote_code.configuration_musicrnn import MusicRNNConfig

        return MusicRNNConfig(
            vocab_size=vocab, embedding_size=m.embedding_size or m.hidden_size, hidden_size=m.hidden_size,
            num_layers=m.num_layers, dropout=m.dropout, initializer_range=m.initializer_range, **special,
        )
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab, n_positions=m.context_length, n_embd=m.hidden_size, n_layer=m.num_layers,
        n_head=m.num_heads, n_inner=m.intermediate_size, resid_pdrop=m.dropout, embd_pdrop=m.dropout,
        attn_pdrop=m.dropout, initializer_range=m.initializer_range, use_cache=True,
        tie_word_embeddings=True, **special,
    )


def build_model(preset_or_dict: str | dict | ModelArguments = "tiny"):
    """A randomly initialised model of a preset ("tiny", "small-stream", "gpu-base", "lstm", a YAML path), a
    config dict (whole, or just its ``model`` section) or ``ModelArguments``. Seed torch first for
    reproducible weights."""
    if isinstance(preset_or_dict, ModelArguments):
        m = preset_or_dict
    elif isinstance(preset_or_dict, dict) and "model" not in preset_or_dict:
        m = model_arguments(preset_or_dict)
    else:
        m = load_config(preset_or_dict, check_paths=False).model
    config = model_config(m)
    if m.architecture == "musicrnn":
        from ..remote_code.modeling_musicrnn import MusicRNNForCausalLM

        return MusicRNNForCausalLM(config)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config, attn_implementation=m.attn_implementation)


def generation_config(model_config, max_new_tokens: int | None = None):
    """The generation config shipped beside a trained model: generation's defaults
    (``GENERATION_DEFAULTS``, their one home), ids the model must never emit (padding rows of the
    embedding, <pad>, <bos>) suppressed. ``max_new_tokens`` overrides the default cap."""
    defaults = GENERATION_DEFAULTS if max_new_tokens is None else replace(GENERATION_DEFAULTS,
                                                                          max_new_tokens=max_new_tokens)
    return generation_config_for(model_config.vocab_size, BOS_ID, EOS_ID, PAD_ID,
                                 never_generated(model_config.vocab_size), defaults)


def start_from(args: RunArguments, accelerator):
    """``--init_from``: the trained model and its tokenizer (checked against the codec's vocabulary)."""
    from ..loading import load_model

    model, tokenizer = load_model(args.init_from)
    accelerator.print(f"init_from {args.init_from}: starting from its weights and tokenizer "
                      f"({sum(p.numel() for p in model.parameters()):,} parameters); the config's model section "
                      "is ignored")
    n_positions = getattr(model.config, "n_positions", None)
    if n_positions is not None and args.block_size > n_positions:
        raise ConfigError(f"block_size: {args.block_size} is longer than {args.init_from}'s context ({n_positions})")
    if getattr(tokenizer, "sustain", args.sustain) != args.sustain:
        accelerator.print(f"init_from: the model's tokenizer uses sustain={tokenizer.sustain!r}; that mode is kept")
    return model, tokenizer


def export(accelerator, model, tokenizer, out: Path, keep_generation_config: bool = False,
           adapter_base: str | None = None) -> None:
    """``save_pretrained`` of model + generation config + Hub-ready tokenizer into ``out``: written in a
    hidden folder, fsynced, then each file renamed in, config.json last (a folder with a config is whole;
    file by file, not a folder swap, because OUT also holds the run's checkpoints and logs). A LoRA
    run (``adapter_base`` set) writes only the adapter (``adapter_config.json`` last) and the tokenizer."""
    from ..hub import add_tokenizer_code

    if adapter_base is None:
        state_dict = accelerator.get_state_dict(model)  # gathers FSDP shards; a collective on every rank
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    tmp = out / ".tmp-export"
    shutil.rmtree(tmp, ignore_errors=True)
    if adapter_base is not None:
        unwrapped.peft_config["default"].base_model_name_or_path = adapter_base
        unwrapped.save_pretrained(tmp, safe_serialization=True)  # the adapter's weights only
        (tmp / "README.md").unlink(missing_ok=True)  # peft's empty card template
        last = "adapter_config.json"
    else:
        # torch.compile's wrapper names every key "_orig_mod.<key>"; the saved model must not know it ran compiled.
        state_dict = {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}
        if not keep_generation_config:
            unwrapped.generation_config = generation_config(unwrapped.config)
        unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        last = "config.json"
    tokenizer.save_pretrained(tmp)
    add_tokenizer_code(tmp)
    fsync_files(tmp)
    names = sorted(p.name for p in tmp.iterdir())
    for name in [n for n in names if n != last] + [last]:
        (tmp / name).chmod(0o644)  # some writers make 0600 files; a model folder is for everyone to read
        os.replace(tmp / name, out / name)
    tmp.rmdir()


__all__ = ["build_model", "export", "generation_config", "model_config", "start_from"]
