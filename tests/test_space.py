"""The Space (issue 7): its functions on real MIDI and real rendering, its files, the assembled
copy, and a small gradio_client load test against the app on localhost.

The model is a tiny random GPT-2: what it plays is noise, but every path (prompt, sampling, stop,
render, packaging, queueing) is the real one.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.request
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import symusic
import yaml
from conftest import EDGE_FIXTURES, POP909_FIXTURES, ROOT, save_tiny_model

SPACE_DIR = ROOT / "spaces_app"
PROMPT_MIDI = POP909_FIXTURES[0]


def load_app():
    """spaces_app/app.py as a module (it is a Space, not a package)."""
    spec = importlib.util.spec_from_file_location("hf_midi_space_app", SPACE_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_tiny_model(folder: Path) -> Path:
    """The tests' tiny GPT-2 folder (conftest), playing on to the asked length."""
    return save_tiny_model(folder, seed=0, plays_on=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app():
    return load_app()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def pipe(app, tiny_model):
    return app.load_pipeline(str(tiny_model))


def midi_seconds(data: bytes) -> float:
    score = symusic.Score.from_midi(data, ttype="second")
    return max((n.end for t in score.tracks for n in t.notes), default=0.0)


def wav_info(path: Path) -> tuple[int, float, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        frames = w.readframes(w.getnframes())
        assert w.getsampwidth() == 2
        return w.getframerate(), w.getnframes() / w.getframerate(), np.frombuffer(frames, "<i2")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# ------------------------------------------------------------------------------------- uploads
def test_read_upload_reads_a_real_midi(app):
    prompt = app.read_upload(PROMPT_MIDI)
    assert prompt.name == PROMPT_MIDI.name
    assert prompt.data == PROMPT_MIDI.read_bytes()
    assert prompt.notes > 100 and prompt.seconds > 30


@pytest.mark.parametrize(
    "name, expected",
    [
        ("test-not-a-midi-file.mid", "not a MIDI file"),
        ("test-empty-file.mid", "empty"),
        ("test-empty.mid", "no notes"),
        ("test-all-gm-percussion.mid", "no notes"),  # drums only: nothing for a piano to continue
        ("test-corrupt-file-missing-byte.mid", "test-corrupt-file-missing-byte.mid"),
    ],
)
def test_read_upload_explains_bad_files(app, name, expected):
    with pytest.raises(ValueError) as e:
        app.read_upload(EDGE_FIXTURES / name)
    message = str(e.value)
    assert expected in message and name in message
    assert "\n" not in message and "Traceback" not in message


def test_read_upload_refuses_large_and_missing_files(app, tmp_path):
    big = tmp_path / "big.mid"
    big.write_bytes(PROMPT_MIDI.read_bytes() + b"\0" * app.MAX_UPLOAD_BYTES)
    with pytest.raises(app.InputError, match=r"big\.mid is 4\.0 MB; the limit is 4 MB"):
        app.read_upload(big)
    with pytest.raises(app.InputError, match="Upload a MIDI file"):
        app.read_upload(None)


def test_describe_upload_is_one_line_for_good_and_bad(app):
    assert re.fullmatch(rf"\*\*{PROMPT_MIDI.name}\*\*: \d+ notes, \d+:\d\d long\.", app.describe_upload(PROMPT_MIDI))
    assert app.describe_upload(EDGE_FIXTURES / "test-not-a-midi-file.mid").startswith("⚠️ test-not-a-midi-file.mid")


# ------------------------------------------------------------------------------------- settings
def test_make_settings_caps_every_knob(app):
    s = app.make_settings(seconds=1e6, temperature=0, top_p=1.0, top_k=0, seed=-1, variations=99, prompt_seconds=1e3)
    assert s.seconds == app.MAX_SECONDS and s.variations == app.MAX_VARIATIONS
    assert s.temperature == app.MIN_TEMPERATURE and s.prompt_seconds == app.MAX_PROMPT_SECONDS
    assert s.top_p is None and s.top_k is None  # 1.0 and 0 mean off
    assert 0 <= s.seed <= app.MAX_SEED
    s = app.make_settings(seconds=0, top_p=0.9, top_k=12, seed="7", variations=0)
    assert (s.seconds, s.top_p, s.top_k, s.seed, s.variations) == (app.MIN_SECONDS, 0.9, 12, 7, 1)
    import random

    draws = []
    for state in (1, 2, 1):  # a seed is drawn from the random module each time one is not given
        random.seed(state)
        draws.append(app.make_settings(seed=None).seed)
    assert draws[0] == draws[2] != draws[1] and all(0 <= d <= app.MAX_SEED for d in draws)
    with pytest.raises(app.InputError, match="Length must be a number"):
        app.make_settings(seconds="long")
    with pytest.raises(app.InputError, match="Temperature must be a finite number"):
        app.make_settings(temperature=float("nan"))


# ------------------------------------------------------------------------------------- music
def test_compose_writes_midi_wav_png_of_the_asked_length(app, pipe, tmp_path):
    from hf_midi.render import piano_roll_png

    settings = app.make_settings(seconds=6, seed=3, variations=2, top_p=0.95)
    seen = []
    pieces = app.make_music(pipe, settings, progress=lambda done, total: seen.append((done, total)),
                            out_root=tmp_path)
    assert len(pieces) == 2
    assert seen and all(total == 6 for _, total in seen) and seen[-1][0] >= seen[0][0]
    for i, v in enumerate(pieces, start=1):
        assert v.midi.name == f"hf-midi-3-{i}.mid" and v.midi.read_bytes() == v.data
        length = midi_seconds(v.data)
        assert 5.0 <= length <= 6.0 + 2.0, length  # the asked 6 s (a note may ring past the end)
        assert abs(v.seconds - 6.0) <= 1.0 and v.notes > 0
        rate, seconds, pcm = wav_info(v.wav)
        assert rate == 22050 and seconds >= length - 0.05 and np.abs(pcm).max() > 100  # audible
        width, height = png_size(v.png)
        assert width >= 40 * length and height >= 88  # time across (50 px/s), the 88 keys up
        assert v.png.read_bytes() == piano_roll_png(v.data)  # the picture of this very piece
    assert pieces[0].data != pieces[1].data  # two variations, not one twice


def test_a_click_opens_with_a_note_and_lasts_as_asked(app, tmp_path):
    """A model that would rather wait or end (the habits of transcribed recordings): through the Space's
    own path, the first note sounds at once and the piece lasts the asked seconds."""
    from test_generation import _silence_and_end_model

    from hf_midi.remote_code.tokenization_midi import MidiTokenizer

    folder = tmp_path / "waiting"
    _silence_and_end_model().save_pretrained(folder)
    MidiTokenizer().save_pretrained(folder)
    pieces = app.make_music(app.load_pipeline(str(folder)), app.make_settings(seconds=6, seed=2), out_root=tmp_path)
    score = symusic.Score.from_midi(pieces[0].data, ttype="second")
    assert score.tracks[0].notes.numpy()["time"].min() == 0.0
    assert score.end() == pytest.approx(6.0, abs=0.011)


def test_same_seed_same_music(app, pipe, tmp_path):
    settings = app.make_settings(seconds=3, seed=11)
    a = app.make_music(pipe, settings, out_root=tmp_path / "a")[0]
    b = app.make_music(pipe, settings, out_root=tmp_path / "b")[0]
    assert a.data == b.data


def test_continue_keeps_the_asked_seconds_of_the_upload(app, pipe, tmp_path):
    prompt = app.read_upload(PROMPT_MIDI)
    settings = app.make_settings(seconds=4, seed=5, prompt_seconds=5)
    piece = app.make_music(pipe, settings, prompt.data, out_root=tmp_path)[0]

    def notes(data, until):
        score = symusic.Score.from_midi(data, ttype="second")
        return sorted((round(n.start, 2), n.pitch) for t in score.tracks for n in t.notes if n.start < until)

    # the first 5 s are the upload's (to the 10 ms step), then 4 s of new music
    assert notes(piece.data, 4.9) == notes(prompt.data, 4.9)
    assert 8.0 <= midi_seconds(piece.data) <= 11.0


def test_stop_ends_generation(app, pipe, tmp_path):
    stop = threading.Event()
    stop.set()
    with pytest.raises(app.Stopped):
        app.make_music(pipe, app.make_settings(seconds=30, seed=1), stop=stop, out_root=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-packaged


def test_stream_music_plays_the_piece_that_make_music_makes(app, pipe, tmp_path):
    """The live chunks join into the finished piece's audio, sample for sample, and the piece is the
    one the same settings make without streaming."""
    from hf_midi.remote_code.codec import shift_steps
    from hf_midi.render import render_wav

    settings = app.make_settings(seconds=6, seed=17)
    items = list(app.stream_music(pipe, settings))
    *chunks, (last, last_wav) = items
    assert last.done and not any(c.done for c, _ in chunks)
    assert len(chunks) >= 4  # 6 s: a first chunk of 0.25 s, then about a second each
    first = chunks[0][0]  # sent at the first time shift that reaches LIVE_FIRST_SECONDS
    before_last = first.end - shift_steps(first.token_ids[-1:]).sum() / 100
    assert before_last < app.LIVE_FIRST_SECONDS <= first.end
    [alone] = app.make_music(pipe, settings, out_root=tmp_path)
    assert last.piece["midi"] == alone.data
    pcm = b"".join(wav[44:] for _, wav in [*chunks, (last, last_wav)] if wav is not None)
    live = np.frombuffer(pcm, "<i2").astype(np.float64) / 32767
    full = render_wav(last.piece["score"], sample_rate=app.LIVE_RATE, normalize=False).mean(axis=1)
    full = np.clip(full * app.LIVE_GAIN, -1, 1)
    assert len(live) == round(last.end * app.LIVE_RATE)
    assert np.abs(live - full[: len(live)]).max() < 2e-4  # 16-bit rounding
    assert np.abs(live).max() > 0.05  # it is music, not silence


def test_stream_music_of_an_upload_plays_the_prompt_first(app, pipe):
    settings = app.make_settings(seconds=2, seed=3, prompt_seconds=4)
    first, wav = next(app.stream_music(pipe, settings, PROMPT_MIDI.read_bytes()))
    assert first.end == pytest.approx(4.0) and len(wav) - 44 == 2 * round(4.0 * app.LIVE_RATE)


def test_stop_ends_a_streamed_piece(app, pipe):
    stop = threading.Event()
    settings = app.make_settings(seconds=60, seed=5)
    items = []
    for chunk, _wav in app.stream_music(pipe, settings, stop=stop):
        items.append(chunk)
        stop.set()
    assert items[-1].done and items[-1].piece["seconds"] < 30


def test_quality_sets_the_candidates_the_critic_chooses_from(app, pipe, tmp_path):
    assert app.make_settings(quality=app.MODEL_QUALITY).candidates is None  # the model's own setting
    settings = {q: app.make_settings(seconds=4, seed=6, quality=q) for q in app.QUALITY}
    assert [s.candidates for s in settings.values()] == list(app.QUALITY.values())
    with pytest.raises(app.InputError, match="Quality must be one of"):
        app.make_settings(quality="Perfect")
    critic_dir = tmp_path / "with-critic"
    import shutil

    import torch

    from hf_midi.remote_code.critic import MusicCritic

    shutil.copytree(pipe.model.name_or_path, critic_dir)
    torch.manual_seed(0)
    MusicCritic().save_pretrained(critic_dir)
    searching = app.load_pipeline(str(critic_dir))
    careful = [q for q, k in app.QUALITY.items() if k and k > 1][0]
    report = []
    searching(**app._pipe_arguments(settings[careful], None), search_report=report)
    assert report and all(len(r["scores"]) == app.QUALITY[careful] for r in report)
    [piece] = app.make_music(searching, settings[careful], out_root=tmp_path / "out")
    assert abs(midi_seconds(piece.data) - 4) < 0.05


def test_style_knobs_become_controls_and_bad_ones_are_named(app):
    s = app.make_settings(seconds=4, seed=1, style=dict(key="D minor", pitch_low=48, pitch_high=84, dynamics="p",
                                                        density=5, max_polyphony=3, pedal=False))
    assert s.controls == app.MusicControls(key="D minor", pitch_range=(48, 84), dynamics="p", density=5,
                                           max_polyphony=3, pedal=False)
    # the defaults leave everything to the model
    assert not app.make_settings(style=dict(key=app.ANY, pitch_low=21, pitch_high=108, dynamics=app.ANY, density=0,
                                            max_polyphony=0, pedal=True)).controls
    for style, message in [(dict(key="H major"), "Key: must be a note name"),
                           (dict(pitch_low=90, pitch_high=40), "Pitch range: low 90 is above high 40"),
                           (dict(dynamics="loud"), "Dynamics: must be one of pp"),
                           (dict(density=-2), "Notes a second: must be a number > 0"),
                           (dict(max_polyphony=2.5), "Keys down at once: must be a whole number"),
                           (dict(pitch_low="x"), "Lowest pitch must be a number")]:
        with pytest.raises(app.InputError, match=re.escape(message)):
            app.make_settings(seconds=4, style=style)


STYLE = ("key", "pitch_low", "pitch_high", "dynamics", "density", "max_polyphony", "pedal")


def test_every_example_names_real_inputs_and_its_style_is_valid(app, pipe):
    """Examples are keyed by input name: each names inputs of the Generate button, an unnamed input keeps
    the page's starting value, and each style is valid."""
    demo = app.build_demo(pipe=pipe)
    examples = next(b for b in demo.blocks.values() if type(b).__name__ == "Dataset")
    for label, values in app.EXAMPLES:
        assert set(values) <= set(app.GENERATE_INPUTS), label
        app.make_controls(**{k: v for k, v in values.items() if k in STYLE})  # raises on a bad value
    styled = dict(app.EXAMPLES)["D minor, soft, no pedal"]
    assert app.make_controls(**{k: v for k, v in styled.items() if k in STYLE}) == app.MusicControls(
        key="D minor", dynamics="p", pedal=False)
    # the rows the page holds put each named value under its own input
    headers = [getattr(c, "elem_id", None) or getattr(c, "label", None) for c in examples._components]
    row = examples.raw_samples[[label for label, _ in app.EXAMPLES].index("D minor, soft, no pedal")]
    assert row[headers.index("key")] == "D minor" and row[headers.index("dynamics")] == "p"
    assert row[headers.index("pedal")] is False and row[headers.index("seed")] == 11


def test_a_styled_piece_keeps_to_its_style(app, pipe, tmp_path):
    style = dict(key="F# major", pitch_low=60, pitch_high=84, dynamics="f", density=6, pedal=False)
    [piece] = app.make_music(pipe, app.make_settings(seconds=6, seed=4, style=style), out_root=tmp_path)
    score = symusic.Score.from_midi(piece.data)
    notes = [n for t in score.tracks for n in t.notes]
    assert len(notes) > 5
    assert all(60 <= n.pitch <= 84 and n.pitch % 12 in (6, 8, 10, 11, 1, 3, 5) and 89 <= n.velocity <= 104
               for n in notes)
    assert not any(c.number == 64 and c.value >= 64 for t in score.tracks for c in t.controls)


def test_the_model_picker_offers_the_bundled_models_and_loads_on_first_use(app, pipe):
    studio = app.Studio(pipe)
    assert studio.names[0] == studio.first == Path(pipe.model.name_or_path).name
    assert {"base", "small"} <= set(studio.names) and studio.pipes["small"] is None
    small = studio.pipe("small")
    assert small.model.config.n_layer == 4 and studio.pipe("small") is small  # loaded once, kept
    with pytest.raises(app.InputError, match="There is no model 'huge' here"):
        studio.pipe("huge")


def test_page_without_a_model_says_so(app, monkeypatch):
    from hf_midi import loading

    monkeypatch.setattr(loading, "default_model_path", lambda: None)
    demo = app.build_demo(model=None)
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert "No model is available" in blocks["no-model"].value
    assert blocks["generate"].interactive is False


def test_the_sampling_sliders_start_at_the_models_own_settings(app, tiny_model, tmp_path):
    """The bundled base samples with top-p 0.98 (its generation_config.json); the page must not pass
    its own 0.95 over it."""
    import json
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "top_p": 0.9, "temperature": 1.2}))
    demo = app.build_demo(pipe=app.load_pipeline(str(folder)))
    sliders = {getattr(b, "label", None): b for b in demo.blocks.values()}
    assert sliders["Top-p (1: off)"].value == 0.9 and sliders["Temperature (higher: bolder)"].value == 1.2


