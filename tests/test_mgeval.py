"""The MGEval distances and the memorisation check (hf_midi.evaluation.mgeval), on windows of the committed
POP909 fixtures and on sets made to differ from them."""

import sys

import numpy as np
from conftest import POP909_FIXTURES, ROOT

from hf_midi.data.augmentation import transpose_ids
from hf_midi.evaluation import mgeval
from hf_midi.remote_code import codec


def windows(ids: np.ndarray, size: int = 400) -> list[np.ndarray]:
    return [ids[i : i + size] for i in range(0, len(ids) - size, size)]


def fixture_windows() -> list[np.ndarray]:
    return [w for f in POP909_FIXTURES for w in windows(codec.encode(f))]


def test_hand_built_features():
    # C4 then E4 then G4, 0.5 s apart, each 0.25 s long, velocity 64.
    ids = [codec.VELOCITY + 15]
    for p in (60, 64, 67):
        ids += [p, codec.TIME_SHIFT + 24, 128 + p, codec.TIME_SHIFT + 24]
    f = mgeval.piece_features(ids)
    assert np.allclose(f["pitch_class_histogram"][[0, 4, 7]], 1 / 3) and f["pitch_class_histogram"].sum() == 1
    t = f["pitch_class_transitions"].reshape(12, 12)
    assert t[0, 4] == t[4, 7] == 0.5 and t.sum() == 1
    assert f["inter_onset_intervals"].argmax() == np.searchsorted(mgeval.IOI_EDGES, 50) - 1  # 50 steps
    assert f["velocities"][15] == 1.0  # bin 16 (v = 62)
    assert mgeval.piece_features([60, 128 + 60]) is None  # one note: no intervals


def test_a_set_against_itself_overlaps_and_against_a_different_set_does_not():
    real = fixture_windows()
    a, b = real[0::2], real[1::2]  # two halves drawn from every song
    same = mgeval.compare_sets(a, b)
    assert same["mean_overlap"] > 0.9 and same["mean_kl"] < 0.05
    # The same windows two octaves up with one loudness: pitch classes and rhythm unchanged, velocities apart.
    other = [np.where(w < 256, np.clip(w + 24, None, np.where(w < 128, 127, 255)), w) for w in b]
    other = [np.where((w >= codec.VELOCITY) & (w < codec.SUSTAIN_ON), codec.VELOCITY + 31, w) for w in other]
    apart = mgeval.compare_sets(a, other)
    assert apart["velocities"]["overlap"] < 0.2 and apart["velocities"]["kl"] > 5
    assert apart["pitch_class_histogram"] == same["pitch_class_histogram"]
    # A transposition moves pitch classes and keeps the rhythm.
    moved = mgeval.compare_sets(a, [transpose_ids(w, 5) for w in b])
    assert moved["pitch_class_histogram"]["overlap"] < same["pitch_class_histogram"]["overlap"] - 0.03
    assert moved["inter_onset_intervals"] == same["inter_onset_intervals"]


def test_copies_are_found_and_new_notes_are_not():
    pieces = [codec.encode(f) for f in POP909_FIXTURES]
    known = mgeval.training_ngrams(pieces[1:])
    assert mgeval.copied_share(pieces[1][:600], known) == 1.0  # a slice of a training piece
    rng = np.random.default_rng(0)
    random_notes = np.ravel([[p, codec.TIME_SHIFT + 9, 128 + p] for p in rng.integers(40, 90, 200)])
    assert mgeval.copied_share(random_notes, known) < 0.02
    report = mgeval.memorisation([pieces[0], pieces[1]], known)
    assert report["pieces"] == 2 and report["max"] == 1.0 and report["mean"] < 1.0
    # one known figure played over and over: every 8-gram is known, but only one distinct one
    figure = [p for p in (60, 62, 64, 65, 67, 69, 71, 72)]
    loop = np.ravel([[p, codec.TIME_SHIFT + 9, 128 + p] for p in figure * 10 + list(rng.integers(40, 90, 30))])
    known_loop = mgeval.training_ngrams([np.ravel([[p, codec.TIME_SHIFT + 9, 128 + p] for p in figure * 2])])
    assert mgeval.copied_share(loop, known_loop) > 0.6
    assert mgeval.copied_share(loop, known_loop, distinct=True) < 0.3


def test_eval_samples_reads_each_arm_and_names_a_bad_one():
    import pytest

    sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmark script itself, read as its users run it
    from eval_samples import model_arm

    assert model_arm("default@6,t=1.1,p=0.98") == ("default", {"max_note_seconds": 6.0, "temperature": 1.1,
                                                               "top_p": 0.98})
    assert model_arm("base@off") == ("base", {"max_note_seconds": None})
    assert model_arm("runs/x") == ("runs/x", {})
    assert model_arm("base@6,rules=off") == ("base", {"max_note_seconds": 6.0, "sound_at_once": False,
                                                     "allow_early_end": True})
    with pytest.raises(ValueError, match="unknown setting 'rules=maybe'"):
        model_arm("base@6,rules=maybe")
    with pytest.raises(ValueError, match="unknown setting 'k=5'"):
        model_arm("default@6,k=5")
    with pytest.raises(ValueError, match="not a number"):
        model_arm("default@six")
