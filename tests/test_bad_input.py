"""Bad MIDI input: a clear ``HfMidiError`` naming the file and the problem, never a crash or a hang.

symusic 0.5.9 can corrupt memory on broken files, so every parse that could go wrong runs in a
child process: a segfault there fails the test instead of killing pytest.
"""

from __future__ import annotations

import csv
import json
import random
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import EDGE_FIXTURES, POP909_FIXTURES, ROOT, requires_shared_data

from hf_midi import MidiTokenizer
from hf_midi.remote_code import codec
from hf_midi.remote_code.codec import MidiReadError, TokenIdError
from hf_midi.remote_code.errors import HfMidiError

REMOTE_CODE = ROOT / "hf_midi" / "remote_code"
# The child loads the remote-code folder by path and its codec (which imports only the errors' root): it
# needs only numpy and symusic, so it starts in a fraction of the time `import hf_midi` (transformers) takes.
CHILD = textwrap.dedent(f"""
    import importlib, importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("hf_midi_rc", {str(REMOTE_CODE / "__init__.py")!r},
                                                  submodule_search_locations=[{str(REMOTE_CODE)!r}])
    sys.modules["hf_midi_rc"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["hf_midi_rc"])
    codec = importlib.import_module("hf_midi_rc.codec")
    for i, path in enumerate(json.load(sys.stdin)):
        print(json.dumps({{"start": i}}), flush=True)
        try:
            r = {{"i": i, "ids": len(codec.encode(path))}}
        except codec.HfMidiError as e:
            r = {{"i": i, "error": type(e).__name__, "message": str(e)}}
        except Exception as e:
            r = {{"i": i, "error": "UNEXPECTED " + type(e).__name__, "message": repr(e)}}
        print(json.dumps(r), flush=True)
""")


