"""A judge that is not the critic: can 50 summary statistics tell a model's pieces from real windows?

``summary_features`` turns a piece (notes as ``codec.ids_to_notes`` gives them, or a real window from
``listener.real_windows``) into 50 numbers in the spirit of MGEval (Yang and Lerch 2020): the pitch-class
histogram sorted by weight (so the key does not matter), the intervals between successive onsets, note
lengths, onset gaps, velocities, the pedal, polyphony, register and re-strikes. ``two_sample_accuracy`` fits
an L2 logistic regression (torch L-BFGS, standardised features) in 5 folds, over several draws of the real
windows, and reports the out-of-fold accuracy: 50 % means the statistics cannot tell them apart.

The critic sees piano rolls through a convolutional network trained on other pieces; this judge sees only
these statistics and is fitted afresh on each comparison, so a search that fools the critic alone does not
pass it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..remote_code.codec import STEPS_PER_SECOND

FEATURE_COUNT = 50


def summary_features(notes: dict, seconds: float) -> np.ndarray:
    """The 50 statistics of one piece (times in 10-ms steps; ``seconds``: its length)."""
    start = np.asarray(notes["start"], np.int64)
    end = np.asarray(notes["end"], np.int64)
    pitch = np.asarray(notes["pitch"], np.int64)
    vel = np.asarray(notes.get("velocity", np.full(len(start), 64)), np.float64)
    out = np.zeros(FEATURE_COUNT)
    if len(start) < 2:
        return out
    order = np.lexsort((pitch, start))
    start, end, pitch, vel = start[order], end[order], pitch[order], vel[order]
    steps = max(int(round(seconds * STEPS_PER_SECOND)), 1)
    pc = np.bincount(pitch % 12, minlength=12).astype(np.float64)
    out[0:12] = np.sort(pc / pc.sum())[::-1]
    jumps = np.minimum(np.abs(np.diff(pitch)), 12)
    iv = np.bincount(jumps, minlength=13).astype(np.float64)
    out[12:25] = iv / iv.sum()
    length = np.log(np.maximum(end - start, 1) / STEPS_PER_SECOND)
    out[25:30] = [length.mean(), length.std(), *np.percentile(length, (10, 50, 90))]
    onsets = np.unique(start)
    gaps = np.log(np.maximum(np.diff(onsets), 1) / STEPS_PER_SECOND) if len(onsets) > 1 else np.zeros(1)
    out[30:33] = [gaps.mean(), gaps.std(), 1 - len(onsets) / len(start)]
    out[33:38] = [vel.mean() / 127, vel.std() / 127, *(np.percentile(vel, (10, 90)) / 127),
                  np.abs(np.diff(vel)).mean() / 127]
    times, values = np.asarray(notes.get("pedal_time", ())), np.asarray(notes.get("pedal_value", ()))
    down = np.zeros(steps + 1)
    state, at = False, 0
    for t, v in zip(times, values):
        t = int(min(max(t, 0), steps))
        down[at:t] = state
        at, state = t, v >= 64
    down[at:] = state
    changes = np.abs(np.diff(down)).sum()
    out[38:41] = [down[:steps].mean(), changes / seconds, down[:steps].sum() / max(changes / 2, 1) / steps]
    delta = np.zeros(steps + 2)
    np.add.at(delta, np.clip(start, 0, steps), 1)
    np.add.at(delta, np.clip(end, 0, steps), -1)
    keys = np.cumsum(delta)[:steps]
    out[41:48] = [keys.mean(), keys.max() / 10, keys.std(), len(start) / seconds / 10, (pitch.max() - pitch.min()) / 88,
                  pitch.mean() / 127, pitch.std() / 12]
    by_pitch = np.lexsort((start, pitch))
    ps, pp = start[by_pitch], pitch[by_pitch]
    again = (pp[1:] == pp[:-1]) & (np.diff(ps) <= 30)
    p = pc[pc > 0] / pc.sum()
    out[48:50] = [again.mean(), -(p * np.log2(p)).sum() / np.log2(12)]
    return out


def _fit_predict(x_train, y_train, x_test, l2: float = 1.0) -> np.ndarray:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.tensor((x_train - mean) / std, dtype=torch.float64)
    yt = torch.tensor(y_train, dtype=torch.float64)
    w = torch.zeros(xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * (w @ w) / (2 * len(yt))
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (torch.tensor((x_test - mean) / std, dtype=torch.float64) @ w + b).numpy()


def two_sample_accuracy(real: np.ndarray, generated: np.ndarray, folds: int = 5, draws: int = 5, seed: int = 0) -> dict:
    """Out-of-fold accuracy of a logistic regression telling ``generated`` (N, 50) from real (M >= N, 50):
    each draw takes N real rows at random, 5 folds, balanced. Returns the mean, the spread over draws, and
    the generated pieces' mean out-of-fold probability of "generated"."""
    rng = np.random.default_rng(seed)
    n = len(generated)
    accuracies, p_generated = [], np.zeros(n)
    for _ in range(draws):
        pick = rng.choice(len(real), n, replace=len(real) < n)
        x = np.concatenate([real[pick], generated])
        y = np.concatenate([np.zeros(n), np.ones(n)])
        fold = np.concatenate([rng.permutation(n) % folds, rng.permutation(n) % folds])
        logits = np.zeros(2 * n)
        for k in range(folds):
            test = fold == k
            logits[test] = _fit_predict(x[~test], y[~test], x[test])
        accuracies.append(float(((logits > 0) == (y == 1)).mean()))
        p_generated += 1 / (1 + np.exp(-logits[n:])) / draws
    return {"accuracy": round(float(np.mean(accuracies)), 4), "accuracy_std": round(float(np.std(accuracies)), 4),
            "draws": draws, "pieces": n, "p_generated": p_generated.round(4).tolist()}


__all__ = ["FEATURE_COUNT", "summary_features", "two_sample_accuracy"]
