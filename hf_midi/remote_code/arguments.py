"""Generation's arguments: their defaults, their checks (before anything runs) and the errors that name
them. The other generation files import these; they import nothing of generation's."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

from .codec import (
    MAX_SECONDS,
    VOCAB_SIZE,
    seconds_to_steps,
)
from .defaults import GENERATION_DEFAULTS, MUSIC_SETTINGS
from .errors import HfMidiError
from .fast_generation import WEIGHT_FORMATS

# A token budget when only seconds are given: the densest 10 s of ASAP/POP909 hold ~130 events a
# second, so a model that stops advancing time cannot run forever.
MAX_TOKENS_PER_SECOND = 200
MAX_RETURN_SEQUENCES = 64

Progress = Callable[[float, "float | None"], object]


class GenerationError(HfMidiError):
    """Bad generation input (arguments, prompt, model folder), raised before any generation starts."""


class ArgumentError(GenerationError):
    """One argument out of range: ``argument`` names it, ``problem`` says what is wrong, so that a
    front end can name it its own way (the CLI writes ``--max-new-tokens``)."""

    def __init__(self, argument: str, problem: str):
        super().__init__(f"{argument} {problem}")
        self.argument, self.problem = argument, problem


def positive_number(name: str, value, most: float | None = None, unit: str = "") -> float:
    """``value`` as a float when it is a finite real number > 0 (and at most ``most``), else
    ``ArgumentError`` naming ``name``: the one check of a positive number (seconds, strengths, rates)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not 0 < value <= (math.inf if most is None else most):
        bound = "" if most is None else f" and at most {most:g}"
        raise ArgumentError(name, f"must be a number > 0{bound}{unit}, got {value!r}")
    return float(value)


def check_length(seconds, max_new_tokens) -> None:
    """A piece needs a length: seconds of music or a number of tokens (or both)."""
    if seconds is None and max_new_tokens is None:
        raise GenerationError("give seconds or max_new_tokens (both are None)")


def model_note_limit(model) -> float | None:
    """The guard's default for ``model``: its generation config's ``max_note_seconds``, else
    ``GENERATION_DEFAULTS.max_note_seconds``."""
    value = model_setting(model, "max_note_seconds")
    return None if value is None else float(value)


def model_setting(model, name: str):
    """One of the music settings (``MUSIC_SETTINGS``) from the model's generation config, else its default
    (``GENERATION_DEFAULTS``)."""
    if name not in MUSIC_SETTINGS:
        raise KeyError(f"{name} is not one of the music settings {MUSIC_SETTINGS}")
    return getattr(getattr(model, "generation_config", None), name, getattr(GENERATION_DEFAULTS, name))


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

    def number(name, value, most=None):
        if value is not None:
            out[name] = positive_number(name, value, most)

    def integer(name, value, lo, hi):
        if value is None:
            return
        whole = isinstance(value, numbers.Integral) or (
            isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())
        if isinstance(value, bool) or not whole or not lo <= int(value) <= hi:
            raise ArgumentError(name, f"must be an integer in {lo}..{hi}, got {value!r}")
        out[name] = int(value)

    check_length(seconds, max_new_tokens)
    number("seconds", seconds, MAX_SECONDS)
    if seconds is not None and seconds_to_steps(seconds) < 1:
        raise ArgumentError("seconds", f"must be at least 0.01 (one 10 ms step), got {seconds!r}")
    integer("max_new_tokens", max_new_tokens, 1, int(MAX_SECONDS * MAX_TOKENS_PER_SECOND))
    number("temperature", temperature, 100)
    integer("top_k", top_k, 0, VOCAB_SIZE)  # 0 turns top-k off, as in transformers
    number("top_p", top_p, 1)
    integer("num_return_sequences", num_return_sequences, 1, MAX_RETURN_SEQUENCES)
    integer("seed", seed, 0, 2**63 - 1)
    number("prompt_seconds", prompt_seconds, MAX_SECONDS)
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
    "ArgumentError", "GenerationError", "MAX_RETURN_SEQUENCES", "MAX_TOKENS_PER_SECOND", "Progress", "check_draft",
    "check_fast_args", "check_generation_args", "check_length", "context_length", "model_note_limit",
    "model_setting", "positive_number",
]
