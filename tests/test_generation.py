"""Generation processors, criteria and the sliding window, with tiny random GPT-2 models.

The tiny model and its folder come from conftest (``tiny_model``, ``save_tiny_model``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import POP909_FIXTURES, save_tiny_model, tiny_model  # noqa: F401 (save_tiny_model: used by importers)
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import (
    GPT2LMHeadModel,
    LogitsProcessorList,
    StoppingCriteriaList,
)

from hf_midi.remote_code.arguments import GenerationError, check_generation_args
from hf_midi.remote_code.codec import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SUSTAIN_OFF,
    SUSTAIN_ON,
    TIME_SHIFT,
    VELOCITY,
    VOCAB_SIZE,
    decode,
    encode,
    ids_to_notes,
    shift_steps,
)
from hf_midi.remote_code.generation import cut_events, generate_music, music_generation_config
from hf_midi.remote_code.performance_state import PerformanceState
from hf_midi.remote_code.processors import (
    OPENING_STEPS,
    MusicProgressCriteria,
    MusicTimeLimitLogitsProcessor,
    MusicTimeStoppingCriteria,
    PerformanceGrammarLogitsProcessor,
    SoundAtOnceLogitsProcessor,
)


# --------------------------------------------------------------------------- tiny models
def fixed_distribution_model(logits: torch.Tensor) -> GPT2LMHeadModel:
    """A GPT-2 whose next-token logits are ``logits`` at every step, whatever the input: the final
    layer norm outputs a constant one-hot vector, so the tied output layer reads column 0 of wte."""
    model = tiny_model(vocab_size=len(logits))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.transformer.wte.weight[:, 0] = logits
    return model


# --------------------------------------------------------------------------- a reference grammar
class Walker:
    """The grammar rules, one token at a time, in plain Python (the reference for the tensors)."""

    def __init__(self):
        self.sounding, self.pedal, self.last, self.elapsed = set(), False, None, 0

    def allowed(self, t: int) -> bool:
        if t >= VOCAB_SIZE or t in (PAD_ID, BOS_ID):
            return False
        if 128 <= t < 256:
            return t - 128 in self.sounding
        if VELOCITY <= t < SUSTAIN_ON:
            return not (self.last is not None and VELOCITY <= self.last < SUSTAIN_ON)
        if t == SUSTAIN_OFF:
            return self.pedal
        if t == SUSTAIN_ON:
            return not self.pedal
        return True

    def step(self, t: int, count_time: bool = True) -> None:
        if t < 128:
            self.sounding.add(t)
        elif t < 256:
            self.sounding.discard(t - 128)
        elif t < VELOCITY and count_time:
            self.elapsed += t - 255
        elif t == SUSTAIN_ON:
            self.pedal = True
        elif t == SUSTAIN_OFF:
            self.pedal = False
        self.last = t


def invalid_tokens(ids, start: int = 1) -> list[tuple[int, int]]:
    """(position, id) of every id after ``start`` that the grammar forbids; stops at <eos>."""
    w, bad = Walker(), []
    for i, t in enumerate(ids):
        if t == EOS_ID and i >= start:
            break
        if i >= start and not w.allowed(t):
            bad.append((i, t))
        w.step(t)
    return bad


event_ids = st.integers(0, SUSTAIN_OFF)


# --------------------------------------------------------------------------- state
@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(event_ids, min_size=12, max_size=12), min_size=1, max_size=3), st.integers(0, 11))
def test_state_incremental_equals_rebuild_and_reference(rows, start):
    ids = torch.tensor([[BOS_ID] + r for r in rows])
    state = PerformanceState(start=start)
    for length in range(1, ids.shape[1] + 1):
        state.sync(ids[:, :length])  # one token a call: the incremental path
    fresh = PerformanceState(start=start).sync(ids)  # from scratch
    for b, r in enumerate(ids.tolist()):
        w = Walker()
        for i, t in enumerate(r):
            w.step(t, count_time=i >= start)
        for s in (state, fresh):
            assert set(torch.nonzero(s.sounding[b]).flatten().tolist()) == w.sounding
            assert bool(s.pedal[b]) == w.pedal
            assert int(s.elapsed[b]) == w.elapsed
            assert int(s.last[b]) == r[-1]
            assert bool(s.noted[b]) == any(t < 128 for t in r)


def test_state_history_counts_like_one_sequence():
    ids = torch.tensor([[BOS_ID, 60, 300, 62, 388, 350, 188, 320]])
    state = PerformanceState(start=2)
    state.set_history(ids[:, :5])
    state.sync(ids[:, 5:])
    whole = PerformanceState(start=2).sync(ids)
    assert torch.equal(state.sounding, whole.sounding) and torch.equal(state.elapsed, whole.elapsed)
    assert state.sounding[0].nonzero().flatten().tolist() == [62] and int(state.elapsed[0]) == 45 + 95 + 65


# --------------------------------------------------------------------------- grammar
@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.lists(st.lists(event_ids, min_size=n, max_size=n), min_size=3,
                                                     max_size=3)),
       st.integers(0, 2**32 - 1), st.sampled_from([VOCAB_SIZE, 448]))
def test_grammar_allows_exactly_the_valid_tokens(rows, seed, vocab):
    """Property: after the processor, a token has a finite score iff the reference grammar allows
    it, and allowed tokens keep their score."""
    ids = torch.tensor([[BOS_ID] + r for r in rows])
    scores = torch.from_numpy(np.random.default_rng(seed).normal(0, 5, (3, vocab)).astype(np.float32))
    out = PerformanceGrammarLogitsProcessor()(ids, scores.clone())
    for b, r in enumerate(ids.tolist()):
        w = Walker()
        for t in r:
            w.step(t)
        allowed = torch.tensor([w.allowed(t) for t in range(vocab)])
        assert torch.equal(torch.isfinite(out[b]), allowed)
        assert torch.equal(out[b][allowed], scores[b][allowed])


@pytest.mark.parametrize("vocab", [VOCAB_SIZE, 448])
def test_grammar_in_generate_never_emits_an_invalid_token(vocab):
    """Sampling from a random model (a third of whose draws would be invalid) through generate()."""
    model = tiny_model(vocab_size=vocab, seed=3)
    torch.manual_seed(0)
    out = model.generate(torch.full((4, 1), BOS_ID), max_new_tokens=250, do_sample=True, top_k=0,
                         logits_processor=LogitsProcessorList([PerformanceGrammarLogitsProcessor()]))
    for row in out.tolist():
        assert invalid_tokens(row) == []
    torch.manual_seed(0)  # the control: without it, the same model emits invalid tokens
    raw = model.generate(torch.full((4, 1), BOS_ID), max_new_tokens=250, do_sample=True, top_k=0)
    assert sum(len(invalid_tokens(row)) for row in raw.tolist()) > 20


# --------------------------------------------------------------------------- time
@pytest.mark.parametrize("left", [1, 37, 100, 101, 0, -5])
def test_time_limit_folds_long_shifts_onto_the_exact_one(left):
    limit = 500
    history = [BOS_ID] + [TIME_SHIFT + 99] * ((limit - left) // 100) + (
        [TIME_SHIFT - 1 + (limit - left) % 100] if (limit - left) % 100 else [])
    ids = torch.tensor([history])
    state = PerformanceState(start=1).sync(ids)
    assert int(state.elapsed[0]) == limit - left
    scores = torch.randn(1, VOCAB_SIZE)
    out = MusicTimeLimitLogitsProcessor(limit / 100, state=PerformanceState(start=1), allow_early_end=True)(
        ids, scores.clone())
    if left <= 0:  # at or past the limit (only inside a drafted run): the piece may only end
        assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [EOS_ID]
        return
    k = np.arange(1, 101)
    before = torch.softmax(scores, -1)[0, TIME_SHIFT:VELOCITY].numpy()
    after = torch.softmax(out, -1)[0, TIME_SHIFT:VELOCITY].numpy()
    assert torch.equal(out[0, :TIME_SHIFT], scores[0, :TIME_SHIFT])
    assert torch.equal(out[0, VELOCITY:], scores[0, VELOCITY:])
    assert np.all(after[k > left] == 0)
    np.testing.assert_allclose(after[k < left], before[k < left], rtol=1e-5)
    if 1 <= left <= 100:
        np.testing.assert_allclose(after[left - 1], before[k >= left].sum(), rtol=1e-5)
    assert math.isclose(float(torch.softmax(out, -1).sum()), 1.0, rel_tol=1e-5)


def test_asking_for_seconds_never_gives_an_empty_piece():
    """<eos> is forbidden until some music time has passed (a model whose favourite first event is <eos>
    still plays), and allowed from then on."""
    scores = torch.zeros(2, VOCAB_SIZE)
    scores[:, EOS_ID] = 50.0
    ids = torch.tensor([[BOS_ID, 60], [BOS_ID, TIME_SHIFT + 9]])  # row 0: a note, no time yet; row 1: 100 ms
    state = PerformanceState(start=1)
    proc = MusicTimeLimitLogitsProcessor(30.0, state=state, allow_early_end=True)
    out = proc(ids, scores.clone())
    assert out[0, EOS_ID] == -math.inf and out[1, EOS_ID] == 50.0
    assert torch.equal(out[0, :EOS_ID], scores[0, :EOS_ID])  # nothing else moves
    strict = MusicTimeLimitLogitsProcessor(30.0, state=PerformanceState(start=1))  # the default: no early end
    assert (strict(ids, scores.clone())[:, EOS_ID] == -math.inf).all()
    model = fixed_distribution_model(scores[0])  # <eos> first, every step, unless forbidden
    torch.manual_seed(0)
    [piece] = generate_music(model, torch.tensor([[BOS_ID]]), seconds=1.0, max_new_tokens=400,
                             allow_early_end=True).tolist()
    assert any(TIME_SHIFT <= t < VELOCITY for t in piece)  # it played for some time before it ended


def _silence_and_end_model() -> GPT2LMHeadModel:
    """A model that wants to wait (a 1-s TIME_SHIFT) or end (<eos>) at every step: the two habits
    GiantMIDI's recordings teach."""
    logits = torch.zeros(VOCAB_SIZE)
    logits[TIME_SHIFT + 99] = 8.0
    logits[EOS_ID] = 8.0
    return fixed_distribution_model(logits)


