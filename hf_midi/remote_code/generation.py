"""Generation: the standard ``model.generate()`` plus what music needs, as its extension points, in flat
sibling files by job (each travels with the pipeline into a Hub folder; ``hub.code_closure`` follows
their imports):

- ``arguments.py``: defaults, checks and the errors that name an argument;
- ``performance_state.py``: ``PerformanceState``, per-sequence state of a batch (music time, sounding
  pitches, pedal, last token), updated one token a step and shared by the processors;
- ``processors.py``: ``PerformanceGrammarLogitsProcessor`` (what cannot be valid), the guards
  (``MaxNoteLengthLogitsProcessor``, ``MaxSilenceLogitsProcessor``), ``SoundAtOnceLogitsProcessor``,
  ``MusicTimeLimitLogitsProcessor`` + ``MusicTimeStoppingCriteria`` (ask for seconds, not tokens),
  ``MusicProgressCriteria`` (progress and a ``stop_event``);
- ``controls.py``: ``MusicControls`` and its processors (key, pitch range, velocities, density,
  polyphony, pedal), steering what the new music plays;
- ``streaming.py``: ``MusicStreamer`` and ``MusicChunk``, for playing while composing;
- this file: the model's generation config for music, and ``generate_music``: one ``generate()``
  call, or the sliding window for pieces longer than the model's context. Each name is imported from
  its own file.

Loading models by name, folder, Hub id or adapter is ``hf_midi.loading``; the ``hf-midi generate``
command is in ``hf_midi.cli``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from .arguments import (
    MAX_TOKENS_PER_SECOND,
    GenerationError,
    Progress,
    check_draft,
    check_fast_args,
    check_length,
    context_length,
)
from .codec import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    PIANO_KEYS,
    TIME_SHIFT,
    VOCAB_SIZE,
    keys_down,
    never_generated,
    seconds_to_steps,
    shift_steps,
)
from .controls import MusicControls
from .defaults import GENERATION_DEFAULTS, MUSIC_SETTINGS
from .fast_generation import fast_sample
from .performance_state import PerformanceState, step_counts
from .processors import (
    CanonicalOrderLogitsProcessor,
    GivenNotes,
    GivenNotesLogitsProcessor,
    MaxNoteLengthLogitsProcessor,
    MaxSilenceLogitsProcessor,
    MusicProgressCriteria,
    MusicTimeLimitLogitsProcessor,
    MusicTimeStoppingCriteria,
    PerformanceGrammarLogitsProcessor,
    RestrikeLogitsProcessor,
    SoundAtOnceLogitsProcessor,
)
from .search import check_candidates, check_select, search_music
from .streaming import _OneStream


def quiet_cut(seqs: torch.Tensor, target: int, slack: int) -> int:
    """Where a sliding window's new context should start: the position within ``target`` +- ``slack``
    at which the fewest notes are sounding (summed over the rows; the nearest to ``target`` among
    equals). A note sounding at the cut has its NOTE_ON in the history the model no longer sees, so
    nothing reminds it to end the note: the cause of most notes held for half a minute."""
    lo, hi = max(1, target - slack), min(seqs.shape[1] - 1, target + slack)
    if hi <= lo:
        return target
    rows = seqs.cpu().numpy()
    counts = sum(keys_down(r)[lo - 1 : hi] for r in rows)  # after token p - 1 = at cut p
    positions = np.arange(lo, hi + 1)
    best = np.lexsort((np.abs(positions - target), counts))[0]
    return int(positions[best])


def cut_events(ids, seconds: float) -> np.ndarray:
    """The first ``seconds`` of event ids (no special tokens): the events before the cut, and time
    advanced exactly to the cut when the piece goes on past it. Notes sounding at the cut stay open
    (a continuation may end them)."""
    ids = np.asarray(ids, dtype=np.int64)
    cut = seconds_to_steps(seconds)
    steps = shift_steps(ids)
    after = np.cumsum(steps)
    before = after - steps  # the time at which each token happens (a shift starts there)
    keep = np.flatnonzero(before < cut)
    out = ids[keep].copy()
    if len(keep) and after[keep[-1]] > cut:  # only the last kept token can be a shift past the cut
        out[-1] = TIME_SHIFT - 1 + (cut - before[keep[-1]])
    return out


# --------------------------------------------------------------------------- the generation loop
def music_generation_config(model, temperature=None, top_k=None, top_p=None) -> GenerationConfig:
    """The model's generation config with sampling on; given values override it (None keeps it). The
    music settings (``MUSIC_SETTINGS``, read with ``model_setting``) are left out: they are ours, not
    ``generate()``'s."""
    settings = {k: v for k, v in model.generation_config.to_dict().items() if k not in MUSIC_SETTINGS}
    config = GenerationConfig.from_dict(settings)
    config.do_sample = True
    for name, value in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p)):
        if value is not None:
            setattr(config, name, value)
    for name, value in (("bos_token_id", BOS_ID), ("eos_token_id", EOS_ID), ("pad_token_id", PAD_ID)):
        if getattr(config, name, None) is None:
            setattr(config, name, value)
    config.num_return_sequences = 1  # rows are expanded by the caller
    vocab = getattr(model.config, "vocab_size", VOCAB_SIZE)
    if vocab > VOCAB_SIZE:  # rows that pad the embedding are no token: decoding would reject them
        padding_rows = never_generated(vocab)[2:]  # (its first two, <pad> and <bos>, the grammar forbids)
        config.suppress_tokens = sorted(set(config.suppress_tokens or ()) | set(padding_rows))
    return config


