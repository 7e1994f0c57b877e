"""Clean training data: recordings cut into pieces at long silences, each piece starting at its first
note, and spans that are not piano music screened out, every decision counted by reason.

GiantMIDI-Piano is transcribed from recordings: most of its performances begin with seconds of
silence (applause, a pause before the first chord), some hold long silences inside (between
movements), and some spans are transcribed noise or other instruments. A model trained on them learns
that ``<bos>`` is followed by silence. ``clean_performance`` turns one file into the pieces worth
training on:

1. **Cut** at every silence (no key held: the gap between the latest note end so far and the next
   onset) longer than ``split_silence`` seconds. Each piece is shifted so that its first onset is at
   0 s: a piece never begins with a time shift. A pedal pressed before that onset is pressed at 0 s;
   pedal held past the last note is released with it.
2. **Screen** each piece with measured thresholds (``CleanConfig``), in the spirit of the tests that
   EleutherAI's aria-utils runs for the Aria-MIDI corpus (Bradshaw and Colton, ICLR 2025: silent
   interval, note frequency, pitch and timing entropy, repetitive content); the thresholds here were
   measured on GiantMIDI-Piano and POP909 (``benchmarks/bench_cleaning.py``, RESULTS.md "Clean data").

Every piece carries its figures (``PieceFigures``), stored by ``hf-midi prepare`` as columns that
``--where`` can select on; every piece screened out is reported with its reason and figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from ..remote_code.codec import Performance


@dataclass(frozen=True)
class CleanConfig:
    """The screens and their thresholds; ``None`` turns one off. Defaults measured (module docstring)."""

    split_silence: float | None = 4.0
    """Cut a recording into separate pieces at silences longer than this (seconds)."""
    min_seconds: float | None = 10.0
    """A piece shorter than this (first onset to last note end) is dropped: "too short"."""
    min_notes_per_second: float | None = 1.0
    """Fewer notes a second than this over the piece: scattered notes, "too sparse"."""
    max_notes_per_second: float | None = 40.0
    """More notes a second than this over the piece: transcribed noise, "too dense"."""
    min_pitch_entropy: float | None = 2.5
    """Entropy (bits) of the pitch histogram below this: one or two keys repeated, "few pitches"."""
    min_onset_entropy: float | None = 1.0
    """Entropy (bits) of the inter-onset intervals on the 10 ms grid (truncated at 5 s) below this:
    a machine-like pulse, "no timing variety"."""
    max_repetition: float | None = 0.8
    """Share of the piece's 8-note pitch n-grams that repeat an earlier one above this: a loop,
    "repetitive"."""

    def screens(self) -> dict[str, float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "split_silence"}


NO_CLEAN = CleanConfig(*(None,) * len(fields(CleanConfig)))
"""Every screen off and no cut: the file as it is (``hf-midi prepare --no-clean``)."""


@dataclass(frozen=True)
class PieceFigures:
    """One piece's measured figures; the names are the dataset's columns."""

    start: float  # seconds into the source file where the piece's first onset lies
    lead_silence: float  # seconds trimmed before the first onset (from the file's start or the cut)
    seconds: float  # first onset to last note end
    notes_per_second: float
    max_silence: float  # longest silence inside the piece
    pitch_entropy: float  # bits
    onset_entropy: float  # bits
    repetition: float  # share of 8-note pitch n-grams that repeat an earlier one
    pedal_share: float  # share of the piece's time with the sustain pedal down

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


FIGURE_COLUMNS = tuple(f.name for f in fields(PieceFigures))

REASON_OF = {
    "min_seconds": "too short",
    "min_notes_per_second": "too sparse",
    "max_notes_per_second": "too dense",
    "min_pitch_entropy": "few pitches",
    "min_onset_entropy": "no timing variety",
    "max_repetition": "repetitive",
}
FIGURE_OF = {"min_seconds": "seconds", "min_notes_per_second": "notes_per_second",
             "max_notes_per_second": "notes_per_second", "min_pitch_entropy": "pitch_entropy",
             "min_onset_entropy": "onset_entropy", "max_repetition": "repetition"}


def _entropy(values: np.ndarray) -> float:
    if len(values) == 0:
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return max(0.0, float(-(p * np.log2(p)).sum()))  # never -0.0


def silences(onset: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the note after each gap, gap seconds) for the notes sorted by onset: the time from the
    latest note end so far to the next onset, where it is positive."""
    if len(onset) < 2:
        return np.empty(0, np.int64), np.empty(0)
    reach = np.maximum.accumulate(offset)[:-1]
    gap = onset[1:] - reach
    where = np.flatnonzero(gap > 0)
    return where + 1, gap[where]


def repetition(pitch: np.ndarray, n: int = 8) -> float:
    """Share of the ``n``-note pitch n-grams (in onset order) that repeat an earlier one."""
    if len(pitch) < n + 1:
        return 0.0
    grams = np.lib.stride_tricks.sliding_window_view(pitch.astype(np.int64), n)
    keys = np.zeros(len(grams), np.int64)
    for k in range(n):
        keys = keys * 128 + grams[:, k]  # 8 x 7 bits fits int64
    return 1.0 - len(np.unique(keys)) / len(keys)


