"""Simple statistics of a piece, to compare generated samples with real music (the sample benchmarks'
measure: ``eval_samples.py``, ``bench_generate.py``, ``eval_default_model.py``; imported from this folder).

Each statistic is computed from the notes that ``codec.ids_to_notes`` gives (times in 10 ms steps),
so samples and reference pieces go through the same quantisation. Reference pieces are cut into
windows as long as the samples: statistics such as pitch range grow with length, so comparing a
30 s sample with a 3 min song would be unfair.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..remote_code.codec import (
    NOTE_OFF,
    PIANO_KEYS,
    STEPS_PER_SECOND,
    SUSTAIN_OFF,
    SUSTAIN_ON,
    TIME_SHIFT,
    VELOCITY,
    ids_to_notes,
)

STATS = ("notes_per_second", "mean_polyphony", "pitch_range", "pitch_class_entropy", "velocity_std",
         "duration_p95")
STUCK_SECONDS = 8.0  # no note of the GiantMIDI test set (80 files) is this long; samples' were up to 29 s


def note_stats(start: np.ndarray, end: np.ndarray, pitch: np.ndarray, velocity: np.ndarray) -> dict[str, float]:
    """The six statistics of one set of notes (times in steps). NaN for an empty set.

    - ``notes_per_second``: onsets per second over the span from the first onset to the last end;
    - ``mean_polyphony``: notes sounding at once, averaged over the time at least one sounds;
    - ``pitch_range``: highest minus lowest pitch, in semitones;
    - ``pitch_class_entropy``: entropy (bits) of the 12 pitch classes of the onsets (0..log2 12);
    - ``velocity_std``: standard deviation of the MIDI velocities;
    - ``duration_p95``: the 95th percentile of note durations in seconds (as written: NOTE_ON to
      NOTE_OFF, the pedal not applied), where held, "stuck" notes show.
    """
    if len(start) == 0:
        return dict.fromkeys(STATS, float("nan"))
    span = max(int(end.max() - start.min()), 1)
    # Sweep: +1 at each start, -1 at each end; time-weighted count where the count is > 0.
    t = np.concatenate((start, end))
    d = np.concatenate((np.ones(len(start)), -np.ones(len(end))))
    order = np.lexsort((d, t))  # ends before starts at the same step
    t, count = t[order], np.cumsum(d[order])
    dt = np.diff(t)
    sounding = count[:-1] > 0
    poly = float((count[:-1] * dt)[sounding].sum() / max(dt[sounding].sum(), 1))
    hist = np.bincount(pitch % 12, minlength=12).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    return {
        "notes_per_second": float(len(start) / (span / STEPS_PER_SECOND)),
        "mean_polyphony": poly,
        "pitch_range": float(pitch.max() - pitch.min()),
        "pitch_class_entropy": float(-(p * np.log2(p)).sum()),
        "velocity_std": float(np.std(velocity)),
        "duration_p95": float(np.percentile(end - start, 95) / STEPS_PER_SECOND),
    }


def long_notes(pieces: Iterable, seconds: float = STUCK_SECONDS) -> dict[str, float]:
    """Stuck notes over a set of pieces (event ids): how many notes, the share longer than
    ``seconds``, and the longest note in seconds (durations as written, the pedal not applied)."""
    durations = [np.asarray(n["end"] - n["start"]) / STEPS_PER_SECOND for n in map(ids_to_notes, pieces)]
    d = np.concatenate(durations) if durations else np.zeros(0)
    return {"notes": int(len(d)), "share_longer": float((d > seconds).mean()) if len(d) else float("nan"),
            "longest_seconds": float(d.max()) if len(d) else float("nan"), "limit_seconds": seconds}


def ids_stats(ids) -> dict[str, float]:
    """Statistics of a piece given as event ids."""
    n = ids_to_notes(ids)
    return note_stats(n["start"], n["end"], n["pitch"], n["velocity"])


def window_stats(ids, seconds: float, min_notes: int = 10) -> list[dict[str, float]]:
    """Statistics of consecutive ``seconds``-long windows of a piece, from its first onset.

    Notes belong to the window of their onset (ends are clipped to it); windows with fewer than
    ``min_notes`` notes (silence, a trailing fragment) are left out.
    """
    n = ids_to_notes(ids)
    if not len(n["start"]):
        return []
    width = int(round(seconds * STEPS_PER_SECOND))
    first = int(n["start"].min())
    which = (n["start"] - first) // width
    out = []
    for w in range(int(which.max()) + 1):
        sel = which == w
        if sel.sum() < min_notes:
            continue
        lo, hi = first + w * width, first + (w + 1) * width
        end = np.minimum(n["end"][sel], hi)
        out.append(note_stats(n["start"][sel] - lo, end - lo, n["pitch"][sel], n["velocity"][sel]))
    return out


def band_report(
    samples: Iterable[dict[str, float]], reference: Iterable[dict[str, float]], low: float = 5, high: float = 95
) -> dict[str, dict[str, float]]:
    """For each statistic: the reference's [low, high] percentile band and the fraction of samples inside."""
    samples, reference = list(samples), list(reference)
    report = {}
    for k in STATS:
        ref = np.array([r[k] for r in reference], dtype=np.float64)
        ref = ref[np.isfinite(ref)]
        val = np.array([s[k] for s in samples], dtype=np.float64)
        lo, hi = np.percentile(ref, [low, high])
        inside = np.isfinite(val) & (val >= lo) & (val <= hi)
        report[k] = {
            "band_low": float(lo), "band_high": float(hi),
            "sample_median": float(np.nanmedian(val)) if np.isfinite(val).any() else float("nan"),
            "reference_median": float(np.median(ref)),
            "inside": int(inside.sum()), "total": int(len(val)),
            "fraction_inside": float(inside.mean()) if len(val) else float("nan"),
        }
    return report