def music_processors(state: PerformanceState | None = None, seconds: float | None = None, grammar: bool = True,
                     max_note_seconds: float | None = None,
                     max_silence_seconds: float | None = GENERATION_DEFAULTS.max_silence_seconds,
                     sound_at_once: bool = GENERATION_DEFAULTS.sound_at_once,
                     allow_early_end: bool = GENERATION_DEFAULTS.allow_early_end,
                     controls: MusicControls | None = None,
                     canonical_order: bool = GENERATION_DEFAULTS.canonical_order,
                     given: GivenNotes | None = None, given_offset: int = 0,
                     restrike_penalty: float | None = GENERATION_DEFAULTS.restrike_penalty,
                     ) -> tuple[LogitsProcessorList, StoppingCriteriaList]:
    """The music's processors and criteria for one ``generate()`` call, sharing ``state`` (a new one, counting
    time from the end of the prompt, by default): what ``generate_music`` runs, for a plain
    ``model.generate(ids, logits_processor=processors, stopping_criteria=criteria)``. ``controls``
    (``MusicControls``): their processors go after the grammar and the guards, before the time limit.
    ``canonical_order``: ``CanonicalOrderLogitsProcessor`` last (it yields where the others corner a row),
    its keys the piano's, widened to a ``pitch_range`` control's. ``given`` (``GivenNotes``, counted from
    ``given_offset`` steps before the state's start): ``GivenNotesLogitsProcessor`` after everything, so that the
    given notes sound as given whatever the controls ask of the new ones. ``restrike_penalty`` (nats; None: off):
    ``RestrikeLogitsProcessor`` before the controls, against hammering."""
    state = state if state is not None else PerformanceState()
    processors, criteria = LogitsProcessorList(), StoppingCriteriaList()
    if grammar:
        processors.append(PerformanceGrammarLogitsProcessor(state))
    if max_note_seconds is not None:
        processors.append(MaxNoteLengthLogitsProcessor(max_note_seconds, state))
    if max_silence_seconds is not None:
        processors.append(MaxSilenceLogitsProcessor(max_silence_seconds, state))
    if sound_at_once:
        processors.append(SoundAtOnceLogitsProcessor(state))
    if restrike_penalty is not None:
        processors.append(RestrikeLogitsProcessor(restrike_penalty, state))
    if controls:
        processors.extend(controls.processors(state))
    if seconds is not None:
        processors.append(MusicTimeLimitLogitsProcessor(seconds, state, allow_early_end))
        criteria.append(MusicTimeStoppingCriteria(seconds, state))
    if canonical_order:
        low, high = PIANO_KEYS
        if controls is not None and controls.pitch_range is not None:
            low, high = min(low, controls.pitch_range[0]), max(high, controls.pitch_range[1])
        processors.append(CanonicalOrderLogitsProcessor(state, keys=(low, high)))
    if given is not None:
        processors.append(GivenNotesLogitsProcessor(given, state, offset=given_offset))
    return processors, criteria


def _finished(state: PerformanceState, new: torch.Tensor, seconds, limit, stop_event) -> torch.Tensor:
    """Which rows of one generate() call are done: ended (<eos>), at their time limit, or stopped."""
    finished = (new == EOS_ID).any(1)
    if seconds is not None:
        finished |= state.elapsed >= limit
    if stop_event is not None and stop_event.is_set():
        finished[:] = True
    return finished