def test_sound_at_once_forbids_time_and_eos_until_the_first_note():
    scores = torch.zeros(4, VOCAB_SIZE)
    ids = torch.tensor([[BOS_ID, BOS_ID], [BOS_ID, VELOCITY + 3], [BOS_ID, SUSTAIN_ON], [BOS_ID, 60]])
    out = SoundAtOnceLogitsProcessor(PerformanceState(start=1))(ids, scores.clone())
    for row in range(3):  # no note yet: neither time nor the end may come; notes, velocity, pedal may
        assert (out[row, TIME_SHIFT:VELOCITY] == -math.inf).all() and out[row, EOS_ID] == -math.inf
        assert (out[row, :TIME_SHIFT] == 0).all() and (out[row, VELOCITY:EOS_ID] == 0).all()
    # one note has sounded, at step 0 of a piece from scratch: the next onset comes within 0.6 s
    assert torch.equal(out[3, :TIME_SHIFT], scores[3, :TIME_SHIFT]) and out[3, EOS_ID] == 0
    assert torch.isfinite(out[3, TIME_SHIFT:TIME_SHIFT + OPENING_STEPS]).all()
    assert (out[3, TIME_SHIFT + OPENING_STEPS:VELOCITY] == -math.inf).all()
    # the longer shifts' probability lands on the one of 0.6 s
    assert out[3, TIME_SHIFT + OPENING_STEPS - 1] == pytest.approx(math.log(100 - OPENING_STEPS + 1))


