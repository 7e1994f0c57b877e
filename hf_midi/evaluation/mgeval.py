"""Distances between two sets of pieces that do not hang on one band: the MGEval method (Yang and Lerch,
"On the evaluation of generative models in music", Neural Computing and Applications 32, 2020), in
numpy, plus a memorisation check. Imported from this folder by ``eval_samples.py``.

For each feature, every piece becomes a vector (a normalised histogram, or a 12 x 12 matrix):

- ``pitch_class_histogram``: onsets per pitch class (12);
- ``pitch_class_transitions``: pitch class of an onset -> pitch class of the next onset (12 x 12);
- ``inter_onset_intervals``: gaps between successive distinct onset times, in 16 log-spaced bins from
  10 ms to 4 s;
- ``note_lengths``: NOTE_ON to NOTE_OFF, in 16 log-spaced bins from 10 ms to 16 s;
- ``velocities``: the 32 velocity bins of the vocabulary.

Then, as the paper does: the *intra-set* distances (Euclidean, between every two pieces of the real
set A) and the *inter-set* distances (between every piece of the generated set B and every piece of
A) are smoothed by a Gaussian kernel density estimate (Scott's bandwidth) and compared: the
**overlapping area** of the two densities (1: B sits among A as A's own pieces do; 0: apart) and
the **KL divergence** KL(intra_A || inter) in nats (0: the same). Both on a grid, so no scipy.

Memorisation: the share of a piece's 8-note pitch n-grams (the onset pitches in order) that occur
anywhere in a training set, against the same share for real pieces the model never saw (the floor
that shared idioms, scales and repeated patterns give by themselves).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..remote_code.codec import ids_to_notes

FEATURES = ("pitch_class_histogram", "pitch_class_transitions", "inter_onset_intervals", "note_lengths",
            "velocities")
IOI_EDGES = np.geomspace(1, 400, 17)  # steps (10 ms .. 4 s)
LENGTH_EDGES = np.geomspace(1, 1600, 17)  # steps (10 ms .. 16 s)
NGRAM = 8


def _normalised(h: np.ndarray) -> np.ndarray:
    total = h.sum()
    return h / total if total > 0 else h.astype(np.float64)


def piece_features(ids) -> dict[str, np.ndarray] | None:
    """The five feature vectors of one piece given as event ids (None: fewer than two notes)."""
    n = ids_to_notes(np.asarray(ids))
    if len(n["start"]) < 2:
        return None
    order = np.lexsort((n["pitch"], n["start"]))
    start, pitch = n["start"][order], n["pitch"][order]
    pc = pitch % 12
    trans = np.zeros((12, 12))
    np.add.at(trans, (pc[:-1], pc[1:]), 1)
    onsets = np.unique(start)
    ioi = np.diff(onsets)
    return {
        "pitch_class_histogram": _normalised(np.bincount(pc, minlength=12).astype(np.float64)),
        "pitch_class_transitions": _normalised(trans).ravel(),
        "inter_onset_intervals": _normalised(np.histogram(np.clip(ioi, 1, 399), IOI_EDGES)[0].astype(np.float64)),
        "note_lengths": _normalised(np.histogram(np.clip(n["end"] - n["start"], 1, 1599),
                                                 LENGTH_EDGES)[0].astype(np.float64)),
        "velocities": _normalised(np.bincount((np.asarray(n["velocity"]) - 1) // 4, minlength=32)[:32]
                                  .astype(np.float64)),
    }


def feature_sets(pieces: Iterable) -> dict[str, np.ndarray]:
    """feature -> (pieces, dims) array over the pieces that have notes."""
    feats = [f for f in map(piece_features, pieces) if f is not None]
    return {k: np.stack([f[k] for f in feats]) for k in FEATURES}


def _pairwise(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances: within ``a`` (each pair once) or between every row of ``a`` and of ``b``."""
    if b is None:
        d = np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))
        return d[np.triu_indices(len(a), 1)]
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).ravel()


