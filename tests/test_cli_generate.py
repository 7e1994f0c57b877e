"""`hf-midi generate` end to end with a tiny model: MIDI, WAV and PNG written, read back, checked."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import symusic
from conftest import POP909_FIXTURES, save_tiny_model

from hf_midi import cli, loading
from hf_midi.render import BOTTOM_MARGIN, LEFT_MARGIN, PEDAL_STRIP

requires_soundfont = pytest.mark.skipif(not any(Path("/usr/share/sounds/sf2").glob("*.sf2")),
                                        reason="no SoundFont in /usr/share/sounds/sf2")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny"), n_positions=256, seed=21))


def png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image as image  # Pillow is a dependency of the package
    with image.open(io.BytesIO(data)) as im:
        return im.size


@requires_soundfont
def test_generate_writes_midi_wav_png(model_dir, tmp_path, capsys):
    out = tmp_path / "out.mid"
    rc = cli.main(["generate", "--model", model_dir, "--seconds", "6", "--seed", "3", "-o", str(out),
                   "--wav", str(tmp_path / "out.wav"), "--png", str(tmp_path / "roll.png")])
    assert rc == 0
    err = capsys.readouterr().err
    assert "6/6 s" in err or "6.0/6 s" in err  # the progress bar counts music seconds
    # ... and says how much faster than real time it composes
    match = re.search(r"composed 6\.0 s of new music in ([\d.]+) s: ([\d.]+)x real time", err)
    assert match and float(match[2]) == pytest.approx(6.0 / float(match[1]), rel=0.15)
    score = symusic.Score(out, ttype="second")
    seconds = score.end()
    assert 0 < seconds <= 6.0 + 1e-6 and sum(len(t.notes) for t in score.tracks) > 0
    with wave.open(str(tmp_path / "out.wav"), "rb") as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        duration = w.getnframes() / w.getframerate()
    assert duration == pytest.approx(seconds + 1.0, abs=0.01)  # the music plus a 1 s tail
    assert np.abs(frames).max() > 10000 and np.sqrt(np.mean(frames.astype(float) ** 2)) > 100
    width, height = png_size((tmp_path / "roll.png").read_bytes())
    # 50 px a second (a note's end in seconds may carry a float's rounding past the last pixel)
    assert 0 <= width - LEFT_MARGIN - seconds * 50 <= 1.01 and height >= 88 * 4 + PEDAL_STRIP + BOTTOM_MARGIN
    # Same seed, same piece: the command is reproducible.
    again = tmp_path / "again.mid"
    assert cli.main(["generate", "--model", model_dir, "--seconds", "6", "--seed", "3", "-o", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_generate_several_from_a_prompt(model_dir, tmp_path):
    out = tmp_path / "cont.mid"
    rc = cli.main(["generate", "--model", model_dir, "--prompt", str(POP909_FIXTURES[0]), "--prompt-seconds", "5",
                   "--seconds", "3", "--num", "2", "--seed", "1", "-o", str(out), "--png", str(tmp_path / "r.png")])
    assert rc == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["cont-1.mid", "cont-2.mid", "r-1.png", "r-2.png"]
    prompt = symusic.Score(POP909_FIXTURES[0], ttype="second")
    first = min(n.time for t in prompt.tracks for n in t.notes)
    for name in ("cont-1.mid", "cont-2.mid"):
        s = symusic.Score(tmp_path / name, ttype="second")
        assert 5.0 < s.end() <= 8.0 + 1e-6  # prompt (5 s) + at most 3 s
        assert min(n.time for n in s.tracks[0].notes) == pytest.approx(first, abs=0.006)


@pytest.mark.parametrize("args, message", [
    (["--seconds", "0"], "--seconds: must be a number > 0"),
    (["--seconds", "1e9"], "--seconds: must be a number > 0 and at most 3600"),
    (["--temperature", "0"], "--temperature must be a number > 0"),
    (["--top-p", "1.5"], "--top-p must be a number > 0 and at most 1"),
    (["--top-k", "-1"], "--top-k must be an integer"),
    (["--num", "0"], "--num must be an integer in 1..64"),
    (["--prompt-seconds", "3"], "--prompt-seconds needs --prompt"),
    (["--prompt", "missing.mid"], "--prompt missing.mid: no such file"),
    (["--prompt", str(POP909_FIXTURES[0]), "--prompt-seconds", "1"], "has no notes in its first 1 s"),
    (["--threads", "0"], "--threads: expected a number of threads >= 1 or auto, got '0'"),
    (["--candidates", "0"], "--candidates: an integer from 1 to 64, got '0'"),
    (["--candidates", "two"], "--candidates: an integer from 1 to 64, got 'two'"),
    (["--select", "worst"], "--select: invalid choice: 'worst'"),
    (["--critic", "no-critic-here"], "critic no-critic-here: critic.json is missing"),
])
def test_bad_arguments_fail_cleanly_and_write_nothing(model_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out.mid"
    try:
        rc = cli.main(["generate", "--model", model_dir, "-o", str(out), *args])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    assert rc != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_generate_searches_with_a_critic(model_dir, tmp_path, capsys):
    import torch

    from hf_midi.remote_code.critic import MusicCritic

    torch.manual_seed(0)
    MusicCritic().save_pretrained(tmp_path / "critic")
    out = tmp_path / "out.mid"
    rc = cli.main(["generate", "--model", model_dir, "--seconds", "4", "--seed", "1", "--candidates", "3",
                   "--select", "sample", "--critic", str(tmp_path / "critic"), "-o", str(out)])
    assert rc == 0
    score = symusic.Score(out, ttype="second")
    assert 0 < score.end() <= 4.0 + 1e-6
    again = tmp_path / "again.mid"  # the search is reproducible under a seed too
    assert cli.main(["generate", "--model", model_dir, "--seconds", "4", "--seed", "1", "--candidates", "3",
                     "--select", "sample", "--critic", str(tmp_path / "critic"), "-o", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()
    plain = tmp_path / "plain.mid"
    assert cli.main(["generate", "--model", model_dir, "--seconds", "4", "--seed", "1", "-o", str(plain)]) == 0
    assert plain.read_bytes() != out.read_bytes()


def test_model_folder_problems(tmp_path, capsys, monkeypatch):
    bare = save_tiny_model(tmp_path / "bare", tokenizer=False)
    assert cli.main(["generate", "--model", str(bare), "-o", str(tmp_path / "o.mid")]) == 1
    assert "no tokenizer" in capsys.readouterr().err
    monkeypatch.setattr(loading, "DEFAULT_MODEL_DIR", tmp_path / "none")
    assert cli.main(["generate", "-o", str(tmp_path / "o.mid")]) == 1
    assert "no default model is installed" in capsys.readouterr().err
    assert not (tmp_path / "o.mid").exists()


def test_generate_fast_and_slow_write_the_same_piece(model_dir, tmp_path):
    """--weights float32 (the fast loop) and --slow (generate()'s own) give one piece under one seed;
    --weights int8 writes a valid piece too (where fbgemm exists), and a bad format is refused by argparse."""
    from hf_midi.remote_code.fast_generation import packed_formats_available

    outs = {}
    for name, extra in (("fast", ["--weights", "float32"]), ("slow", ["--slow"])):
        outs[name] = tmp_path / f"{name}.mid"
        assert cli.main(["generate", "--model", model_dir, "--seconds", "4", "--seed", "9", "--num", "2",
                         "-o", str(outs[name]), *extra]) == 0
    for i in (1, 2):
        fast, slow = (outs[n].with_name(f"{n}-{i}.mid").read_bytes() for n in ("fast", "slow"))
        assert fast == slow and len(symusic.Score.from_midi(fast).tracks[0].notes) > 0
    if packed_formats_available():
        assert cli.main(["generate", "--model", model_dir, "--seconds", "2", "--weights", "int8",
                         "-o", str(tmp_path / "q.mid")]) == 0
        assert symusic.Score(tmp_path / "q.mid").end() > 0
    with pytest.raises(SystemExit):
        cli.main(["generate", "--model", model_dir, "--weights", "fp8", "-o", str(tmp_path / "x.mid")])


THREADS_SCRIPT = """
import sys, torch
from hf_midi import load_pipeline
from hf_midi.remote_code import threads
model_dir, drums, out = sys.argv[1:4]
most = torch.get_num_threads()
pipe = load_pipeline(model_dir)
try:
    pipe(drums, seconds=1.0)
except Exception as e:
    print("refused:", type(e).__name__)
print("trials after a refused call:", len(threads._CHOSEN))
[a] = pipe(seconds=1.0, seed=1)
chosen, timed = threads.use_fastest_threads(pipe.model)
print("most", most, "chosen", chosen, "now", torch.get_num_threads(), "timed", sorted(timed), "best",
      min(timed, key=timed.get) if timed else None)
calls = []
threads.fastest_threads = lambda *a, **k: calls.append(1)  # a second choice would land here
[b] = pipe(seconds=1.0, seed=1, threads=1)
[c] = pipe(seconds=1.0, seed=1)
print("trials on later calls", len(calls), "now", torch.get_num_threads())
print("same piece", a["token_ids"] == b["token_ids"] == c["token_ids"])
"""


def test_threads_are_chosen_once_a_process_by_timing_the_model_unless_given(model_dir, tmp_path):
    """In a fresh process (torch's own default: one thread a core), the pipeline times the model under 1, 2,
    ... threads once, before its first piece and after the call's checks (a refused prompt costs no trial),
    keeps the fastest, remembers it for later calls; threads=1 sets one; the seed decides the piece."""
    import os

    proc = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, model_dir,
                           str(POP909_FIXTURES[0].parents[1] / "edge" / "test-all-gm-percussion.mid"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "refused: GenerationError" in out and "trials after a refused call: 0" in out
    most, chosen, now = (int(x) for x in re.search(r"most (\d+) chosen (\d+) now (\d+)", out).groups())
    assert chosen == now and 1 <= chosen <= most
    if most > 1:  # timed: 1 and torch's own count at least, and the fastest chosen
        timed = re.search(r"timed \[([\d, ]+)\] best (\d+)", out)
        counts = [int(x) for x in timed.group(1).split(",")]
        assert 1 in counts and most in counts and int(timed.group(2)) == chosen
    assert f"trials on later calls 0 now {chosen}" in out
    assert "same piece True" in out


def test_the_cli_reports_the_threads_it_chose_or_takes_them_as_given(model_dir, tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert cli.main(["generate", "--model", model_dir, "--seconds", "1", "--seed", "1", "--threads", "1", "-o",
                         str(tmp_path / "b.mid")]) == 0
        assert "threads: " not in capsys.readouterr().err and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_every_command_says_what_it_does_and_shows_an_example():
    """`hf-midi --help` and each `hf-midi COMMAND --help`: a one-line description and a runnable example."""
    from hf_midi.cli import COMMANDS

    top = subprocess.run([sys.executable, "-m", "hf_midi.cli", "--help"], capture_output=True, text=True, timeout=60)
    listing = " ".join(top.stdout.split())  # argparse wraps lines
    assert top.returncode == 0 and "example: hf-midi generate" in listing
    for name, (_, summary, example) in COMMANDS.items():
        assert f"{name} {summary}" in listing
        proc = subprocess.run([sys.executable, "-m", "hf_midi.cli", name, "--help"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        text = " ".join(proc.stdout.split())  # argparse wraps lines
        assert f"{summary}." in text and f"example: {example}" in text and f"hf-midi {name} " in example


def test_the_two_rules_on_the_command_line(tmp_path):
    """A model that would rather wait or end: by default the piece opens with a note and lasts as asked;
    --no-sound-at-once --allow-early-end hand the choice back to it."""
    import torch
    from test_generation import _silence_and_end_model

    from hf_midi.remote_code.tokenization_midi import MidiTokenizer

    folder = tmp_path / "waiting"
    _silence_and_end_model().save_pretrained(folder)
    MidiTokenizer().save_pretrained(folder)
    torch.manual_seed(0)
    assert cli.main(["generate", "--model", str(folder), "--seconds", "5", "--seed", "1", "--threads", "1",
                     "-o", str(tmp_path / "a.mid")]) == 0
    score = symusic.Score(str(tmp_path / "a.mid"), ttype="second")
    notes = score.tracks[0].notes.numpy()
    assert notes["time"].min() == 0.0 and score.end() == pytest.approx(5.0, abs=0.011)
    assert cli.main(["generate", "--model", str(folder), "--seconds", "5", "--seed", "1", "--threads", "1",
                     "--no-sound-at-once", "--allow-early-end", "-o", str(tmp_path / "b.mid")]) == 0
    loose = symusic.Score(str(tmp_path / "b.mid"), ttype="second")
    assert loose.note_num() == 0 or loose.tracks[0].notes.numpy()["time"].min() > 0


EXTRAS_SCRIPT = """
import contextlib, io, json, sys
from hf_midi.cli import COMMANDS, extras, main
assert set(extras()) >= {"accelerate", "datasets", "pyarrow", "peft", "gradio", "matplotlib"}, extras()
for module in extras():  # as after `pip install -e .` alone: the extras' modules cannot be imported
    sys.modules[module] = None
src, out = sys.argv[1], sys.argv[2]
report = {}
runs = {name: [name, "--help"] for name in COMMANDS}
runs |= {"prepare run": ["prepare", src, out + "/data", "--license", "mit"],
         "finetune run": ["finetune", src, out + "/ft", "--minutes", "1"],
         "evaluate run": ["evaluate", "small", "--dataset", out + "/none", "--split", "test"]}
for name, argv in runs.items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
    report[name] = [rc, err.getvalue()]
print(json.dumps(report))
"""


def test_every_command_works_without_the_extras_or_names_the_one_it_needs(tmp_path):
    """After `pip install -e .` alone (the train and space extras' modules cannot be imported): every
    command's --help works, and a command that needs an extra says which in one line, no traceback."""
    import json

    proc = subprocess.run([sys.executable, "-c", EXTRAS_SCRIPT, str(POP909_FIXTURES[0].parent), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (rc, err) in report.items():
        if name.endswith(" run"):
            command = name.split()[0]
            assert rc == 1 and err.strip().count("\n") == 0 and "Traceback" not in err, (name, err)
            assert err.startswith(f"hf-midi {command}: needs the 'train' extra (no module named ")
            assert "pip install 'hf-midi[train]'" in err
        else:
            assert rc in (0, 1), (name, rc, err)
            assert rc == 0 or ("extra" in err and err.strip().count("\n") == 0), (name, err)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_the_space_without_its_extra_says_which_in_one_line():
    from conftest import ROOT

    script = ("import runpy, sys; sys.modules['gradio'] = None; sys.argv = ['app.py']; "
              f"runpy.run_path({str(ROOT / 'spaces_app' / 'app.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("spaces_app/app.py needs the 'space' extra (no module named 'gradio'): "
                                   "pip install -e '.[space]'")
