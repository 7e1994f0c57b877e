"""Search while composing: the piece is composed in chunks of a few seconds; for each, K candidates are
sampled in one batch (the fast loop, which keeps the shared past in its cache: no prompt is run again) and
the critic (``critic.py``) chooses the one that is heard. It streams: a chosen chunk goes to the streamer
before the next is searched.

Why not the model's own likelihood: ranked by their mean log-probability, base's 40 pieces run the wrong
way (the likeliest are the easiest to tell from real music, and lean towards hammering: the model likes
its loops). The judge comes from outside the model; ``logprob_share`` adds a share of the likelihood
to its score, to measure whether that helps.

Two ways to choose (``select``):

- ``"best"``: the candidate the critic scores highest (best-of-K, chunk by chunk);
- ``"sample"``: sequential importance resampling: one candidate drawn with probability proportional to
  ``exp(score)``. Streaming commits each chunk, so the population after resampling is one lineage: the
  candidates of a chunk are its particles. (Several lineages would need rows of different lengths in one
  batch, which the fast loop, without padding, does not run.)

Sequential Monte Carlo libraries for Hugging Face causal LMs exist (llamppl, genlm-control); they drive a
model token by token through their own caching and async interfaces, not this fast loop with music-time
chunk boundaries and the music's logits processors, so the loop here is our own, in ~100 lines.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from transformers import LogitsProcessor, StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from .arguments import GenerationError
from .codec import EOS_ID, PAD_ID
from .defaults import GENERATION_DEFAULTS

logger = logging.getLogger(__name__)
SELECTIONS = ("best", "sample")


def check_candidates(candidates) -> int:
    """K as an int >= 1 (``GenerationError`` naming ``candidates`` otherwise)."""
    if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) or candidates < 1:
        raise GenerationError(f"candidates must be an integer >= 1 (1: no search), got {candidates!r}")
    if candidates > 64:
        raise GenerationError(f"candidates must be at most 64 (each is composed), got {candidates}")
    return int(candidates)


def check_select(select) -> str:
    if select not in SELECTIONS:
        raise GenerationError(f"select must be one of {', '.join(SELECTIONS)}, got {select!r}")
    return select


class ChunkLogProb(LogitsProcessor):
    """The model's log-probability of each row's sampled ids, summed: a processor placed first keeps the
    model's raw log-softmax, its ``criterion`` (a stopping criterion that never stops) adds the chosen id's."""

    def __init__(self):
        self.last: torch.Tensor | None = None
        self.total: torch.Tensor | None = None  # (rows,) over all the rows of the chunk
        self.count: torch.Tensor | None = None
        self.rows: list[int] | None = None  # which of them the current generate() call runs
        self.criterion = _AddLogProb(self)

    def begin(self, rows: list[int], total: int) -> None:
        """A ``generate()`` call on ``rows`` of the chunk's ``total`` rows (the sliding window drops ended rows)."""
        if self.total is None:
            self.total, self.count = torch.zeros(total), torch.zeros(total)
        self.rows, self.last = list(rows), None

    def __call__(self, input_ids, scores):
        self.last = torch.log_softmax(scores.float(), -1)
        return scores

    def mean(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)