def _padded(rows: list[torch.Tensor], prompt: int) -> torch.Tensor:
    """The rows cut after their <eos>, or before the padding generate() put after a stop, padded to one length."""
    ends = []
    for r in rows:
        eos = (r[prompt:] == EOS_ID).nonzero()
        if len(eos):
            ends.append(prompt + int(eos[0]) + 1)
        else:
            real = (r != PAD_ID).nonzero()
            ends.append(int(real[-1]) + 1 if len(real) else 0)
    out = torch.full((len(rows), max(ends)), PAD_ID, dtype=rows[0].dtype, device=rows[0].device)
    for i, (r, end) in enumerate(zip(rows, ends)):
        out[i, :end] = r[:end]
    return out


def generate_music(
    model,
    input_ids: torch.LongTensor,
    seconds: float | None = GENERATION_DEFAULTS.seconds,
    max_new_tokens: int | None = None,
    grammar: bool = True,
    generation_config: GenerationConfig | None = None,
    progress: Progress | None = None,
    stop_event=None,
    window: int | None = None,
    keep: int | None = None,
    max_note_seconds: float | None = None,
    fast: bool = True,
    weights: str = "auto",
    streamer: BaseStreamer | None = None,
    assistant_model=None,
    max_silence_seconds: float | None = GENERATION_DEFAULTS.max_silence_seconds,
    sound_at_once: bool = GENERATION_DEFAULTS.sound_at_once,
    allow_early_end: bool = GENERATION_DEFAULTS.allow_early_end,
    controls: MusicControls | None = None,
    canonical_order: bool = GENERATION_DEFAULTS.canonical_order,
    candidates: int = GENERATION_DEFAULTS.candidates,
    critic=None,
    select: str = GENERATION_DEFAULTS.select,
    logprob_share: float = GENERATION_DEFAULTS.logprob_share,
    search_seconds: float = GENERATION_DEFAULTS.search_seconds,
    first_search_seconds: float = GENERATION_DEFAULTS.first_search_seconds,
    search_report: list | None = None,
    given: GivenNotes | None = None,
    weigh=None,
    restrike_penalty: float | None = GENERATION_DEFAULTS.restrike_penalty,
) -> torch.LongTensor:
    """Continue each row of ``input_ids`` (N, P) with ``model.generate()``; returns (N, P + n) ids,
    each row ending with ``<eos>`` when the model ended the piece, then ``<pad>``.

    Each row gets ``seconds`` of new music (exactly, unless the model ends it earlier) and at most
    ``max_new_tokens`` tokens (default ``seconds`` x 200). When a row outgrows ``window`` positions
    (default: the model's context), generation continues from its last ``keep`` tokens (default half
    the window): the sliding window. While everything fits, this is exactly one ``generate()`` call.
    ``max_note_seconds``: end notes held that long (``MaxNoteLengthLogitsProcessor``); None: off.
    ``max_silence_seconds``: no silence longer than this (``MaxSilenceLogitsProcessor``; default 4 s); None: off.
    ``sound_at_once``: no TIME_SHIFT or ``<eos>`` before the first NOTE_ON (``SoundAtOnceLogitsProcessor``;
    a prompt with notes has had its first). ``allow_early_end``: let the model end a piece (``<eos>``)
    before ``seconds``; False: each row lasts ``seconds`` (the token budget aside).
    ``controls``: ``MusicControls`` (key, register, dynamics, density, polyphony, pedal) for the new music.
    ``canonical_order``: only what the encoder could have written (``CanonicalOrderLogitsProcessor``).
    ``restrike_penalty``: nats taken from striking a pitch again within 0.3 s, times the re-strikes in a row
    (``RestrikeLogitsProcessor``, against hammering); None: off.
    ``fast``: ``generate()`` with ``custom_generate=fast_sample`` (the same sampling, a lean forward;
    models it does not cover take ``generate()``'s own loop); ``weights``: its format (``float32``: the
    tokens of ``fast=False`` under one seed; ``float16``/``int8``: fbgemm's CPU kernels; ``auto``: float16
    on a CPU with fbgemm, else float32). ``streamer`` (e.g. ``MusicStreamer``), one row: the prompt, every
    new id across all windows, one ``end()``. ``assistant_model``: a smaller model of the same vocabulary
    drafting for ``model`` (assisted generation, speculative sampling; one row, ``generate()``'s own
    loop; on one CPU thread slower than the fast loop alone, benchmarks/RESULTS.md).
    ``candidates`` K > 1: search while composing (``search.py``): each row in chunks of ``search_seconds``,
    K candidates a chunk in one batch, the ``critic`` (a ``MusicCritic``, required then) choosing by
    ``select`` ("best" or "sample"), plus ``logprob_share`` x the candidate's mean log-probability;
    ``search_report``: a list receiving each chunk's scores and choice; ``first_search_seconds``: the first
    chunk's music (short, so that the first sound comes at once).
    ``given`` (``GivenNotes``, steps from the end of the prompt): notes the new music holds exactly, the model
    playing around them (``GivenNotesLogitsProcessor``; ``writing.py`` fills gaps and accompanies melodies with
    it). ``weigh(rows, seconds_done)``: with K > 1, each candidate's weight beside (or, with no critic, instead
    of) the critic's score, e.g. the model's log-probability of what follows (``writing.follow_logprob``).
    """
    check_length(seconds, max_new_tokens)
    candidates = check_candidates(candidates)
    if candidates > 1:
        check_select(select)
        if critic is None and weigh is None:
            raise GenerationError("candidates > 1 needs a critic (a MusicCritic) to choose among them")
        if seconds is None:
            raise GenerationError("search while composing (candidates > 1) composes to a length: give seconds")
        if assistant_model is not None:
            raise GenerationError("search while composing (candidates > 1) runs the fast loop; leave out "
                                  "assistant_model")
        settings = dict(grammar=grammar, generation_config=generation_config, window=window, keep=keep,
                        max_note_seconds=max_note_seconds, fast=fast, weights=weights,
                        max_silence_seconds=max_silence_seconds, sound_at_once=sound_at_once,
                        allow_early_end=allow_early_end, controls=controls, canonical_order=canonical_order,
                        given=given, restrike_penalty=restrike_penalty)
        prompt = input_ids.shape[1]

        def compose(rows, span, first, logprob, chunk_progress):
            done = int(shift_steps(rows[0, prompt:].cpu().numpy()).sum())  # the steps chosen so far
            return _compose(model, rows, seconds=span, max_new_tokens=math.ceil(span * MAX_TOKENS_PER_SECOND),
                            progress=chunk_progress, stop_event=stop_event, reuse_cache=not first, share_prompt=first,
                            logprob=logprob, given_offset=done, **settings)

        pieces = [search_music(compose, input_ids[i : i + 1], critic, candidates, seconds, select=select,
                               chunk_seconds=search_seconds, first_chunk_seconds=first_search_seconds,
                               logprob_share=logprob_share, streamer=streamer,
                               progress=progress, stop_event=stop_event, report=search_report, weigh=weigh)[0]
                  for i in range(input_ids.shape[0])]
        return _padded(pieces, input_ids.shape[1])
    return _compose(model, input_ids, seconds, max_new_tokens, grammar, generation_config, progress, stop_event,
                    window, keep, max_note_seconds, fast, weights, streamer, assistant_model, max_silence_seconds,
                    sound_at_once, allow_early_end, controls, canonical_order, given=given,
                    restrike_penalty=restrike_penalty)