def test_the_second_onset_of_a_piece_from_scratch_comes_within_0_6_s():
    scores = torch.zeros(3, VOCAB_SIZE)
    lone = [BOS_ID, SUSTAIN_ON, VELOCITY + 3, 60, TIME_SHIFT + 59]  # 0.6 s after the first onset, nothing else
    ids = torch.tensor([lone, [BOS_ID, VELOCITY + 3, 60, 64, TIME_SHIFT + 59], lone])
    out = SoundAtOnceLogitsProcessor(PerformanceState(start=1))(ids, scores.clone())
    assert (out[0, TIME_SHIFT:VELOCITY] == -math.inf).all() and out[0, EOS_ID] == -math.inf  # time waits
    assert (out[0, :TIME_SHIFT] == 0).all()  # for an onset (a NOTE_OFF or the pedal may come first)
    assert torch.equal(out[1], scores[1])  # two onsets: the opening is not a lone note
    # a prompt with notes has opened already: the same ids with the first note in the prompt change nothing
    prompted = SoundAtOnceLogitsProcessor(PerformanceState(start=4))(ids[2:], scores[2:].clone())
    assert torch.equal(prompted[0], scores[2])
    # composed: a model that would hold its first note alone for seconds strikes the next by 0.6 s
    model = _silence_and_end_model()
    for seed in range(3):
        torch.manual_seed(seed)
        [piece] = generate_music(model, torch.tensor([[BOS_ID]]), seconds=3.0).tolist()
        starts = np.sort(ids_to_notes(piece)["start"])  # a chord's second note is a second onset too
        assert starts[0] == 0 and starts[1] <= OPENING_STEPS, starts[:3]


