"""The Hub round trip: export a model folder, load it by repo id from a Hugging Face cache, offline,
in a process where hf_midi cannot be imported (issue 6)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_midi import MidiTokenizer
from hf_midi.hub import HubError, export_model_folder, push_folder

ROOT = Path(__file__).resolve().parents[1]


def _save_model(preset: str, out: Path) -> Path:
    from hf_midi.training import build_model, generation_config

    torch.manual_seed(0)
    model = build_model(preset)
    model.generation_config = generation_config(model.config)
    model.save_pretrained(out)
    MidiTokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hub")
    card = base / "card.md"
    card.write_text("---\nlibrary_name: transformers\n---\n# test card\n")
    out = {}
    for preset in ("tiny", "lstm"):
        trained = _save_model(preset, base / f"trained-{preset}")
        out[preset] = export_model_folder(trained, base / f"export-{preset}", card)
    return out


def _place_in_cache(folder: Path, cache: Path, repo_id: str) -> None:
    """The layout huggingface_hub resolves offline: models--user--name/{refs/main, snapshots/REV/}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    rev = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    shutil.copytree(folder, repo / "snapshots" / rev)


def test_export_folder_contents(exported):
    folder = exported["tiny"]
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json",
            "vocab.json", "README.md", "codec.py", "tokenization_midi.py",
            "pipeline_midi_generation.py"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    config = json.loads((folder / "config.json").read_text())
    impl = config["custom_pipelines"]["midi-generation"]["impl"]
    assert (folder / (impl.split(".")[0] + ".py")).is_file()
    assert json.loads((folder / "tokenizer_config.json").read_text())["auto_map"]["AutoTokenizer"][0] == (
        "tokenization_midi.MidiTokenizer")
    assert (folder / "README.md").read_text().startswith("---\nlibrary_name: transformers")
    # The remote code must not need the package: no absolute import of hf_midi anywhere.
    for py in folder.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
        assert "hf_midi" not in imported, py.name
    lstm = json.loads((exported["lstm"] / "config.json").read_text())
    assert lstm["auto_map"]["AutoModelForCausalLM"] == "modeling_musicrnn.MusicRNNForCausalLM"
    assert (exported["lstm"] / "modeling_musicrnn.py").is_file()


_REMOTE_SCRIPT = r"""
import json, sys
sys.modules["hf_midi"] = None  # the package cannot be imported in this process
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
torch.set_num_threads(1)
out = {}
tok = AutoTokenizer.from_pretrained("user/tiny-midi", trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained("user/tiny-midi")  # plain GPT-2: no remote code
out["tokenizer_module"] = type(tok).__module__
out["model_class"] = type(model).__name__
torch.manual_seed(3)
gen = model.generate(torch.tensor([[tok.bos_token_id]]), max_new_tokens=24, do_sample=True)
out["generate_ids"] = gen[0].tolist()
out["decoded_notes"] = tok.decode_midi(gen[0]).note_num()
pipe = pipeline("midi-generation", model="user/tiny-midi", trust_remote_code=True)
res = pipe(seconds=2.0, seed=5)
out["pipeline_ids"] = res[0]["token_ids"]
out["pipeline_seconds"] = res[0]["seconds"]
out["pipeline_midi_head"] = res[0]["midi"][:4].decode()
out["steered_ids"] = pipe(seconds=2.0, seed=5, key="D minor", dynamics="ff", pedal=False)[0]["token_ids"]
lstm = AutoModelForCausalLM.from_pretrained("user/lstm-midi", trust_remote_code=True)
out["lstm_class"] = type(lstm).__name__
torch.manual_seed(3)
out["lstm_ids"] = lstm.generate(torch.tensor([[391]]), max_new_tokens=12, do_sample=True)[0].tolist()
print(json.dumps(out))
"""