def _compose(model, input_ids, seconds, max_new_tokens=None, grammar=True, generation_config=None, progress=None,
             stop_event=None, window=None, keep=None, max_note_seconds=None, fast=True, weights="auto",
             streamer=None, assistant_model=None, max_silence_seconds=GENERATION_DEFAULTS.max_silence_seconds,
             sound_at_once=GENERATION_DEFAULTS.sound_at_once, allow_early_end=GENERATION_DEFAULTS.allow_early_end,
             controls=None, canonical_order=GENERATION_DEFAULTS.canonical_order, reuse_cache=False, logprob=None,
             given=None, given_offset=0, share_prompt=False,
             restrike_penalty=GENERATION_DEFAULTS.restrike_penalty):
    """``generate_music`` without search: one ``generate()`` call, or the sliding window. ``reuse_cache``:
    the fast loop keeps its cache of the rows' shared past (a search's later chunks); ``logprob``
    (``ChunkLogProb``): sums each row's log-probability; ``given``/``given_offset``: ``music_processors``'."""
    budget = max_new_tokens if max_new_tokens is not None else math.ceil(seconds * MAX_TOKENS_PER_SECOND)
    window, keep = _window_size(model, window, keep)
    config = copy.deepcopy(generation_config) if generation_config is not None else music_generation_config(model)
    fast, extra = _loop_arguments(model, input_ids.shape[0], window, fast, weights, assistant_model)
    if reuse_cache and fast:
        extra["reuse_cache"] = True
    elif share_prompt and fast:
        extra["share_prompt"] = True

    state = PerformanceState(start=input_ids.shape[1])
    processors, criteria = music_processors(state, seconds, grammar, max_note_seconds, max_silence_seconds,
                                            sound_at_once, allow_early_end, controls, canonical_order, given,
                                            given_offset, restrike_penalty)
    if logprob is not None:  # first: it reads the model's own scores
        processors.insert(0, logprob)
        criteria.append(logprob.criterion)
    tracker = MusicProgressCriteria(seconds, progress, stop_event, state)
    if progress is not None or stop_event is not None:
        criteria.append(tracker)

    _start_stream(streamer, input_ids)
    rows, alive, made = [input_ids[i] for i in range(input_ids.shape[0])], list(range(input_ids.shape[0])), 0
    while alive and made < budget:
        seqs = torch.stack([rows[i] for i in alive])  # alive rows all have the same length
        context, history = _window(seqs, window, keep)
        state.set_history(history)
        config.max_new_tokens = budget - made if window is None else min(budget - made, window - context.shape[1])
        call_streamer = None if streamer is None else _OneStream(streamer, skip_prompt=not fast)
        if logprob is not None:
            logprob.begin(alive, len(rows))
        out = model.generate(
            context, attention_mask=torch.ones_like(context), generation_config=config,
            logits_processor=processors, stopping_criteria=criteria,
            # the fast loop takes it as stream= (transformers 5.24 does not hand streamer= on to it)
            **{"stream" if fast else "streamer": call_streamer}, **extra,
        )
        new = out[:, context.shape[1]:]
        finished = _finished(state.sync(out), new, seconds, tracker.limit, stop_event)
        for j, i in enumerate(alive):
            rows[i] = torch.cat([rows[i], new[j]])
        made += new.shape[1]
        alive = [i for j, i in enumerate(alive) if not finished[j]]
    out = _padded(rows, input_ids.shape[1])
    _last_report(tracker, out[:, input_ids.shape[1]:], seconds)
    if streamer is not None:
        streamer.end()
    return out


