"""The Hub tokenizer folder: it loads as remote code where hf_midi is not installed, and it is
byte for byte what the package writes (so it cannot go stale)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import POP909_FIXTURES, ROOT

from hf_midi import MidiTokenizer
from hf_midi.hub import write_tokenizer_folder

FOLDER = ROOT / "tokenizer"

CHILD = textwrap.dedent("""
    import json, sys
    sys.modules["hf_midi"] = None  # any import of the package now fails
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
    ids = tok.encode_midi(sys.argv[2])
    score = tok.decode_midi(ids)
    notes = score.tracks[0].notes.numpy()
    print(json.dumps({
        "module": type(tok).__module__, "class": type(tok).__name__, "sustain": tok.sustain,
        "ids": ids, "text": tok.decode(ids[:40]), "batch": tok(midi=[sys.argv[2]])["input_ids"],
        "notes": [notes[k].tolist() for k in ("time", "duration", "pitch", "velocity")],
        "hf_midi_loaded": any(m == "hf_midi" or m.startswith("hf_midi.") for m in sys.modules
                              if sys.modules[m] is not None),
    }))
""")


def test_folder_loads_as_remote_code_without_the_package(tmp_path):
    midi = POP909_FIXTURES[1]
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(FOLDER), str(midi)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["class"] == "MidiTokenizer" and not got["module"].startswith("hf_midi")
    assert not got["hf_midi_loaded"]
    tok = MidiTokenizer()
    ids = tok.encode_midi(midi)
    assert got["sustain"] == tok.sustain
    assert got["ids"] == ids and got["batch"] == [ids]
    assert got["text"] == tok.decode(ids[:40])
    notes = tok.decode_midi(ids).tracks[0].notes.numpy()
    assert got["notes"] == [notes[k].tolist() for k in ("time", "duration", "pitch", "velocity")]


def test_committed_folder_is_what_the_package_writes(tmp_path):
    fresh = write_tokenizer_folder(tmp_path / "tokenizer")
    committed = sorted(p.name for p in FOLDER.iterdir() if p.is_file())
    assert sorted(p.name for p in fresh.iterdir()) == committed, (
        "tokenizer/ is stale: run `python -m hf_midi.hub tokenizer`")
    for name in committed:
        assert (fresh / name).read_bytes() == (FOLDER / name).read_bytes(), (
            f"tokenizer/{name} is stale: run `python -m hf_midi.hub tokenizer`")
    assert {"codec.py", "tokenization_midi.py", "tokenizer_config.json", "vocab.json"} <= set(committed)