def test_the_two_rules_make_a_waiting_model_play_at_once_and_last_as_asked():
    model = _silence_and_end_model()
    torch.manual_seed(0)
    [piece] = generate_music(model, torch.tensor([[BOS_ID]]), seconds=5.0).tolist()
    first_note = next(i for i, t in enumerate(piece) if t < 128)
    assert all(not TIME_SHIFT <= t < VELOCITY for t in piece[:first_note])  # no time before the first note
    assert EOS_ID not in piece
    assert int(shift_steps([t for t in piece if t < PAD_ID]).sum()) == 500  # all 5 s
    notes = ids_to_notes(piece)
    assert notes["start"][0] == 0
    # Without the rules, the same model waits or ends at once: what the rules change.
    torch.manual_seed(0)
    [loose] = generate_music(model, torch.tensor([[BOS_ID]]), seconds=5.0, sound_at_once=False,
                             allow_early_end=True).tolist()
    assert TIME_SHIFT <= loose[1] < VELOCITY or loose[1] == EOS_ID


def test_sound_at_once_leaves_a_prompt_with_notes_alone():
    model = tiny_model(seed=2)
    prompt = torch.tensor([[BOS_ID, VELOCITY + 20, 60, TIME_SHIFT + 49, 60 + 128]])
    runs = []
    for rule in (True, False):
        torch.manual_seed(3)
        runs.append(generate_music(model, prompt, seconds=3.0, sound_at_once=rule))
    assert torch.equal(runs[0], runs[1])


def test_time_limit_ends_every_row_at_exactly_the_limit_or_at_eos():
    model = tiny_model(seed=1)
    torch.manual_seed(0)
    out = generate_music(model, torch.full((6, 1), BOS_ID), seconds=7.5)
    ended_by_eos = 0
    for row in out.tolist():
        body = [t for t in row[1:] if t not in (PAD_ID, EOS_ID)]
        steps = int(shift_steps(body).sum())
        if EOS_ID in row:
            ended_by_eos += 1
            assert steps <= 750
        else:
            assert steps == 750  # exactly the limit: the last shift was clipped onto it
            assert row[len(body)] in range(TIME_SHIFT, VELOCITY)  # it ended on that shift
        assert decode(row).end() <= 7500  # and so does the MIDI (10 ticks a step)
    assert ended_by_eos < 6


def test_stop_at_eos_pads_the_row_while_others_go_on():
    # Every step: <eos> with probability ~3%, else a uniform event: rows end at different times.
    logits = torch.full((VOCAB_SIZE,), -1e4)
    logits[:SUSTAIN_ON] = 0.0
    logits[EOS_ID] = math.log(0.03 * SUSTAIN_ON / 0.97)
    model = fixed_distribution_model(logits)
    torch.manual_seed(1)
    config = music_generation_config(model, top_k=0)  # no top-k: keep the 3% as it is
    out = generate_music(model, torch.full((4, 1), BOS_ID), seconds=None, max_new_tokens=120, grammar=False,
                         generation_config=config)
    lengths = []
    for row in out.tolist():
        if EOS_ID in row:
            e = row.index(EOS_ID)
            assert all(t == PAD_ID for t in row[e + 1:])
            lengths.append(e + 1)
        else:
            assert len(row) == 121 and PAD_ID not in row
            lengths.append(121)
    assert len(set(lengths)) > 1 and min(lengths) < 121  # one stopped, another went on