def test_main_reports_a_missing_model_in_one_line(app, tmp_path, capsys):
    assert app.main(["--model", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("app.py: error: cannot load model") and "Traceback" not in err


# ------------------------------------------------------------------------------------- the Space's files
def test_space_readme_header(app):
    import gradio

    text = (SPACE_DIR / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(text.split("---")[1])
    assert header["sdk"] == "gradio" and header["sdk_version"] == gradio.__version__
    assert (SPACE_DIR / header["app_file"]).is_file()
    assert header["python_version"] == "3.11" and header["license"] == "mit"
    assert 0 < len(header["short_description"]) <= 60  # the Hub's limit


def test_space_requirements_cover_the_package(app):
    """Every runtime dependency of hf_midi and of its `space` extra is in requirements.txt (gradio
    comes from sdk_version), with the same pins where pyproject pins."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["space"]
    lines = [ln.strip() for ln in (SPACE_DIR / "requirements.txt").read_text().splitlines()]
    reqs = {re.split(r"[<>=!~ ]", ln)[0].lower(): ln for ln in lines if ln and not ln.startswith(("#", "-"))}
    for dep in wanted:
        name = re.split(r"[<>=!~ \[]", dep)[0].lower()
        if name == "gradio":
            continue
        assert name in reqs, f"requirements.txt lacks {dep}"
        if "==" in dep:
            assert reqs[name].replace(" ", "") == dep.replace(" ", "")
    assert "torch==" in reqs["torch"]  # a pinned CPU wheel; an open range pulls CUDA builds
    assert "soundfont" in (SPACE_DIR / "packages.txt").read_text()
    files = [x for _, values in app.EXAMPLES for x in values.values() if isinstance(x, str) and x.endswith(".mid")]
    assert len(set(files)) == 2 and all(Path(f).is_file() for f in files)  # the examples the page offers


def test_build_assembles_a_space_that_runs_from_its_own_copy(tiny_model, tmp_path):
    out = tmp_path / "space"
    build = [sys.executable, str(SPACE_DIR / "build.py"), str(out), "--model", str(tiny_model)]
    subprocess.run(build, check=True, capture_output=True)
    for name in ("app.py", "requirements.txt", "packages.txt", "README.md", "examples/pop909-720.mid",
                 "hf_midi/__init__.py", "hf_midi/remote_code/codec.py", "hf_midi/pretrained/base/config.json"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("__pycache__"))
    for name in ("training", "data", "evaluation", "cli.py", "hub.py"):  # only what the Space runs
        assert not (out / "hf_midi" / name).exists(), name
    # `python app.py` in the copy, as a Space runs it: it must use the copied package and model.
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_SERVER", "HF_MIDI_MODEL"))}
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=out, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in server.stdout:  # until the server is up (or has died)
            lines.append(line)
            if "Running on local URL" in line:
                break
        log = "".join(lines)
        assert f"http://127.0.0.1:{port}" in log, log  # this machine only, unless told otherwise
        used = re.search(r"hf_midi \S+ from (\S+); model: (\S+)", log)
        assert used, log
        assert Path(used[1]).resolve() == (out / "hf_midi").resolve()
        assert Path(used[2]).resolve() == (out / "hf_midi" / "pretrained" / "base").resolve()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200 and b"hf-midi piano" in page.read()
    finally:
        server.terminate()
        server.wait(timeout=30)
    # A second build into the same folder is refused, not merged.
    again = subprocess.run(build, capture_output=True, text=True)
    assert again.returncode == 1 and "exists and is not empty" in again.stderr


# ------------------------------------------------------------------------------------- load
@pytest.fixture(scope="module")
def server(app, pipe):
    demo = app.build_demo(pipe=pipe)
    port = free_port()
    app.launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_eight_concurrent_requests_all_complete(app, pipe, server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    seeds = list(range(100, 108))

    def request(seed):
        upload = handle_file(str(PROMPT_MIDI)) if seed % 2 else None  # half continue an upload
        source = app.UPLOAD if upload else app.COMPOSE
        job = client.submit(source=source, upload=upload, keep=3, seconds=3, top_p=0.95, seed=seed, new_seed=False,
                            api_name="/generate")
        return job.result(timeout=240)

    with ThreadPoolExecutor(len(seeds)) as pool:
        results = list(pool.map(request, seeds))
    assert len(results) == len(seeds)
    for seed, (status, _which, got_seed, wav, png, midi, *rest) in zip(seeds, results):
        assert got_seed == seed and status.startswith(f"Seed {seed},")  # each answer is its own
        assert Path(wav).stat().st_size > 1000 and png_size(Path(png))[0] > 0
        data = Path(midi).read_bytes()
        assert Path(midi).name == f"hf-midi-{seed}-1.mid" and midi_seconds(data) >= 2.5
        assert rest == [None] * 10  # one variation asked, one given; the live player's chunk cleared
    # the uploads were continued: their first seconds are the prompt's
    prompt = symusic.Score.from_midi(PROMPT_MIDI.read_bytes(), ttype="second")
    first = min(n.start for t in prompt.tracks for n in t.notes)
    for seed, result in zip(seeds, results):
        score = symusic.Score.from_midi(Path(result[5]).read_bytes(), ttype="second")
        starts = min(n.start for t in score.tracks for n in t.notes)
        if seed % 2:
            assert abs(starts - first) < 0.011
    # Queued requests keep their seeds: each piece is the one a lone request makes.
    for seed, result in list(zip(seeds, results))[:2]:
        settings = app.make_settings(3, 1.0, 0.95, 0, seed, 1, 3 if seed % 2 else None)
        alone = app.make_music(pipe, settings, PROMPT_MIDI.read_bytes() if seed % 2 else None, out_root=tmp_path)
        assert Path(result[5]).read_bytes() == alone[0].data


def test_the_api_takes_the_style_and_the_model(app, pipe, server):
    from gradio_client import Client

    client = Client(server, verbose=False)
    name = Path(pipe.model.name_or_path).name
    result = client.predict(app.COMPOSE, None, 3, "1", 4, 1.0, 0.95, 0, 9, False, 1, name, "C major", 60, 72,
                            "ff", 6, 2, False, api_name="/generate")
    score = symusic.Score.from_midi(Path(result[5]).read_bytes())
    notes = [n for t in score.tracks for n in t.notes]
    assert notes and all(60 <= n.pitch <= 72 and n.pitch % 12 in (0, 2, 4, 5, 7, 9, 11) and n.velocity >= 105
                         for n in notes)
    with pytest.raises(Exception, match="Pitch range: low 80 is above high 70"):
        client.predict(app.COMPOSE, None, 3, "1", 4, 1.0, 0.95, 0, 9, False, 1, name, "Any", 80, 70, "Any", 0, 0,
                       True, api_name="/generate")


def test_bad_upload_through_the_api_is_a_readable_error(app, server):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    bad = handle_file(str(EDGE_FIXTURES / "test-not-a-midi-file.mid"))
    with pytest.raises(Exception) as e:
        client.predict(source=app.UPLOAD, upload=bad, keep=3, seconds=3, seed=1, api_name="/generate")
    assert "test-not-a-midi-file.mid: not a MIDI file" in str(e.value)


def test_the_api_fills_a_gap_and_accompanies_an_upload(app, server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    tune = tmp_path / "tune.mid"  # the melody's first phrase (it enters at 12.7 s), with the arrangement
    symusic.Score(PROMPT_MIDI).to("second").clip(12.5, 20.0).shift_time(-12.5).dump_midi(tune)
    song = handle_file(str(PROMPT_MIDI))
    filled = client.predict(source=app.FILL, upload=song, fill_start=3, fill_end=5, seed=2, new_seed=False,
                            quality="Quick (1)", api_name="/generate")
    original = symusic.Score(PROMPT_MIDI).to("second")
    score = symusic.Score.from_midi(Path(filled[5]).read_bytes()).to("second")
    kept = {(round(n.time, 2), n.pitch) for t in original.tracks for n in t.notes if not 2.99 <= n.time < 5}
    got = {(round(n.time, 2), n.pitch) for t in score.tracks for n in t.notes}
    assert len(kept - got) <= len(kept) // 100  # the rest kept (to the 10-ms grid: a few round the other way)
    assert "Seed 2" in filled[0]
    together = client.predict(source=app.ACCOMPANY, upload=handle_file(str(tune)), melody_track="MELODY", seed=2,
                              new_seed=False, quality="Quick (1)", api_name="/generate")
    assert [t.name for t in symusic.Score.from_midi(Path(together[5]).read_bytes()).tracks] == [
        "Melody", "Accompaniment"]
    with pytest.raises(Exception, match="the gap must end by then"):
        client.predict(source=app.FILL, upload=song, fill_start=3, fill_end=5000, api_name="/generate")


def test_the_api_works_as_gradio_client_lists_it(app, server):
    """What ``view_api()`` lists is what the endpoint takes: every input optional (``upload`` only matters
    to continue a file), the variation to continue a string choice that is accepted as listed."""
    from gradio_client import Client

    client = Client(server, verbose=False)
    [endpoint] = [e for name, e in client.view_api(return_format="dict", print_info=False)["named_endpoints"].items()
                  if name == "/generate"]
    params = {p["parameter_name"]: p for p in endpoint["parameters"]}
    assert list(params) == [name for name in app.GENERATE_INPUTS]
    assert all(p["parameter_has_default"] for p in params.values()), [n for n, p in params.items()
                                                                      if not p["parameter_has_default"]]
    which = params["which"]["python_type"]["type"]
    assert which == "Literal['1']", which
    composed = client.predict(seconds=3, seed=5, new_seed=False, api_name="/generate")  # no upload at all
    assert composed[2] == 5 and Path(composed[5]).stat().st_size > 0
    listed = which.removeprefix("Literal[").removesuffix("]").strip("'")
    cont = client.predict(source=app.LAST, which=listed, seconds=3, seed=6, new_seed=False, api_name="/generate")
    first = symusic.Score.from_midi(Path(composed[5]).read_bytes(), ttype="second")
    longer = symusic.Score.from_midi(Path(cont[5]).read_bytes(), ttype="second")
    assert longer.end() > first.end() + 2  # the last result, continued