def _kde(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian KDE of ``x`` on ``grid`` with Scott's bandwidth, normalised on the grid."""
    sd = x.std(ddof=1) if len(x) > 1 else 0.0
    bw = max(sd * len(x) ** (-1 / 5), 1e-3 * (grid[-1] - grid[0]) + 1e-12)
    dens = np.exp(-0.5 * ((grid[:, None] - x[None, :]) / bw) ** 2).sum(1)
    return dens / (dens.sum() * (grid[1] - grid[0]))


def overlap_and_kl(intra: np.ndarray, inter: np.ndarray, points: int = 1000) -> tuple[float, float]:
    """(overlapping area, KL(intra || inter) in nats) of the two distance distributions."""
    lo = min(intra.min(), inter.min())
    hi = max(intra.max(), inter.max())
    pad = 0.1 * (hi - lo) + 1e-9
    grid = np.linspace(lo - pad, hi + pad, points)
    p, q = _kde(intra, grid), _kde(inter, grid)
    dx = grid[1] - grid[0]
    overlap = float(np.minimum(p, q).sum() * dx)
    eps = 1e-12
    kl = float((p * np.log((p + eps) / (q + eps))).sum() * dx)
    return overlap, kl


def compare_sets(real: Sequence, generated: Sequence, max_pieces: int = 200, seed: int = 0) -> dict:
    """MGEval figures of ``generated`` against ``real`` (both lists of event-id pieces), per feature:
    overlapping area, KL divergence, and the mean intra- and inter-set distances. At most ``max_pieces``
    of each set (a seeded choice), so the pairs stay in memory."""
    rng = np.random.default_rng(seed)

    def pick(xs):
        xs = list(xs)
        return [xs[i] for i in sorted(rng.choice(len(xs), max_pieces, replace=False))] if len(xs) > max_pieces else xs

    a, b = feature_sets(pick(real)), feature_sets(pick(generated))
    out = {}
    for k in FEATURES:
        intra, inter = _pairwise(a[k]), _pairwise(b[k], a[k])
        oa, kl = overlap_and_kl(intra, inter)
        out[k] = {"overlap": round(oa, 4), "kl": round(kl, 4), "intra_mean": round(float(intra.mean()), 4),
                  "inter_mean": round(float(inter.mean()), 4)}
    out["mean_overlap"] = round(float(np.mean([out[k]["overlap"] for k in FEATURES])), 4)
    out["mean_kl"] = round(float(np.mean([out[k]["kl"] for k in FEATURES])), 4)
    out["pieces"] = {"real": int(len(a[FEATURES[0]])), "generated": int(len(b[FEATURES[0]]))}
    return out


# --------------------------------------------------------------------------- memorisation
def _pitch_sequence(ids) -> np.ndarray:
    n = ids_to_notes(np.asarray(ids))
    order = np.lexsort((n["pitch"], n["start"]))
    return np.asarray(n["pitch"])[order].astype(np.uint64)


def _ngram_hashes(pitches: np.ndarray, n: int = NGRAM) -> np.ndarray:
    """One uint64 per n-gram of pitches (7 bits a pitch: 8 pitches fit 56 bits exactly)."""
    if len(pitches) < n:
        return np.zeros(0, np.uint64)
    h = np.zeros(len(pitches) - n + 1, np.uint64)
    for j in range(n):
        h = (h << np.uint64(7)) | pitches[j : len(pitches) - n + 1 + j]
    return h


def training_ngrams(pieces: Iterable, n: int = NGRAM) -> np.ndarray:
    """The sorted distinct pitch n-grams of a training set (event-id pieces)."""
    parts = [np.unique(_ngram_hashes(_pitch_sequence(ids), n)) for ids in pieces]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)


def _found(h: np.ndarray, known: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(known, h)
    return (pos < len(known)) & (known[np.minimum(pos, len(known) - 1)] == h)


def copied_share(ids, known: np.ndarray, n: int = NGRAM, distinct: bool = False) -> float | None:
    """The share of a piece's pitch n-grams found in ``known`` (None: too few notes). ``distinct``: of its
    distinct n-grams, so that one common figure repeated many times counts once."""
    h = _ngram_hashes(_pitch_sequence(ids), n)
    if distinct:
        h = np.unique(h)
    if not len(h):
        return None
    return float(_found(h, known).mean())


def memorisation(pieces: Iterable, known: np.ndarray, n: int = NGRAM) -> dict:
    """Copied shares over a set of pieces: of all their 8-grams (``mean``, ``median``, ``p90``, ``max``) and
    of their distinct 8-grams (``distinct_mean``, ``distinct_max``)."""
    pieces = list(pieces)
    shares = [s for s in (copied_share(ids, known, n) for ids in pieces) if s is not None]
    if not shares:
        return {"pieces": 0}
    distinct = [s for s in (copied_share(ids, known, n, distinct=True) for ids in pieces) if s is not None]
    return {"pieces": len(shares), "mean": round(float(np.mean(shares)), 4),
            "median": round(float(np.median(shares)), 4), "max": round(float(np.max(shares)), 4),
            "p90": round(float(np.percentile(shares, 90)), 4),
            "distinct_mean": round(float(np.mean(distinct)), 4), "distinct_max": round(float(np.max(distinct)), 4)}


__all__ = ["FEATURES", "compare_sets", "copied_share", "memorisation", "overlap_and_kl", "piece_features",
           "training_ngrams"]