def test_progress_and_stop_event():
    import threading

    model = tiny_model(seed=2)
    stop, seen = threading.Event(), []

    def progress(done, total):
        seen.append((done, total))
        if done >= 3.0:
            stop.set()

    torch.manual_seed(0)
    out = generate_music(model, torch.full((2, 1), BOS_ID), seconds=60.0, progress=progress, stop_event=stop)
    done = [d for d, _ in seen]
    assert done == sorted(done) and all(t == 60.0 for _, t in seen)
    assert 3.0 <= done[-1] < 60.0  # stopped early, and reported where
    for row in out.tolist():
        made = int(shift_steps([t for t in row if t < PAD_ID]).sum())
        assert made < 6000  # stopped early
        assert made >= 300 or EOS_ID in row  # a row that did not end itself made >= 3 s


# --------------------------------------------------------------------------- sliding window
def test_sliding_window_goes_past_the_context_and_keeps_state(monkeypatch):
    model = tiny_model(n_positions=64, seed=4)
    calls = []
    real_generate = model.generate

    def spy(input_ids, **kwargs):
        calls.append((input_ids.shape[1], kwargs["generation_config"].max_new_tokens))
        return real_generate(input_ids, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    torch.manual_seed(5)
    out = generate_music(model, torch.full((2, 1), BOS_ID), seconds=None, max_new_tokens=200, weights="float32",
                         sound_at_once=False)
    assert calls[0] == (1, 63)  # fill the context, then slide by about half of it (quiet_cut: +- 8)
    assert len(calls) >= 3 and all(24 <= c <= 40 and c + n == 64 for c, n in calls[1:-1])
    assert 24 <= calls[-1][0] <= 40
    for row in out.tolist():
        assert invalid_tokens(row) == []  # NOTE_OFFs are checked against the whole piece, not the window
    # The first window is one plain generate() call: same seed, same tokens (float32: the exact format).
    torch.manual_seed(5)
    grammar = LogitsProcessorList([PerformanceGrammarLogitsProcessor()])
    first = real_generate(torch.full((2, 1), BOS_ID), generation_config=music_generation_config(model),
                          max_new_tokens=63, logits_processor=grammar)
    n = first.shape[1]
    assert torch.equal(out[:, :n], first)


def test_the_window_slides_where_the_fewest_notes_sound():
    """A window's new context starts where no note is left open if it can: a NOTE_ON left in the
    history is one the model can no longer see, so nothing would remind it to end the note."""
    from hf_midi.remote_code.codec import keys_down
    from hf_midi.remote_code.generation import quiet_cut

    shift = TIME_SHIFT + 9
    held = [60, shift, 64, shift, 128 + 64, shift, 67, shift, 128 + 67, shift, 128 + 60, shift]  # 60 held to 10
    ids = torch.tensor([held + [62, shift, 128 + 62, shift] * 5])
    assert keys_down(ids[0].numpy())[:12].tolist() == [1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 0, 0]
    # at target 6, note 60 is open; the nearest place with nothing sounding is after its NOTE_OFF (11)
    assert quiet_cut(ids, 6, slack=5) == 11
    assert quiet_cut(ids, 6, slack=2) in (4, 5, 6, 7, 8)  # nothing quiet in reach: one note open, nearest
    assert quiet_cut(ids, 16, slack=3) == 16  # already quiet: the target itself


def test_sliding_window_with_a_time_limit_is_exact():
    model = tiny_model(n_positions=48, seed=6)
    torch.manual_seed(2)
    out = generate_music(model, torch.full((3, 1), BOS_ID), seconds=40.0)
    assert out.shape[1] > 48
    for row in out.tolist():
        steps = int(shift_steps([t for t in row if t < PAD_ID]).sum())
        assert steps == 4000 or EOS_ID in row


def test_time_criterion_alone_in_generate_counts_from_the_prompt_end():
    model = tiny_model(seed=7)
    prompt = torch.tensor([[BOS_ID, 300, 60, 320]] * 8)  # 1.1 s of prompt, not counted
    criteria = StoppingCriteriaList([MusicTimeStoppingCriteria(2.0)])
    torch.manual_seed(0)
    out = model.generate(prompt, max_new_tokens=200, stopping_criteria=criteria)
    first_is_shift = 0
    for row in out[:, 4:].tolist():
        body = [t for t in row if t < PAD_ID]
        first_is_shift += TIME_SHIFT <= body[0] < VELOCITY
        if EOS_ID not in row:  # without the limit processor the last shift may pass the limit
            assert int(shift_steps(body).sum()) >= 200 > int(shift_steps(body[:-1]).sum())
    assert first_is_shift  # the first generated token is counted too


# --------------------------------------------------------------------------- prompts, arguments
@pytest.mark.parametrize("seconds", [0.5, 5.0, 12.34])
def test_cut_events_keeps_the_first_seconds(seconds):
    ids = encode(POP909_FIXTURES[0])
    cut = cut_events(ids, seconds)
    steps = round(seconds * 100)
    assert int(shift_steps(cut).sum()) == steps
    full, part = ids_to_notes(ids), ids_to_notes(cut)
    early = full["start"] < steps
    assert np.array_equal(part["start"], full["start"][early])
    assert np.array_equal(part["pitch"], full["pitch"][early])
    assert np.array_equal(part["end"], np.minimum(full["end"][early], steps).clip(part["start"] + 1))


@pytest.mark.parametrize("kwargs, name", [
    ({"seconds": 0}, "seconds"), ({"seconds": -1}, "seconds"), ({"seconds": 1e6}, "seconds"),
    ({"seconds": float("nan")}, "seconds"), ({"seconds": 0.001}, "seconds"),
    ({"seconds": None}, "max_new_tokens"), ({"seconds": 5, "max_new_tokens": 0}, "max_new_tokens"),
    ({"seconds": 5, "temperature": 0}, "temperature"), ({"seconds": 5, "top_k": -1}, "top_k"),
    ({"seconds": 5, "top_p": 1.5}, "top_p"), ({"seconds": 5, "top_p": 0}, "top_p"),
    ({"seconds": 5, "num_return_sequences": 0}, "num_return_sequences"),
    ({"seconds": 5, "seed": -3}, "seed"), ({"seconds": 5, "prompt_seconds": 0}, "prompt_seconds"),
    ({"seconds": 5, "top_k": 2.5}, "top_k"),
])
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(GenerationError, match=name):
        check_generation_args(**kwargs)


def test_progress_criteria_reports_slowest_unfinished_row():
    reports = []
    crit = MusicProgressCriteria(10.0, progress=lambda d, t: reports.append((d, t)))
    ids = torch.tensor([[BOS_ID, 300], [BOS_ID, 320]])
    crit.state.start = 1
    assert not crit(ids, None).any()
    assert reports == [(0.45, 10.0)]


# --------------------------------------------------------------------------- the stuck-note guard
def test_guard_forces_the_note_off_of_a_note_held_too_long():
    from hf_midi.remote_code.processors import MaxNoteLengthLogitsProcessor

    one_second = TIME_SHIFT + 99
    held = [BOS_ID, 60, 64, one_second, 128 + 64, one_second]  # 60 held 2 s, 64 released after 1 s
    short = [BOS_ID, 60, one_second, 128 + 60, 62, one_second]  # 62 held 1 s
    scores = torch.zeros(2, 448)
    out = MaxNoteLengthLogitsProcessor(2.0)(torch.tensor([held, short]), scores.clone())
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [128 + 60]  # only NOTE_OFF 60
    assert torch.equal(out[1], scores[1])  # nothing held 2 s: untouched


def test_no_silence_longer_than_the_limit():
    from hf_midi.remote_code.processors import MaxSilenceLogitsProcessor

    one_second = TIME_SHIFT + 99

    def guarded(ids):
        return MaxSilenceLogitsProcessor(4.0)(torch.tensor([ids]), torch.zeros(1, 448))[0]

    out = guarded([BOS_ID] + [one_second] * 4)  # 4 s and no note yet: play (or end), do not wait
    assert not torch.isfinite(out[TIME_SHIFT:VELOCITY]).any() and torch.isfinite(out[:TIME_SHIFT]).all()
    assert torch.isfinite(guarded([BOS_ID, 60] + [one_second] * 5)).all()  # a key down: not silence
    assert torch.isfinite(guarded([BOS_ID, 60, 128 + 60, one_second, one_second, 62])).all()  # an onset now
    assert not torch.isfinite(guarded([BOS_ID, 60, 128 + 60] + [one_second] * 4)[TIME_SHIFT]).any()


def longest_silence(rows) -> float:
    """The longest stretch, in seconds, with no key down before an onset (or the piece's end)."""
    worst = 0.0
    for r in rows.tolist():
        n = ids_to_notes([t for t in r if t < VOCAB_SIZE - 3])
        end = int(shift_steps([t for t in r if t < VOCAB_SIZE - 3]).sum())
        order = np.argsort(n["start"])
        covered = 0  # the latest end of the notes so far
        for start, stop in zip(np.append(n["start"][order], end), np.append(n["end"][order], end)):
            worst = max(worst, (int(start) - covered) / 100)
            covered = max(covered, int(stop))
    return worst


def test_generation_with_the_silence_guard_keeps_playing():
    model = tiny_model(seed=4)
    torch.manual_seed(1)
    loose = {"sound_at_once": False, "allow_early_end": True}  # the guard alone
    free = generate_music(model, torch.full((3, 1), BOS_ID), seconds=20.0, max_silence_seconds=None, **loose)
    torch.manual_seed(1)
    guarded = generate_music(model, torch.full((3, 1), BOS_ID), seconds=20.0, max_silence_seconds=0.5, **loose)
    assert longest_silence(free) > 1.6  # the control: a random model waits
    assert longest_silence(guarded) <= 1.5  # the limit and at most one more TIME_SHIFT


def test_guard_counts_time_across_the_sliding_window_history():
    from hf_midi.remote_code.processors import MaxNoteLengthLogitsProcessor

    state = PerformanceState()
    guard = MaxNoteLengthLogitsProcessor(1.5, state)
    state.set_history(torch.tensor([[BOS_ID, 70, TIME_SHIFT + 99]]))  # 70 on for 1 s before the window
    out = guard(torch.tensor([[TIME_SHIFT + 49]]), torch.zeros(1, VOCAB_SIZE))  # + 0.5 s in the window
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [128 + 70]


def test_generation_with_the_guard_has_no_long_notes():
    """A random model holds notes for many seconds; with the guard none outlasts limit + 1 s."""
    model = tiny_model(seed=4)
    torch.manual_seed(0)
    raw = generate_music(model, torch.full((3, 1), BOS_ID), seconds=20.0)
    torch.manual_seed(0)
    guarded = generate_music(model, torch.full((3, 1), BOS_ID), seconds=20.0, max_note_seconds=2.0)

    def longest(rows):
        return max(float((n["end"] - n["start"]).max()) / 100 for n in
                   (ids_to_notes([t for t in r if t < VOCAB_SIZE - 3]) for r in rows.tolist()) if len(n["end"]))
    assert longest(raw) > 4.0  # the control
    assert longest(guarded) <= 3.0


def test_the_fast_loop_keeps_the_two_rules_token_for_token():
    model = _silence_and_end_model()
    runs = []
    for fast in (True, False):
        torch.manual_seed(4)
        runs.append(generate_music(model, torch.full((2, 1), BOS_ID), seconds=4.0, fast=fast, weights="float32"))
    assert torch.equal(runs[0], runs[1])
    for row in runs[0].tolist():
        assert EOS_ID not in row and int(shift_steps([t for t in row if t < PAD_ID]).sum()) == 400
        assert ids_to_notes(row)["start"][0] == 0


def test_music_processors_make_a_plain_generate_call_what_generate_music_makes():
    from hf_midi.remote_code.generation import music_processors

    model = tiny_model(seed=6)
    torch.manual_seed(9)
    ours = generate_music(model, torch.full((2, 1), BOS_ID), seconds=3.0, fast=False)
    processors, criteria = music_processors(PerformanceState(start=1), seconds=3.0)
    torch.manual_seed(9)
    plain = model.generate(torch.full((2, 1), BOS_ID), generation_config=music_generation_config(model),
                           max_new_tokens=600, logits_processor=processors, stopping_criteria=criteria)
    assert [[t for t in r if t != PAD_ID] for r in ours.tolist()] == [[t for t in r if t != PAD_ID]
                                                                     for r in plain.tolist()]