class _AddLogProb(StoppingCriteria):
    def __init__(self, owner: ChunkLogProb):
        self.owner = owner

    def __call__(self, input_ids, scores, **kwargs):
        o = self.owner
        if o.last is not None:
            token = input_ids[:, -1]
            live = (token != PAD_ID).float()
            got = o.last.gather(1, token.clamp(max=o.last.shape[1] - 1)[:, None])[:, 0] * live
            if o.total is None:
                o.begin(range(len(token)), len(token))
            rows = torch.as_tensor(o.rows)
            o.total[rows] += got.cpu()
            o.count[rows] += live.cpu()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def search_music(compose, input_ids: torch.LongTensor, critic, candidates: int, seconds: float,
                 select: str = GENERATION_DEFAULTS.select, chunk_seconds: float = GENERATION_DEFAULTS.search_seconds,
                 first_chunk_seconds: float = GENERATION_DEFAULTS.first_search_seconds,
                 critic_seconds: float = GENERATION_DEFAULTS.critic_seconds,
                 logprob_share: float = GENERATION_DEFAULTS.logprob_share,
                 streamer: BaseStreamer | None = None, progress=None, stop_event=None, report: list | None = None,
                 weigh=None) -> torch.LongTensor:
    """Compose ``seconds`` of music after ``input_ids`` (1, P) in chunks, each the critic's choice of
    ``candidates`` sampled in one batch. ``compose(rows, seconds, first, logprob)`` is ``generate_music``'s
    single-chunk composer: (K, T) ids -> (K, T + n) ids padded after an ``<eos>``. Returns (1, P + n) ids.
    ``report``: a list that receives, per chunk, its music seconds, the candidates' scores, the index kept and
    ``wall``, the seconds since the search began when it was kept. ``weigh(rows, seconds_done)``: each
    candidate's weight, added to the critic's score (``critic`` None: the weight alone), e.g. the model's
    log-probability of what follows a gap (``writing.py``)."""
    check_candidates(candidates)
    check_select(select)
    if input_ids.shape[0] != 1:
        raise GenerationError(f"search composes one piece at a time; {input_ids.shape[0]} rows were given")
    piece = input_ids
    done, first, began = 0.0, True, time.perf_counter()
    if streamer is not None:
        streamer.put(input_ids.cpu())
    while done < seconds - 1e-9:
        span = min(first_chunk_seconds if first else chunk_seconds, seconds - done)
        if seconds - done - span < 0.25 * chunk_seconds:  # no tiny last chunk
            span = seconds - done
        rows = piece.expand(candidates, -1).contiguous()
        logprob = ChunkLogProb() if logprob_share else None
        offset = done

        def chunk_progress(part, total, offset=offset):
            if progress is not None:
                progress(min(offset + part, seconds), seconds)

        out = compose(rows, span, first, logprob, chunk_progress if progress is not None else None)
        new = out[:, piece.shape[1]:]
        # the critic hears the last critic_seconds and judges the chunk the candidates differ in
        scores = np.zeros(candidates)
        if critic is not None:
            scores = scores + critic.score_ids([r[r != PAD_ID].cpu().numpy() for r in out], seconds=critic_seconds,
                                               tail=span)
        if candidates > 1 and weigh is not None:
            scores = scores + np.asarray(weigh(out, done + span), dtype=np.float64)
        if logprob is not None and logprob.total is not None:
            scores = scores + float(logprob_share) * logprob.mean().cpu().numpy()
        if select == "best" or candidates == 1:
            pick = int(np.argmax(scores))
        else:
            weights = torch.softmax(torch.as_tensor(scores, dtype=torch.float64), 0)
            pick = int(torch.multinomial(weights, 1))
        chosen = new[pick]
        chosen = chosen[chosen != PAD_ID]
        if report is not None:
            report.append({"seconds": round(span, 3), "scores": [round(float(s), 3) for s in scores], "kept": pick,
                           "wall": round(time.perf_counter() - began, 4)})
        piece = torch.cat([piece, chosen[None]], 1)
        if streamer is not None and len(chosen):
            streamer.put(chosen[None].cpu())
        done += span
        first = False
        if (chosen == EOS_ID).any() or (stop_event is not None and stop_event.is_set()):
            break
    if streamer is not None:
        streamer.end()
    return piece


def critic_for_model(model, critic=None, default=None, name: str | None = None):
    """The critic a search uses: ``critic`` (a ``MusicCritic`` or a folder) when given; else the one saved in
    the model's folder (``critic.json`` beside ``config.json``); else ``default`` (the package's bundled
    critic, for a model of the same vocabulary). None when there is none (the caller composes with K = 1)."""
    import os
    from pathlib import Path

    from .critic import CRITIC_CONFIG, MusicCritic

    if critic is not None:
        return critic if isinstance(critic, MusicCritic) else _load(critic)
    folder = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if folder and (Path(folder) / CRITIC_CONFIG).is_file():
        return _load(folder)
    if default is not None and os.path.isfile(Path(default) / CRITIC_CONFIG):
        return _load(default)
    return None


_LOADED: dict = {}


def _load(folder):
    """A critic folder, loaded once a process (its files' times are part of the key)."""
    from pathlib import Path

    from .critic import CRITIC_CONFIG, CRITIC_WEIGHTS, MusicCritic

    folder = Path(folder)
    files = (folder / CRITIC_CONFIG, folder / CRITIC_WEIGHTS)
    stamp = tuple(p.stat().st_mtime_ns if p.is_file() else None for p in files)
    key = (str(folder.resolve()), stamp)
    if key not in _LOADED:
        _LOADED[key] = MusicCritic.from_pretrained(folder)
    return _LOADED[key]


__all__ = ["ChunkLogProb", "SELECTIONS", "check_candidates", "check_select", "critic_for_model", "search_music"]