def _start_stream(streamer: BaseStreamer | None, input_ids: torch.Tensor) -> None:
    """A streamer follows one row: it gets the prompt first."""
    if streamer is not None:
        if input_ids.shape[0] != 1:
            raise GenerationError(f"a streamer follows one sequence; {input_ids.shape[0]} were asked for")
        streamer.put(input_ids.cpu())


def _loop_arguments(model, rows: int, window, fast: bool, weights: str, assistant_model) -> tuple[bool, dict]:
    """Which loop runs (``fast``, turned off by a draft model) and generate()'s keywords for it."""
    check_fast_args(fast, weights)
    if assistant_model is not None:
        check_draft(model, assistant_model, window, rows)
        if weights not in ("auto", "float32"):
            raise GenerationError(f"weights={weights!r} needs the fast loop, which does not draft: leave "
                                  "assistant_model out, or weights at auto")
        fast = False
    extra = ({"custom_generate": fast_sample, "weights": weights} if fast else {}) | (
        {"assistant_model": assistant_model} if assistant_model is not None else {})
    return fast, extra


def _window_size(model, window: int | None, keep: int | None) -> tuple[int | None, int | None]:
    """The sliding window's size (default: the model's context; None: unlimited) and what it keeps."""
    window = window if window is not None else context_length(model)
    keep = keep if keep is not None else (window // 2 if window else None)
    if window is not None and not 0 < keep < window:
        raise GenerationError(f"keep must be in 1..{window - 1} (the window), got {keep}")
    return window, keep


def _window(seqs: torch.Tensor, window: int | None, keep: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(context the model sees, history before it): all of ``seqs`` while it fits the window, else its
    last ~``keep`` tokens from a quiet cut."""
    if window is None or seqs.shape[1] < window:
        return seqs, None
    cut = quiet_cut(seqs, seqs.shape[1] - keep, slack=keep // 4)
    return seqs[:, cut:], seqs[:, :cut]


def _last_report(tracker: MusicProgressCriteria, new: torch.Tensor, seconds) -> None:
    """The last progress report: where the slowest row stopped (rows the model ended count as done)."""
    elapsed = step_counts(new).sum(1)
    if seconds is None:
        tracker.report(int(elapsed.max()))
    else:
        tracker.report(int(torch.where((new == EOS_ID).any(1), tracker.limit, elapsed).min()))


__all__ = ["cut_events", "generate_music", "music_generation_config", "music_processors", "quiet_cut"]
