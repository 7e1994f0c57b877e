"""Generation's arguments: their defaults, their checks (before anything runs) and the errors that name
them. The other generation files import these; they import nothing of generation's."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

from .codec import (
    MAX_SECONDS,
    VOCAB_SIZE,
    MidiError,
    seconds_to_steps,
)
from .fast_generation import WEIGHT_FORMATS

# A token budget when only seconds are given: the densest 10 s of ASAP/POP909 hold ~130 events a
# second, so a model that stops advancing time cannot run forever.
MAX_TOKENS_PER_SECOND = 200
MAX_RETURN_SEQUENCES = 64
# The stuck-note guard's default (MaxNoteLengthLogitsProcessor) for a model that does not set its own
# (``max_note_seconds`` in its generation_config.json): None = off. Measured per model in
# benchmarks/RESULTS.md (expressive-piano model), with and without: the bundled base model sets 6.0.
DEFAULT_MAX_NOTE_SECONDS: float | None = None
# The longest silence (no key down, no onset) generation allows; real performances rarely pause longer
# (a fermata, between movements), and a model that falls silent for longer rarely comes back.
DEFAULT_MAX_SILENCE_SECONDS = 4.0
# The two rules of a piece composed to a length, defaults for a model whose generation_config.json does
# not set them (``sound_at_once``, ``allow_early_end``): the first note sounds at once (no TIME_SHIFT
# before the first NOTE_ON of a piece composed from scratch), and <eos> is not sampled before the asked
# seconds. Two thirds of GiantMIDI's recordings begin with silence and many end early: a model trained
# on them learns both (benchmarks/RESULTS.md, "A click gives music").
DEFAULT_SOUND_AT_ONCE = True
DEFAULT_ALLOW_EARLY_END = False
MUSIC_SETTINGS = ("max_note_seconds", "sound_at_once", "allow_early_end")  # ours, not generate()'s

Progress = Callable[[float, "float | None"], object]


class GenerationError(MidiError):
    """Bad generation input (arguments, prompt, model folder), raised before any generation starts."""


class ArgumentError(GenerationError):
    """One argument out of range: ``argument`` names it, ``problem`` says what is wrong, so that a
    front end can name it its own way (the CLI writes ``--max-new-tokens``)."""

    def __init__(self, argument: str, problem: str):
        super().__init__(f"{argument} {problem}")
        self.argument, self.problem = argument, problem


def check_length(seconds, max_new_tokens) -> None:
    """A piece needs a length: seconds of music or a number of tokens (or both)."""
    if seconds is None and max_new_tokens is None:
        raise GenerationError("give seconds or max_new_tokens (both are None)")


def model_note_limit(model) -> float | None:
    """The guard's default for ``model``: its generation config's ``max_note_seconds``, else
    ``DEFAULT_MAX_NOTE_SECONDS``."""
    value = getattr(getattr(model, "generation_config", None), "max_note_seconds", DEFAULT_MAX_NOTE_SECONDS)
    return None if value is None else float(value)


def model_setting(model, name: str, default):
    """One of the music settings (``MUSIC_SETTINGS``) from the model's generation config, else ``default``."""
    return getattr(getattr(model, "generation_config", None), name, default)


def context_length(model) -> int | None:
    """Positions the model can attend to (GPT-2's ``n_positions``); None when unlimited (an LSTM)."""
    cfg = model.config
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_generation_args(
    seconds=None, max_new_tokens=None, temperature=None, top_k=None, top_p=None,
    num_return_sequences=1, seed=None, prompt_seconds=None,
) -> dict:
    """Raise ``GenerationError`` naming the first argument out of range (None = not given).

    Returns the arguments as plain Python numbers (numpy scalars and whole floats such as a UI's
    ``40.0`` become ints where an int is meant)."""
    out = {}

    def number(name, value, ok, wanted):
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                or not ok(float(value)):
            raise ArgumentError(name, f"must be {wanted}, got {value!r}")
        out[name] = float(value)

    def integer(name, value, lo, hi):
        if value is None:
            return
        whole = isinstance(value, numbers.Integral) or (
            isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())
        if isinstance(value, bool) or not whole or not lo <= int(value) <= hi:
            raise ArgumentError(name, f"must be an integer in {lo}..{hi}, got {value!r}")
        out[name] = int(value)

    check_length(seconds, max_new_tokens)
    number("seconds", seconds, lambda v: 0 < v <= MAX_SECONDS, f"> 0 and at most {MAX_SECONDS:g}")
    if seconds is not None and seconds_to_steps(seconds) < 1:
        raise ArgumentError("seconds", f"must be at least 0.01 (one 10 ms step), got {seconds!r}")
    integer("max_new_tokens", max_new_tokens, 1, int(MAX_SECONDS * MAX_TOKENS_PER_SECOND))
    number("temperature", temperature, lambda v: 0 < v <= 100, "> 0 (and at most 100)")
    integer("top_k", top_k, 0, VOCAB_SIZE)  # 0 turns top-k off, as in transformers
    number("top_p", top_p, lambda v: 0 < v <= 1, "in (0, 1]")
    integer("num_return_sequences", num_return_sequences, 1, MAX_RETURN_SEQUENCES)
    integer("seed", seed, 0, 2**63 - 1)
    number("prompt_seconds", prompt_seconds, lambda v: 0 < v <= MAX_SECONDS, f"> 0 and at most {MAX_SECONDS:g}")
    return out


def check_fast_args(fast: bool = True, weights: str = "auto") -> None:
    """Raise ``GenerationError`` for a weight format that does not exist, or one that needs the fast
    loop while ``fast`` is off (float32 and auto are what ``generate()``'s own loop computes)."""
    if weights not in ("auto", *WEIGHT_FORMATS):
        raise GenerationError(f"weights must be auto, {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    if not fast and weights not in ("auto", "float32"):
        raise GenerationError(f"weights={weights!r} needs the fast path (fast=True)")


def check_draft(model, draft, window: int | None, rows: int = 1) -> None:
    """Raise ``GenerationError`` when ``draft`` cannot draft for ``model``: another vocabulary (its ids
    would mean other events), a context shorter than the ``window`` the target slides (it would fail
    mid-piece; a longer one is fine: the target's window is used), or several rows (transformers'
    assisted generation takes one)."""
    name = getattr(draft, "name_or_path", "") or type(draft).__name__
    vocab, theirs = getattr(model.config, "vocab_size", None), getattr(draft.config, "vocab_size", None)
    if theirs is None or theirs != vocab:  # (transformers compares the sizes too)
        raise GenerationError(f"draft model {name}: vocabulary of {theirs} ids, the model's has {vocab}: a draft "
                              f"must share the model's vocabulary ({VOCAB_SIZE} events and the same padding)")
    theirs_ctx = context_length(draft)
    if window is not None and theirs_ctx is not None and theirs_ctx < window:
        raise GenerationError(f"draft model {name}: context of {theirs_ctx} positions, shorter than the "
                              f"{window} the model's window uses")
    if rows != 1:
        raise GenerationError(f"a draft model drafts for one sequence; {rows} were asked for")


__all__ = [
    "ArgumentError", "DEFAULT_ALLOW_EARLY_END", "DEFAULT_MAX_NOTE_SECONDS", "DEFAULT_MAX_SILENCE_SECONDS",
    "DEFAULT_SOUND_AT_ONCE", "GenerationError", "MAX_RETURN_SEQUENCES", "MAX_TOKENS_PER_SECOND", "MUSIC_SETTINGS",
    "Progress", "check_draft", "check_fast_args", "check_generation_args", "check_length", "context_length",
    "model_note_limit", "model_setting",
]
