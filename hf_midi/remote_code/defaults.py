"""Generation's defaults: their one home.

``GENERATION_DEFAULTS`` is what every face reads when a value is not given: ``generate_music``, the
pipeline (its call and ``stream()``), ``hf-midi generate``, the Space, and the generation config
exported beside a trained model (``generation_config_for``). A model's own ``generation_config.json``
overrides the sampling values and the music settings for that model (the bundled ``base`` sets
``top_p`` 0.98, measured for it: benchmarks/RESULTS.md "Sampling settings"); these are the values for a
model that sets none. This file travels to the Hub with the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationDefaults:
    """The defaults of a piece composed when an argument is not given."""

    # Seconds of new music a click gives: long enough to hear a piece take shape, short enough to
    # compose ahead of playback on one CPU thread.
    seconds: float = 30.0
    # Sampling, for a model whose generation_config.json sets none (the bundled models set their own).
    temperature: float = 1.0
    top_k: int = 0  # off, as in transformers
    top_p: float = 0.95
    # The cap a plain ``model.generate()`` gets from an exported generation config (transformers stops at
    # 20 new tokens without one): about 15 s of dense piano. ``generate_music`` budgets by seconds instead.
    max_new_tokens: int = 2048
    # The stuck-note guard (MaxNoteLengthLogitsProcessor) for a model that sets no ``max_note_seconds``:
    # None = off. The bundled models set 6 (benchmarks/RESULTS.md, with and without).
    max_note_seconds: float | None = None
    # The longest silence (no key down, no onset) allowed: real performances rarely pause longer (a
    # fermata, between movements), and a model that falls silent for longer rarely comes back.
    max_silence_seconds: float | None = 4.0
    # The two rules of a piece composed to a length: the first note sounds at once (no TIME_SHIFT
    # before the first NOTE_ON of a piece from scratch), and <eos> is not sampled before the asked
    # seconds. Two thirds of GiantMIDI's recordings begin with silence and many end early: a model
    # trained on them learns both (benchmarks/RESULTS.md, "A click gives music").
    sound_at_once: bool = True
    allow_early_end: bool = False
    # Only what the encoder could have written (CanonicalOrderLogitsProcessor): one order within a step,
    # no blips, no key the piano lacks. Off for a model whose generation config does not turn it on.
    canonical_order: bool = False
    # Against hammering (RestrikeLogitsProcessor): nats taken from an onset that strikes a pitch again within
    # 0.3 s, times the re-strikes in a row. None: off, for a model whose generation config sets none.
    restrike_penalty: float | None = None
    # Search while composing (search.py): K candidates for each chunk of music, in one batch, the one the
    # critic scores highest kept ("best") or one drawn by the critic's weights ("sample"). 1: off, as for a
    # model whose generation config sets none; the bundled models set their own (benchmarks/RESULTS.md).
    candidates: int = 1
    select: str = "best"
    search_seconds: float = 2.0  # music a chunk of the search holds
    first_search_seconds: float = 1.0  # the first chunk: short, so that the first sound comes at once
    critic_seconds: float = 12.0  # the stretch the critic scores, ending with the candidate
    logprob_share: float = 0.0  # weight of the candidate's mean log-probability a token beside the critic
    # Writing with given notes (writing.py): a candidate is weighed by the model's log-probability of the
    # next follow_seconds of what is already written (the piece after a gap, the melody's next notes), each
    # seeing follow_context tokens before it.
    follow_seconds: float = 4.0
    follow_context: int = 512
    # Candidates a chunk when writing and none are asked for, for a model whose generation config sets none
    # (benchmarks/RESULTS.md, "Write with the model"): a fill's join to what follows improves with K (small, 20
    # spans: best of 4 closed 35 % of the NLL gap from unweighed to true spans, best of 8 56 %; the bundled base
    # sets 16); an accompaniment composes 30 s, where K costs more.
    fill_candidates: int = 8
    accompany_candidates: int = 4
    # An accompaniment's density, unless a density control is given: onsets a second, melody included, as a
    # multiple of the melody's own rate (POP909 train, the first 30 s from each song's melody: median 3.26;
    # left alone, the models play 20-40 notes a second around a melody of 1-2).
    accompany_density: float = 3.25
    # ... and towards the melody's key (Krumhansl-Schmuckler on the melody): a note outside it loses this many
    # nats, so that the harmony under the melody is the melody's (a soft key: chromatic notes stay possible).
    accompany_key_strength: float = 2.0
    # ... and its onsets towards the pitch classes of the melody notes near them in time (nats, GivenNotes):
    # chord tones under the tune.
    accompany_harmony: float = 3.0
    # ... and away from pitch classes a semitone or a tritone from a melody note sounding then (nats,
    # GivenNotes): POP909's real accompaniments strike 3 % of their onsets so against the tune.
    accompany_clash: float = 2.0
    # ... and under the tune: no new note above the melody's median pitch (left alone, the models often play
    # above a melody, hiding it).
    accompany_below: bool = True
    # Music a streamed chunk holds (pipe.stream, the Space's live audio).
    chunk_seconds: float = 0.5
    # torch CPU threads while composing: "auto" measures the fastest count once a process (threads.py;
    # never more than torch was set to), a number sets it, None leaves torch as it is.
    threads: str | int | None = "auto"


GENERATION_DEFAULTS = GenerationDefaults()
# The settings that are ours, not generate()'s: read from a model's generation config by name.
MUSIC_SETTINGS = ("max_note_seconds", "sound_at_once", "allow_early_end", "canonical_order", "restrike_penalty",
                  "candidates", "select", "fill_candidates", "accompany_candidates")


def generation_config_for(vocab_size: int, bos_id: int, eos_id: int, pad_id: int, never: list[int],
                          defaults: GenerationDefaults = GENERATION_DEFAULTS):
    """The ``GenerationConfig`` shipped beside a newly trained model: sampling and the music settings
    from ``defaults``, the special ids set, and ``never`` (ids the model must never emit: padding rows
    of the embedding, ``<pad>``, ``<bos>``) suppressed."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id, decoder_start_token_id=bos_id,
        do_sample=True, temperature=defaults.temperature, top_p=defaults.top_p, top_k=defaults.top_k,
        max_new_tokens=defaults.max_new_tokens, suppress_tokens=list(never),
    )
    for name in MUSIC_SETTINGS:
        value = getattr(defaults, name)
        if value is not None:
            setattr(config, name, value)
    return config


__all__ = ["GENERATION_DEFAULTS", "MUSIC_SETTINGS", "GenerationDefaults", "generation_config_for"]