def encode_isolated(paths: list[Path], timeout: float = 240) -> list[dict]:
    """``codec.encode`` on each path in a child process; one result dict per path."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], input=json.dumps([str(p) for p in paths]), capture_output=True,
        text=True, timeout=timeout,  # a hang fails the test with TimeoutExpired
    )
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    results = [x for x in lines if "start" not in x]
    if proc.returncode != 0:
        started = [x["start"] for x in lines if "start" in x]
        culprit = paths[started[-1]] if started else "?"
        pytest.fail(f"the child died (exit {proc.returncode}) on {culprit}: {proc.stderr[-2000:]}")
    assert len(results) == len(paths)
    return results


def smf(*tracks: bytes, ntracks: int | None = None, fmt: int = 1) -> bytes:
    """A Standard MIDI File from raw track bodies (tpq 480)."""
    n = len(tracks) if ntracks is None else ntracks
    out = b"MThd" + struct.pack(">IHHH", 6, fmt, n, 480)
    for body in tracks:
        out += b"MTrk" + struct.pack(">I", len(body)) + body
    return out


EOT = b"\x00\xff\x2f\x00"
NOTE = b"\x00\x90\x3c\x40\x60\x80\x3c\x00"  # middle C, 96 ticks


# --------------------------------------------------------------------------- paths and plain bad bytes
def test_missing_path_directory_and_unreadable(tmp_path):
    with pytest.raises(MidiReadError, match=r"nope\.mid: no such file"):
        codec.encode(tmp_path / "nope.mid")
    with pytest.raises(MidiReadError, match="is a directory, not a MIDI file") as e:
        codec.encode(tmp_path)
    assert str(tmp_path) in str(e.value) and isinstance(e.value, ValueError)
    with pytest.raises(MidiReadError, match=r"nope\.mid: no such file"):
        MidiTokenizer().encode_midi(tmp_path / "nope.mid")
    with pytest.raises(TypeError, match="expected a path, bytes or symusic.Score"):
        codec.encode(12)


@pytest.mark.parametrize(("data", "problem"), [
    (b"", r"the file is empty \(0 bytes\)"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", r"not a MIDI file \(it does not start with 'MThd'\)"),
    (b"MThd\x00\x00", r"truncated MIDI header \(6 bytes\)"),
    (b"MThd" + struct.pack(">IHHH", 8, 1, 1, 480) + b"\x00\x00", "MIDI header length is 8, expected 6"),
    (b"MThd" + struct.pack(">IHHH", 6, 7, 1, 480), "MIDI format 7 is not 0, 1 or 2"),
    (b"MThd" + struct.pack(">IHHH", 6, 1, 1, 0), "0 ticks per quarter note"),
    (smf(NOTE + EOT, ntracks=3), "the header declares 3 tracks but the file holds 1"),
    (smf(NOTE + EOT)[:-3], "chunk 1 declares 12 bytes but only 9 remain"),
])
def test_bad_bytes_name_the_source_and_the_problem(data, problem, tmp_path):
    with pytest.raises(MidiReadError, match=problem) as e:
        codec.encode(data, source="upload.mid")
    assert str(e.value).startswith("upload.mid: ") and e.value.source == "upload.mid"
    path = tmp_path / "bad.mid"
    path.write_bytes(data)
    with pytest.raises(MidiReadError, match=problem) as e:
        codec.load_score(path)
    assert str(e.value).startswith(f"{path}: ")
    with pytest.raises(HfMidiError, match=problem):
        MidiTokenizer()(midi=[data])


def test_committed_broken_fixtures(tmp_path):
    cases = {
        "test-empty-file.mid": "the file is empty",
        "test-not-a-midi-file.mid": "not a MIDI file",
        "test-corrupt-file-missing-byte.mid": "truncated: chunk 1 declares 246 bytes but only 245 remain",
        "test-illegal-message-f4.mid": "symusic could not parse it: .*Unexpected EOF",
    }
    results = encode_isolated([EDGE_FIXTURES / name for name in cases])
    for (name, problem), r in zip(cases.items(), results):
        assert r.get("error") == "MidiReadError", (name, r)
        assert r["message"].startswith(str(EDGE_FIXTURES / name) + ": ")
        assert re.search(problem, r["message"]), (name, r["message"])
    # and the parseable ones are accepted, including the one with a stray byte
    ok = ["test-corrupt-file-extra-byte.mid", "test-running-status-metaevent.mid", "test-c-major-scale.mid"]
    assert all(r.get("ids", 0) > 0 for r in encode_isolated([EDGE_FIXTURES / n for n in ok]))


def test_a_midi_without_notes_encodes_to_nothing():
    assert codec.encode(EDGE_FIXTURES / "test-empty.mid").tolist() == []
    assert codec.encode(smf(b"\x00\xb0\x40\x7f" + EOT)).tolist() == []
    assert MidiTokenizer().encode_midi(EDGE_FIXTURES / "test-empty.mid") == [codec.BOS_ID, codec.EOS_ID]


def test_truncated_files_at_many_points(tmp_path):
    data = POP909_FIXTURES[0].read_bytes()
    cuts = sorted({1, 4, 13, 14, 20, 22, 23, 30, 100, len(data) // 3, len(data) // 2, len(data) - 5,
                   len(data) - 1} | set(range(14, len(data), max(1, len(data) // 40))))
    paths = []
    for n in cuts:
        paths.append(tmp_path / f"cut{n}.mid")
        paths[-1].write_bytes(data[:n])
    for n, path, r in zip(cuts, paths, encode_isolated(paths)):
        assert r.get("error") == "MidiReadError", (n, r)
        assert r["message"].startswith(f"{path}: ")
        assert "truncated" in r["message"] or "not a MIDI file" in r["message"], r["message"]


# --------------------------------------------------------------------------- what symusic would crash on
CH15_HIGH_PITCH = b"".join(b"\x00\x9f" + bytes([p]) + b"\x40" for p in range(128, 256))


@pytest.mark.parametrize(("body", "where"), [
    # note events on channel 15 with pitch bytes 128..255: symusic 0.5.9 writes outside its table
    (CH15_HIGH_PITCH + EOT, 23),
    # hidden from a standard-grammar walk: symusic's parser takes F7 as a one-byte message, so the
    # "sysex escape" F7 03 9F 80 40 is really F7, then delta 03 and a note event
    (b"".join(b"\x00\xf7\x03\x9f" + bytes([p]) + b"\x40" for p in range(128, 256)) + EOT, 25),
    # after a system message, running status is symusic's, not the last channel status
    (b"\x00\x90\x3c\x40\x00\xf8" + CH15_HIGH_PITCH + EOT, 29),
    # note-off status, after a meta event
    (b"\x00\xff\x03\x01A\x00\x8f\xa0\x00" + EOT, 28),
])
def test_channel_15_note_with_a_high_pitch_byte_is_refused(body, where, tmp_path):
    path = tmp_path / "evil.mid"
    path.write_bytes(smf(body))
    (r,) = encode_isolated([path])
    assert r.get("error") == "MidiReadError", r
    assert r["message"].startswith(f"{path}: corrupt track 1: the note event at byte {where} has pitch byte 0x")


@pytest.mark.parametrize("body", [
    b"\x9f\xff\x7f\x90\x3c\x40\x10\x80\x3c\x00" + EOT,  # a 3-byte delta time 9F FF 7F: no note event
    b"\x00\xff\x03\x04\x9f\xff\x9f\x90" + NOTE + EOT,  # the pair inside a track name
    b"\x00\xf0\x03\x9f\xff\xf7" + NOTE + EOT,  # inside a sysex
    b"\x00\x9f\x3c\x40\x60\x8f\x3c\x00" + EOT,  # channel 15 with a real pitch
    NOTE + EOT + b"\x9f\xff\x9f\xff",  # after the end-of-track event, which ends the parse
])
def test_the_screen_does_not_refuse_harmless_byte_pairs(body):
    assert len(codec.encode(smf(body))) > 0


@pytest.mark.parametrize(("body", "problem"), [
    (b"\x00\x90\xc8\x40\x60\x80\xc8\x00" + EOT, r"corrupt track 1 \(''\): a note has pitch 200, above 127"),
    (b"\x00\x90\x3c\xc8\x60\x80\x3c\x00" + EOT, "a note has velocity 200, above 127"),
    (NOTE + b"\x00\xb0\x40\xa8" + EOT, "a control change has value 168, above 127"),
    (NOTE + b"\x00\xb0\xc0\x10" + EOT, "a control change has number 192, above 127"),
])
def test_data_bytes_above_127_that_symusic_keeps_are_refused(body, problem):
    with pytest.raises(MidiReadError, match=problem):
        codec.encode(smf(body), source="x.mid")
    with pytest.raises(MidiReadError, match=problem):
        codec.load_score(smf(body), source="x.mid")


def test_fuzzed_fixtures_never_crash(tmp_path):
    rng = random.Random(1234)
    sources = [POP909_FIXTURES[0].read_bytes(), (EDGE_FIXTURES / "test-multichannel-chords-1.mid").read_bytes()]
    paths = []
    for k in range(240):
        b = bytearray(sources[k % 2])
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(14, len(b))
            op = rng.random()
            if op < 0.45:
                b[i] = rng.randrange(256)
            elif op < 0.6:
                del b[i]
            elif op < 0.75:
                b.insert(i, rng.randrange(256))
            elif op < 0.9:  # the crash class: a channel-15 note status and a high byte
                b[i:i + 2] = bytes([rng.choice((0x8F, 0x9F)), rng.randrange(128, 256)])
            else:  # a chunk length
                j = b.find(b"MTrk", rng.randrange(0, len(b)))
                if j >= 0:
                    b[j + 4:j + 8] = struct.pack(">I", rng.randrange(0, 1 << 32))
        paths.append(tmp_path / f"fuzz{k}.mid")
        paths[-1].write_bytes(bytes(b))
    results = encode_isolated(paths)
    unexpected = [r for r in results if r.get("error", "").startswith("UNEXPECTED")]
    assert not unexpected, unexpected[:3]
    assert 0 < sum("error" in r for r in results) < len(results)  # both outcomes happen


# --------------------------------------------------------------------------- token ids
def test_decode_midi_refuses_ids_outside_the_vocabulary():
    tok = MidiTokenizer()
    with pytest.raises(TokenIdError, match=r"token id 400 at position 3 is outside 0\.\.392"):
        tok.decode_midi([391, 60, 300, 400, 392])
    with pytest.raises(TokenIdError, match=r"token id -2 at position 0"):
        tok.decode_midi(np.array([-2]))
    with pytest.raises(TokenIdError):
        tok.decode_midi([[60, 1000]])


def test_decode_midi_accepts_any_sequence_in_range():
    tok = MidiTokenizer()
    rng = np.random.default_rng(0)
    for n in (0, 1, 5, 300):
        score = tok.decode_midi(rng.integers(0, codec.VOCAB_SIZE, n))
        assert len(score.tracks) == 1
    assert len(tok.decode_midi([codec.EOS_ID] * 3).tracks[0].notes) == 0


# --------------------------------------------------------------------------- the shared corpora
@pytest.mark.data
@requires_shared_data
def test_every_edge_case_is_read_or_refused_cleanly(shared_data):
    with open(shared_data / "edge_cases" / "MANIFEST.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    results = encode_isolated([shared_data / "edge_cases" / r["path"] for r in rows])
    for row, r in zip(rows, results):
        if row["symusic_0_6_0_parses"] == "1":  # no false refusals
            assert "ids" in r, (row["path"], r)
        else:
            assert r.get("error") == "MidiReadError", (row["path"], r)
            assert r["message"].startswith(str(shared_data / "edge_cases" / row["path"]) + ": ")
    assert sum(row["symusic_0_6_0_parses"] == "0" for row in rows) == 10


@pytest.mark.data
@requires_shared_data
def test_every_pop909_and_asap_file_passes_check_smf(shared_data):
    files = sorted((shared_data / "pop909").rglob("*.mid")) + sorted((shared_data / "asap").rglob("*.mid"))
    assert len(files) == 909 + 1302
    for path in files:
        codec.check_smf(path.read_bytes(), str(path))


def test_one_error_root_and_the_cli_keeps_a_defects_traceback(monkeypatch, capsys, tmp_path):
    """Every error the package raises on purpose derives from HfMidiError; the CLI prints those as one line,
    and lets any other exception (a defect, say a numpy ValueError) keep its traceback."""
    import hf_midi.cli as cli
    from hf_midi.data.packed import PackedError
    from hf_midi.data.prepare import PrepareError
    from hf_midi.hub import HubError
    from hf_midi.loading import ModelLoadError
    from hf_midi.remote_code.arguments import GenerationError
    from hf_midi.remote_code.errors import HfMidiError
    from hf_midi.remote_code.fast_generation import FastPathError
    from hf_midi.render import RenderError
    from hf_midi.training import TrainingError
    from hf_midi.training.args import ConfigError
    from hf_midi.training.finetune import FinetuneError

    for error in (PackedError, PrepareError, HubError, ModelLoadError, FastPathError, GenerationError, RenderError,
                  ConfigError, FinetuneError, TrainingError):
        assert issubclass(error, HfMidiError), error
    assert cli.main(["tokenize", str(tmp_path / "missing.mid")]) == 1  # a named problem: one line
    assert "missing.mid" in capsys.readouterr().err

    def defect(args):
        import numpy as np

        return np.zeros(2).reshape(3)  # ValueError: a bug, not bad input

    monkeypatch.setattr(cli, "run_tokenize", defect)
    with pytest.raises(ValueError, match="cannot reshape"):
        cli.main(["tokenize", str(tmp_path / "missing.mid")])