def inside_all(samples: Iterable[dict[str, float]], report: dict[str, dict[str, float]]) -> float:
    """The fraction of samples inside the band on every statistic at once."""
    samples = list(samples)
    if not samples:
        return float("nan")
    ok = [all(report[k]["band_low"] <= s[k] <= report[k]["band_high"] for k in STATS) for s in samples]
    return float(np.mean(ok))


def order_faults(events, keys: tuple[int, int] = PIANO_KEYS) -> list[int]:
    """Positions in ``events`` (event ids, no special tokens) where the encoder's order breaks (SPEC rules
    5-8): what ``codec.encode`` could not have written there. Checked token by token, apart from
    ``CanonicalOrderLogitsProcessor``, so it can judge it: an encoded piece has none."""
    faults, sounding, velocity, last = [], set(), None, None
    phase, off_top, on_top = 0, -1, -1
    for i, t in enumerate(int(x) for x in events):
        after_velocity = last is not None and VELOCITY <= last < SUSTAIN_ON
        if TIME_SHIFT <= t < VELOCITY:  # a gap's remainder is its last shift
            ok = not after_velocity and not (last is not None and TIME_SHIFT <= last < VELOCITY - 1)
            phase, off_top, on_top = 0, -1, -1
        elif NOTE_OFF <= t < TIME_SHIFT:  # the step's NOTE_OFFs first, ascending, of sounding keys
            p = t - NOTE_OFF
            ok = phase <= 1 and p > off_top and p in sounding and not after_velocity
            phase, off_top = 1, p
            sounding.discard(p)
        elif t in (SUSTAIN_OFF, SUSTAIN_ON):  # then at most one pedal change
            ok = phase <= 1 and not after_velocity
            phase = 2 if t == SUSTAIN_OFF else 3
        elif VELOCITY <= t < SUSTAIN_ON:  # a velocity only when it changes
            ok, velocity, phase = t != velocity, t, 4
        elif t < NOTE_OFF:  # then the onsets, ascending, after a velocity, of silent keys on the keyboard
            ok = velocity is not None and t > on_top and t not in sounding and keys[0] <= t <= keys[1]
            phase, on_top = 4, t
            sounding.add(t)
        else:
            ok = True
        if not ok:
            faults.append(i)
        last = t
    return faults


__all__ = ["STATS", "STUCK_SECONDS", "band_report", "ids_stats", "inside_all", "long_notes", "note_stats",
           "order_faults", "window_stats"]