def test_load_by_repo_id_from_cache_without_hf_midi(exported, tmp_path):
    cache = tmp_path / "hub-cache"
    _place_in_cache(exported["tiny"], cache, "user/tiny-midi")
    _place_in_cache(exported["lstm"], cache, "user/lstm-midi")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _REMOTE_SCRIPT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["tokenizer_module"].startswith("transformers_modules.")
    assert out["model_class"] == "GPT2LMHeadModel"
    assert out["lstm_class"] == "MusicRNNForCausalLM"
    assert out["pipeline_midi_head"] == "MThd"
    assert 0 < out["pipeline_seconds"] <= 2.0 + 1e-6
    assert all(0 <= i < 393 for i in out["generate_ids"] + out["pipeline_ids"] + out["lstm_ids"])

    # The same calls in-package give the same tokens: the Hub copy is the package's behaviour.
    from transformers import AutoModelForCausalLM

    from hf_midi.loading import load_pipeline
    from hf_midi.remote_code.modeling_musicrnn import MusicRNNForCausalLM

    model = AutoModelForCausalLM.from_pretrained(exported["tiny"])
    torch.manual_seed(3)
    gen = model.generate(torch.tensor([[391]]), max_new_tokens=24, do_sample=True)
    assert gen[0].tolist() == out["generate_ids"]
    assert load_pipeline(exported["tiny"])(seconds=2.0, seed=5)[0]["token_ids"] == out["pipeline_ids"]
    # the controls travel with the remote code: the same steered piece, every note in D minor at ff
    steered = load_pipeline(exported["tiny"])(seconds=2.0, seed=5, key="D minor", dynamics="ff", pedal=False)
    assert steered[0]["token_ids"] == out["steered_ids"]
    notes = [t for t in out["steered_ids"] if t < 128]
    assert notes and all(t % 12 in (2, 4, 5, 7, 9, 10, 0, 1) for t in notes)
    velocities = [t for t in out["steered_ids"] if 356 <= t < 388]  # VELOCITY ids
    assert velocities and min(velocities) >= 356 + 26  # bins 27-32 only: velocities 106-126, ff
    lstm = MusicRNNForCausalLM.from_pretrained(exported["lstm"])
    torch.manual_seed(3)
    assert lstm.generate(torch.tensor([[391]]), max_new_tokens=12, do_sample=True)[0].tolist() == out["lstm_ids"]


def test_export_rejects_incomplete_folders(tmp_path):
    with pytest.raises(HubError, match="no such model folder"):
        export_model_folder(tmp_path / "missing", tmp_path / "out")
    trained = _save_model("tiny", tmp_path / "m")
    (trained / "tokenizer_config.json").unlink()
    with pytest.raises(HubError, match="tokenizer_config.json is missing"):
        export_model_folder(trained, tmp_path / "out")
    MidiTokenizer().save_pretrained(trained)
    (trained / "model.safetensors").rename(trained / "pytorch_model.bin")
    with pytest.raises(HubError, match="only safetensors"):
        export_model_folder(trained, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out.") for p in tmp_path.iterdir())  # nothing half-written


def test_push_needs_a_token_and_a_valid_repo_id(exported, monkeypatch):
    from huggingface_hub import get_token

    monkeypatch.delenv("HF_TOKEN", raising=False)
    if get_token():
        pytest.skip("a Hugging Face token is configured on this machine")
    with pytest.raises(HubError, match="no Hugging Face token"):
        push_folder(exported["tiny"], "user/name")
    with pytest.raises(HubError, match="not of the form"):
        push_folder(exported["tiny"], "no-slash", token="x")
    with pytest.raises(HubError, match="not an exported model folder"):
        push_folder(exported["tiny"] / "nope", "user/name", token="x")


def test_bundle_model_trims_positions_and_keeps_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    from hf_midi.hub import bundle_model

    trained = _save_model("tiny", tmp_path / "trained")
    full = AutoModelForCausalLM.from_pretrained(trained)
    n = full.config.n_positions
    out = bundle_model(trained, tmp_path / "bundled", context=n // 2)
    small = AutoModelForCausalLM.from_pretrained(out)
    assert small.config.n_positions == n // 2 and small.transformer.wpe.weight.shape[0] == n // 2
    ids = torch.randint(0, 390, (1, n // 2))
    with torch.no_grad():
        assert torch.equal(full(ids).logits, small(ids).logits)
    assert MidiTokenizer.from_pretrained(out).model_max_length == n // 2
    with pytest.raises(HubError, match="context must be"):
        bundle_model(trained, tmp_path / "bad", context=n + 1)
    assert not (tmp_path / "bad").exists()


def test_a_searching_folder_takes_its_critic_to_the_hub(tmp_path):
    """The critic travels with a folder whose generation config searches: its own, else the bundled one; a folder
    that does not search takes none."""
    import json

    from conftest import save_tiny_model

    from hf_midi.loading import bundled_critic_path
    from hf_midi.remote_code.critic import CRITIC_CONFIG, CRITIC_WEIGHTS, MusicCritic

    plain = save_tiny_model(tmp_path / "plain")
    assert not (export_model_folder(plain, tmp_path / "out-plain") / CRITIC_CONFIG).exists()
    searching = save_tiny_model(tmp_path / "searching")
    config = json.loads((searching / "generation_config.json").read_text())
    (searching / "generation_config.json").write_text(json.dumps(config | {"candidates": 4}))
    out = export_model_folder(searching, tmp_path / "out-searching")
    if bundled_critic_path() is not None:
        assert (out / CRITIC_WEIGHTS).read_bytes() == (bundled_critic_path() / CRITIC_WEIGHTS).read_bytes()
        assert MusicCritic.from_pretrained(out).training_report
    assert "critic.py" in {p.name for p in out.iterdir()} and "search.py" in {p.name for p in out.iterdir()}