def figures(perf: Performance, start: float = 0.0, lead_silence: float = 0.0) -> PieceFigures:
    """The figures of one piece (a ``Performance`` whose notes are sorted by onset)."""
    n = perf.num_notes
    if n == 0:
        return PieceFigures(start, lead_silence, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    first = float(perf.onset[0])
    seconds = float(perf.offset.max()) - first
    _, gaps = silences(perf.onset, perf.offset)
    ioi = np.minimum(np.round(np.diff(perf.onset) * 100), 500)
    pedal = 0.0
    if len(perf.pedal_down) and seconds > 0:
        end = first + seconds
        down = np.clip(perf.pedal_down, first, end)
        up = np.clip(np.where(np.isfinite(perf.pedal_up), perf.pedal_up, end), first, end)
        pedal = float(np.clip(up - down, 0, None).sum() / seconds)
    return PieceFigures(
        start=round(start, 4), lead_silence=round(lead_silence, 4), seconds=round(seconds, 4),
        notes_per_second=round(n / max(seconds, 0.01), 4), max_silence=round(float(gaps.max(initial=0.0)), 4),
        pitch_entropy=round(_entropy(perf.pitch), 4), onset_entropy=round(_entropy(ioi), 4),
        repetition=round(repetition(perf.pitch), 4), pedal_share=round(min(pedal, 1.0), 4),
    )


def _sorted(perf: Performance) -> Performance:
    order = np.lexsort((perf.pitch, perf.onset))
    if (order == np.arange(len(order))).all():
        return perf
    return replace(perf, onset=perf.onset[order], offset=perf.offset[order], pitch=perf.pitch[order],
                   velocity=perf.velocity[order])


def _piece(perf: Performance, lo: int, hi: int) -> Performance:
    """Notes lo..hi-1 (sorted by onset) shifted to start at 0, with the pedal that overlaps them."""
    onset, offset = perf.onset[lo:hi], perf.offset[lo:hi]
    t0, t1 = float(onset[0]), float(offset.max())
    keep = (perf.pedal_up > t0) & (perf.pedal_down < t1)
    down = np.maximum(perf.pedal_down[keep], t0) - t0
    up = np.minimum(perf.pedal_up[keep], t1) - t0  # held past the last note: released with it
    return Performance(onset - t0, offset - t0, perf.pitch[lo:hi], perf.velocity[lo:hi], down, up)


@dataclass(frozen=True)
class CleanPiece:
    """One piece of a source file: the performance (first onset at 0 s) and its figures; ``reason`` is
    empty for a piece that passed every screen, else the first screen it failed."""

    performance: Performance
    figures: PieceFigures
    reason: str = ""
    detail: str = ""


def screen(fig: PieceFigures, config: CleanConfig) -> tuple[str, str]:
    """(reason, detail) of the first screen ``fig`` fails, or ("", "")."""
    for name, limit in config.screens().items():
        if limit is None:
            continue
        value = getattr(fig, FIGURE_OF[name])
        failed = value < limit if name.startswith("min_") else value > limit
        if failed:
            sign = "<" if name.startswith("min_") else ">"
            return REASON_OF[name], f"{FIGURE_OF[name]} {value:g} {sign} {limit:g}"
    return "", ""


def clean_performance(perf: Performance, config: CleanConfig = CleanConfig()) -> list[CleanPiece]:
    """The pieces of one file (see the module docstring), screened ones included with their reason."""
    perf = _sorted(perf)
    if perf.num_notes == 0:
        return []
    if config.split_silence is None:
        cuts = np.empty(0, np.int64)
        gaps = np.empty(0)
    else:
        where, gap = silences(perf.onset, perf.offset)
        cuts, gaps = where[gap > config.split_silence], gap[gap > config.split_silence]
    bounds = np.concatenate(([0], cuts, [perf.num_notes]))
    out = []
    for k in range(len(bounds) - 1):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        piece = _piece(perf, lo, hi)
        lead = float(perf.onset[0]) if k == 0 else float(gaps[k - 1])
        fig = figures(piece, start=float(perf.onset[lo]), lead_silence=max(lead, 0.0))
        reason, detail = screen(fig, config)
        out.append(CleanPiece(piece, fig, reason, detail))
    return out


def describe(config: CleanConfig) -> str:
    """One line naming the cut and each screen's threshold, for dataset cards."""
    parts = [f"cut at silences > {config.split_silence:g} s" if config.split_silence is not None else "no cut"]
    for name, limit in config.screens().items():
        if limit is not None:
            sign = ">=" if name.startswith("min_") else "<="
            parts.append(f"{FIGURE_OF[name]} {sign} {limit:g}")
    return "; ".join(parts)


def is_no_clean(config: CleanConfig) -> bool:
    return all(getattr(config, f.name) is None for f in fields(config))


__all__ = [
    "FIGURE_COLUMNS", "NO_CLEAN", "REASON_OF", "CleanConfig", "CleanPiece", "PieceFigures", "clean_performance",
    "describe", "figures", "is_no_clean", "repetition", "screen", "silences",
]
