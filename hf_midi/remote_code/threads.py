"""How many torch CPU threads compose fastest: measured once a process, for the pipeline and the CLI.

A small model's decoding step is a few short matrix products: on a CPU a second thread often costs
more in synchronisation than it gains, and when another process keeps a core busy, torch's default
(one thread a core) can run many times slower than one thread (``benchmarks/bench_pipeline.py``).
``fastest_threads`` times a few decoding steps of the model under 1, 2, 4, ... threads, cutting each
trial off as soon as it is slower than the best so far, so the choice costs a fraction of a second.
``use_fastest_threads`` makes the choice once a process per model shape and sets torch to it.
"""

from __future__ import annotations

import logging
import time

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .arguments import ArgumentError
from .codec import BOS_ID, EOS_ID, NOTE_ON, PAD_ID, TIME_SHIFT
from .fast_generation import fast_sample

logger = logging.getLogger(__name__)
# A few decoding steps: enough to time, short enough that three trials cost well under a second.
TRIAL_STEPS = 16
_CHOSEN: dict[tuple, tuple[int, dict[int, float]]] = {}  # model shape -> (threads, seconds a token)
_MOST: list[int] = []  # torch's thread count when first asked: the most a choice may take


class _Deadline(StoppingCriteria):
    """Stops a trial once it has run longer than ``seconds`` (it has lost to a faster count)."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), time.perf_counter() > self.end, dtype=torch.bool,
                          device=input_ids.device)


def _decode(model, steps: int, weights: str, deadline: float) -> tuple[int, float]:
    """Greedy decoding of ``steps`` tokens with the fast loop: (tokens made, seconds)."""
    ids = torch.tensor([[BOS_ID, NOTE_ON + 60, TIME_SHIFT + 9]], device=model.device)
    started = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=steps,
                         min_new_tokens=steps, pad_token_id=PAD_ID, eos_token_id=EOS_ID, custom_generate=fast_sample,
                         weights=weights, stopping_criteria=StoppingCriteriaList([_Deadline(deadline)]))
    return out.shape[1] - ids.shape[1], time.perf_counter() - started


def candidate_threads() -> list[int]:
    """1, 2, 4, ... up to torch's thread count when this was first asked (one a core unless the process
    set another): a process that set one thread keeps one."""
    if not _MOST:
        _MOST.append(torch.get_num_threads())
    most = _MOST[0]
    return sorted({1, most} | {n for n in (2, 4, 8, 16) if n < most})


@torch.inference_mode()
def fastest_threads(model, weights: str = "auto", steps: int = TRIAL_STEPS) -> tuple[int, dict[int, float]]:
    """The torch thread count under which ``model`` decodes fastest here, and the seconds a token each
    count took ({threads: seconds}; empty when torch was set to one thread before it was first asked);
    torch is left set to the chosen count. One warm-up (it also packs
    the fast loop's weights, which the first piece would pay for anyway), then each count in turn, a
    trial cut off once it has taken longer than the best count's whole run."""
    candidates = candidate_threads()
    if len(candidates) == 1:  # torch was set to one thread: nothing to choose
        torch.set_num_threads(1)
        return 1, {}
    per_token: dict[int, float] = {}
    best_total = float("inf")
    for n in candidates:
        torch.set_num_threads(n)
        if n == candidates[0]:
            _decode(model, 2, weights, deadline=60.0)  # warm-up: caches, allocator, packed weights
        made, took = _decode(model, steps, weights, deadline=best_total)
        per_token[n] = took / max(made, 1)
        best_total = min(best_total, per_token[n] * steps)
    best = min(per_token, key=per_token.get)
    torch.set_num_threads(best)
    return best, per_token


def check_threads(threads):
    """``threads`` as given when it is ``"auto"``, None (leave torch as it is) or a whole number >= 1, else
    ``ArgumentError`` naming it."""
    if threads is None or threads == "auto":
        return threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ArgumentError("threads", f"must be auto, None or a whole number >= 1, got {threads!r}")
    return threads


def set_threads(model, threads, weights: str = "auto") -> tuple[int, dict[int, float]]:
    """Apply a checked ``threads`` setting before composing: ``"auto"`` the fastest count (measured once a
    process), a number that many threads, None torch as it is. Returns (threads, {threads: seconds a
    token} when it was measured)."""
    if threads == "auto":
        return use_fastest_threads(model, weights)
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads(), {}


def use_fastest_threads(model, weights: str = "auto") -> tuple[int, dict[int, float]]:
    """Set torch to the fastest thread count for ``model`` on a CPU, measured once a process for each model
    shape (later calls set the remembered count at no cost). Returns (threads, {threads: seconds a token}
    as measured; empty when there was nothing to choose or no CPU)."""
    if model.device.type != "cpu":
        return torch.get_num_threads(), {}
    config = model.config
    key = (type(model).__name__, getattr(config, "n_layer", None), getattr(config, "n_embd", None),
           getattr(config, "hidden_size", None), weights)
    if key in _CHOSEN:
        torch.set_num_threads(_CHOSEN[key][0])
        return _CHOSEN[key]
    _CHOSEN[key] = fastest_threads(model, weights)
    logger.info("torch threads: %d (seconds a token: %s)", *_CHOSEN[key])
    return _CHOSEN[key]


__all__ = [
    "TRIAL_STEPS", "candidate_threads", "check_threads", "fastest_threads", "set_threads", "use_fastest_threads",
]
