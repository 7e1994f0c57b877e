"""The one trainer on its second batch source: a packed corpus (``hf_midi.data.packed``) made from the committed
POP909 fixtures. Real runs of ``hf_midi.training`` in-process (one CPU thread, where every kernel is
deterministic, so "the same run" is checked as bit-equal losses), and the GPU recipe's plan rehearsed
with real ``accelerate launch train.py`` subprocesses.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from hf_midi import training
from hf_midi.data.packed import pack_corpus
from hf_midi.training.batches import make_batches

pytest.importorskip("accelerate")
pytestmark = pytest.mark.usefixtures("fresh_accelerate")  # conftest


@pytest.fixture(scope="module")
def corpus(packed) -> Path:
    return packed  # conftest: the committed POP909 fixtures, packed


def run(corpus, out, *extra) -> int:
    return training.main(["--config", "tiny", "--dataset", str(corpus), "--output_dir", str(out), "--tracker", "none",
                          "--eval_split", "giantmidi_val", "--progress", "false", *extra])


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "logs" / "metrics.jsonl").read_text().splitlines()]


def losses(out) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in metrics(out) if "loss" in m}


def test_the_dataset_decides_the_source_and_a_packed_run_exports_a_whole_model(corpus, tmp_path):
    from hf_midi.data.packed import PackedBatches
    from hf_midi.loading import load_model

    out = tmp_path / "out"
    assert run(corpus, out, "--max_steps", "20", "--eval_every", "10") == 0
    lines = metrics(out)
    assert lines[0]["loss"] > lines[-1]["loss"] and lines[-1]["eval_loss"] < math.log(393)
    assert lines[-1]["epoch"] > 0  # passes over the corpus, from the packed source
    model, tokenizer = load_model(out)  # weights, config, generation config and the tokenizer
    assert tokenizer is not None and model.config.n_positions == 128
    config = training.load_config("tiny", {"dataset": str(corpus), "output_dir": "x", "eval_batches": 0})
    src, _ = make_batches(config, tokenizer, _OneProcess())
    assert isinstance(src, PackedBatches)


def test_windows_can_be_drawn_from_piece_starts(corpus):
    from hf_midi.data.packed import PackedBatches
    from hf_midi.remote_code.codec import BOS_ID

    def firsts(share):
        src = PackedBatches(corpus, 64, 32, "cpu", seed=3, piece_start_share=share)
        return torch.cat([next(src)["input_ids"][:, 0] for _ in range(8)])

    assert (firsts(1.0) == BOS_ID).all()
    assert 0.35 < (firsts(0.5) == BOS_ID).float().mean() < 0.65
    assert (firsts(0.0) == BOS_ID).float().mean() < 0.05  # uniform: a piece begins once in ~2,700 tokens
    with pytest.raises(training.ConfigError, match="piece_start_share: a share"):
        training.load_config("tiny", {"dataset": str(corpus), "output_dir": "x", "piece_start_share": 1.5})


class _OneProcess:
    process_index, num_processes, device = 0, 1, torch.device("cpu")

    def print(self, *a):
        pass


def test_a_packed_run_resumes_exactly(corpus, tmp_path, fresh_accelerate):
    """The packed source's generator travels in the checkpoint: resuming at step 6 gives the
    uninterrupted run's losses 7..12 bit for bit (windows, transpositions and dropout alike)."""
    from conftest import reset_accelerate

    whole = tmp_path / "whole"
    common = ["--max_steps", "12", "--save_every", "6", "--save_total_limit", "3", "--model.dropout", "0.1",
              "--eval_batches", "0"]
    assert run(corpus, whole, *common) == 0
    reset_accelerate()
    part = tmp_path / "part"
    shutil.copytree(whole / "checkpoints" / "step_0000006", part / "checkpoints" / "step_0000006")
    assert run(corpus, part, *common, "--resume") == 0
    a, b = losses(whole), losses(part)
    assert set(b) == set(range(7, 13))
    assert [a[s] for s in range(7, 13)] == [b[s] for s in range(7, 13)]


def test_the_probe_leaves_the_run_as_it_would_have_been(corpus, tmp_path):
    """Steps timed at learning rate 0 before training (synthetic and real batches) move no weight, no
    optimizer state, no data position and no RNG: the run's losses equal a run without the probe."""
    from conftest import reset_accelerate

    common = ["--max_steps", "8", "--model.dropout", "0.1", "--eval_batches", "0", "--save_every", "0"]
    assert run(corpus, tmp_path / "plain", *common) == 0
    reset_accelerate()
    assert run(corpus, tmp_path / "probed", *common, "--probe_steps", "2") == 0
    probe = next(m for m in metrics(tmp_path / "probed") if m.get("event") == "probe")
    assert probe["synthetic_step_s"] > 0 and probe["real_step_s"] > 0 and probe["real_vs_synthetic"] > 0
    assert probe["probe_tflops"] > 0 and probe["flops_per_token"] > 0
    assert losses(tmp_path / "plain") == losses(tmp_path / "probed")


def test_a_time_budget_ends_annealed_and_continuing_adds_up(corpus, tmp_path):
    """Train a few seconds, stop, continue from the exported model (--init_from: fresh optimizer, short
    warm-up) as a later GPU window would: the continued run starts where the first ended and ends
    lower than the first run did alone; each run's cosine reached its floor at its time budget."""
    from conftest import reset_accelerate

    budget = ["--max_minutes", "0.12", "--max_steps", "1000000", "--eval_every", "0", "--save_every", "0",
              "--log_every", "5"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert run(corpus, first, *budget) == 0
    reset_accelerate()
    assert run(corpus, second, *budget, "--init_from", str(first)) == 0
    a, b = metrics(first), metrics(second)
    a_steps, b_steps = [m for m in a if "loss" in m], [m for m in b if "loss" in m]
    for steps in (a_steps, b_steps):
        assert steps[-1]["lr"] < 3e-3 * 0.2  # annealed (peak 3e-3, floor 3e-4) when the budget ran out
        assert max(m["minutes"] for m in steps if "minutes" in m) <= 0.12 + 0.05
    end_a = sum(m["loss"] for m in a_steps[-5:]) / 5
    start_b = sum(m["loss"] for m in b_steps[:3]) / 3
    assert abs(start_b - end_a) < 0.35 < math.log(393) - end_a  # it continues, not restarts
    assert b_steps[-1]["eval_loss"] < a_steps[-1]["eval_loss"]


def _bad(corpus, tmp_path, capsys, *extra) -> str:
    out = tmp_path / "never"
    assert run(corpus, out, *extra) == 2
    assert not out.exists()  # nothing written
    return capsys.readouterr().err


def test_bad_datasets_and_budgets_are_named_before_anything_is_written(corpus, tmp_path, capsys):
    from conftest import reset_accelerate

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("no data here")
    err = _bad(junk, tmp_path, capsys)
    assert "dataset:" in err and "neither a prepared dataset" in err

    damaged = tmp_path / "damaged"
    shutil.copytree(corpus, damaged)
    part = sorted(damaged.glob("train-*.u16.xz"))[0]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    reset_accelerate()
    err = _bad(damaged, tmp_path, capsys)
    assert "dataset:" in err and "sha256 differs" in err and part.name in err

    foreign = tmp_path / "foreign"
    shutil.copytree(corpus, foreign)
    manifest = json.loads((foreign / "manifest.json").read_text())
    manifest["vocab_size"] = 512
    (foreign / "manifest.json").write_text(json.dumps(manifest))
    reset_accelerate()
    err = _bad(foreign, tmp_path, capsys)
    assert "dataset:" in err and "another vocabulary" in err

    reset_accelerate()
    err = _bad(corpus, tmp_path, capsys, "--eval_split", "nope")
    assert "eval_split:" in err and "giantmidi_val" in err

    reset_accelerate()
    err = _bad(corpus, tmp_path, capsys, "--max_minutes", "0.000001")
    assert "max_minutes:" in err and "shorter than one training step" in err


def test_a_compiler_that_fails_says_so_and_training_goes_on(corpus, tmp_path, capsys, monkeypatch):
    """torch.compile with no usable C++ compiler (inductor's CPU backend needs one): the run prints why
    and trains uncompiled."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/c++",))
    out = tmp_path / "out"
    assert run(corpus, out, "--max_steps", "3", "--compile", "true", "--eval_batches", "0") == 0
    assert "compile: torch.compile failed" in capsys.readouterr().out
    assert len(losses(out)) == 3 and (out / "model.safetensors").is_file()


# --------------------------------------------------------------------------- the GPU recipe, rehearsed
def _plan_module():
    spec = importlib.util.spec_from_file_location("recipes_plan", ROOT / "recipes" / "plan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_gpu_recipe_rehearsed_on_the_cpu(corpus, tmp_path):
    """recipes/gpu_recipe.sh with the rehearsal plan: three models (the gpu plan's shapes, tiny), each
    trained by `accelerate launch train.py` on the packed corpus, scored, laid out for the trip back
    (few flat files, none over 16 MiB, bf16 shards) and restored into folders the pipeline loads."""
    from hf_midi.loading import load_pipeline

    results = tmp_path / "results"
    env = {**os.environ, "PLAN": "rehearsal", "TRAIN_SECONDS": "8", "DEADLINE": "400", "DATA": str(corpus),
           "RESULTS": str(results), "WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1",
           "EXTRA_ARGS": "--eval giantmidi_test", "COLLECT_ARGS": "--shard-mb 0.1"}
    proc = subprocess.run(["bash", str(ROOT / "recipes" / "gpu_recipe.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("== ") == 3 and "accelerate launch train.py --config tiny" in proc.stdout
    files = sorted(p.name for p in results.iterdir())
    assert "results.tar.gz" in files and len(files) <= 8
    assert any(f.startswith("base--model-0000") for f in files)  # sharded at 0.1 MB
    assert all((results / f).stat().st_size <= 16 * 2**20 for f in files)

    plan = _plan_module()
    restored = plan.restore(results, tmp_path / "restored")
    summary = json.loads((restored / "summary.json").read_text())
    assert set(summary["runs"]) == {"base", "small", "lstm"}
    for name, info in summary["runs"].items():
        assert "failed" not in info, info
        assert info["final_val_loss"] < math.log(393)  # it learned something in seconds
        # the probe ran and reported (its value is a timing: a benchmark's figure, not a test's; a tiny model's
        # two steps on a busy CI machine once read 3.6)
        assert math.isfinite(info["real_vs_synthetic"]) and info["real_vs_synthetic"] > 0
        assert info["eval"]["giantmidi_test"]["tokens"] > 0
        assert info["command"].startswith("accelerate launch train.py --config")
        pipe = load_pipeline(restored / name)  # weights, config, generation config, tokenizer
        assert next(pipe.model.parameters()).dtype == torch.float32
        assert not (restored / name / "checkpoints").exists()  # optimizer states stay on the machine


def test_collect_refuses_what_would_not_come_back(corpus, tmp_path):
    out = tmp_path / "plan"
    assert run(corpus, out / "m", "--max_steps", "1", "--eval_batches", "0") == 0
    plan = _plan_module()
    with pytest.raises(ValueError, match="weight files"):
        plan.collect(out, tmp_path / "back", shard_mb=0.01)  # ~60 shards of 10 kB
    assert not (tmp_path / "back").exists()


def test_a_corpus_too_big_for_one_call_travels_in_pieces(corpus, tmp_path):
    """recipes/trip.sh split deals a packed corpus out to N folders (one call each); recipes/stash.sh puts
    them back together on the machine: the stash is the corpus, checksums and all."""
    from hf_midi.data.packed import load_eval, load_train

    big = tmp_path / "big"
    src = json.loads((corpus / "manifest.json").read_text())["train"]["sources"]["pop"]
    pack_corpus(big, {"pop": (src["dataset"], "train")}, {"giantmidi_val": (src["dataset"], "validation")},
                parts=5, xz_preset=1, progress=False)
    env = {**os.environ, "STASH": str(tmp_path / "stash")}
    split = subprocess.run(["bash", str(ROOT / "recipes" / "trip.sh"), "split", str(big), "2"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert split.returncode == 0, split.stderr
    pieces = [tmp_path / "big.0", tmp_path / "big.1"]
    assert (pieces[0] / "manifest.json").is_file() and not (pieces[1] / "manifest.json").exists()
    assert {len(list(p.glob("train-*"))) for p in pieces} == {2, 3}

    def stash(*args):
        return subprocess.run(["bash", str(ROOT / "recipes" / "stash.sh"), *args], env=env, capture_output=True,
                              text=True, timeout=60)

    model = tmp_path / "weights.0"  # a model folder travels the same way
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"x")
    assert stash(str(model)).returncode == 0
    out = stash(str(pieces[1]))  # any order; the corpus is not whole yet, and the last call would say so
    assert out.returncode == 0 and "no manifest.json" in out.stdout
    whole = stash("whole", "big", "weights")
    assert whole.returncode == 3 and "start the trip again" in whole.stderr
    out = stash(str(pieces[0]))
    assert out.returncode == 0, out.stderr
    assert "6 of 6 files; whole" in out.stdout
    whole = stash("whole", "big", "weights")
    assert whole.returncode == 0 and "a model folder" in whole.stdout, whole.stdout + whole.stderr
    assert stash("whole", "big", "other_w").returncode == 3  # a folder that never came
    stash = tmp_path / "stash" / "big"
    assert np.array_equal(load_train(stash), load_train(big))
    exclude = ROOT / ".git" / "info" / "exclude"  # the pieces lie outside the repository: git is left alone
    assert not exclude.is_file() or "/big.0/" not in exclude.read_text()
    assert len(load_eval(stash, "giantmidi_val")) == len(load_eval(big, "giantmidi_val"))


def _trip(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "recipes" / "trip.sh"), *args], capture_output=True, text=True,
                          timeout=60, cwd=repo)


def test_the_trip_counts_what_a_call_carries(tmp_path):
    """recipes/trip.sh size: the working tree as the device tool carries it (tracked and untracked-not-ignored
    files) plus the carried folders, against the 64 MiB of one call; slim leaves the bundled weights home
    and restore puts the index back as it was."""
    repo = tmp_path / "repo"
    (repo / "recipes").mkdir(parents=True)
    shutil.copy(ROOT / "recipes" / "trip.sh", repo / "recipes")
    weights = repo / "hf_midi" / "pretrained" / "base" / "model.safetensors"
    weights.parent.mkdir(parents=True)
    with open(weights, "wb") as f:
        f.truncate(40 * 2**20)  # 40 MiB, sparse
    (weights.parent / "config.json").write_text("{}")
    (repo / ".gitignore").write_text("/ignored/\n/gpu_data.0/\n")  # carried paths are ignored ones
    (repo / "ignored").mkdir()
    (repo / "ignored" / "big.bin").write_bytes(b"x" * 2**20)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    (repo / "untracked.txt").write_bytes(b"y" * 1000)  # travels: not ignored
    carry = repo / "gpu_data.0"
    carry.mkdir()
    with open(carry / "train-000.u16.xz", "wb") as f:
        f.truncate(30 * 2**20)

    fits = _trip(repo, "size", "ignored")
    assert fits.returncode == 0, fits.stdout + fits.stderr
    assert "the working tree: 40.0 MiB" in fits.stdout and "carried ignored: 1.0 MiB" in fits.stdout
    over = _trip(repo, "size", "gpu_data.0")  # 40 + 30 MiB
    assert over.returncode == 1 and "over the 64 MiB a call carries by 6.0 MiB" in over.stdout
    missing = _trip(repo, "size", "nowhere")
    assert missing.returncode == 2 and "nowhere: nothing there to carry" in missing.stderr

    assert _trip(repo, "slim").returncode == 0
    slim = _trip(repo, "size", "gpu_data.0")  # the weights stay home: 30 MiB and change
    assert slim.returncode == 0 and "the working tree: 0.0 MiB" in slim.stdout, slim.stdout
    assert weights.is_file()  # nothing deleted
    assert _trip(repo, "restore").returncode == 0
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    assert status == "?? untracked.txt\n"  # the weights tracked again, nothing else changed


def test_a_plan_run_continues_a_trained_model(corpus, tmp_path):
    """recipes/plan.py --init_from RUN=MODEL: that run starts from the model (its shape, not the
    preset's), through the same `accelerate launch train.py`."""
    from transformers import AutoConfig

    first = tmp_path / "first"
    assert run(corpus, first, "--max_steps", "3", "--eval_batches", "0") == 0  # tiny: 2 x 64
    plan = _plan_module()
    # plan.py's own command line, as the GPU trip types it: --set passes a value as typed (a YAML reading
    # once turned "no" into false, and train.py refused it)
    assert plan.main(["train", "--plan", "rehearsal", "--data", str(corpus), "--out", str(tmp_path / "plan"),
                      "--seconds", "3", "--runs", "small", "--eval", "giantmidi_test", "--init_from", f"small={first}",
                      "--set", "cpu_threads=1", "--set", "mixed_precision=no"]) == 0
    info = json.loads((tmp_path / "plan" / "summary.json").read_text())["runs"]["small"]
    assert "failed" not in info, info
    assert f"--init_from {first}" in info["command"] and "--mixed_precision no" in info["command"]
    # the model it started from is scored on the same windows beside it (the ship decision, on the machine)
    assert info["eval_start"]["model"] == str(first)
    before = plan.evaluate(first, str(corpus), ["giantmidi_test"])["giantmidi_test"]
    assert info["eval_start"]["giantmidi_test"]["nll"] == pytest.approx(before["nll"], rel=1e-5)
    assert info["eval"]["giantmidi_test"]["tokens"] == before["tokens"]
    assert info["eval"]["giantmidi_test"]["nll"] != pytest.approx(before["nll"], rel=1e-5)  # it trained
    config = AutoConfig.from_pretrained(tmp_path / "plan" / "small")
    assert (config.n_layer, config.n_embd) == (2, 64)  # the continued model's shape; the preset says 1 x 32


def test_the_ship_rule(corpus, tmp_path):
    """recipes/plan.py ship: a model that came back replaces a bundled one only when its NLL beats the
    model it started from on the same windows and the listener finds no more broken pieces than in the
    bundled model; --apply then bundles it, in the bundled model's dtype."""
    from safetensors.torch import load_file

    plan = _plan_module()
    weak = tmp_path / "weak"
    assert run(corpus, weak, "--max_steps", "2", "--eval_batches", "0") == 0  # a tiny model, 2 steps
    # the bundled small as if it came back from continuing `weak`: both scored on the same windows
    came = tmp_path / "came"
    shutil.copytree(ROOT / "hf_midi" / "pretrained" / "small", came)
    info = {"eval": plan.evaluate(came, str(corpus), ["giantmidi_test"]),
            "eval_start": {"model": str(weak), **plan.evaluate(weak, str(corpus), ["giantmidi_test"])}}
    (came / "eval.json").write_text(json.dumps(info))
    kw = {"seed_sets": ((0, 2),), "seconds": 3.0, "sets": ("giantmidi_test",)}

    res = plan.ship_check(came, "small", **kw)  # better NLL, and the listener hears the same pieces
    assert res["ship"], res["reasons"]
    assert res["nll"]["giantmidi_test"]["after"] < res["nll"]["giantmidi_test"]["before"]
    assert res["listener_broken"]["came back"] == res["listener_broken"]["bundled"]

    backwards = tmp_path / "backwards"  # the same folder with before and after swapped: refused, saying why
    shutil.copytree(came, backwards)
    (backwards / "eval.json").write_text(json.dumps({"eval": info["eval_start"], "eval_start": info["eval"]}))
    res = plan.ship_check(backwards, "small", **kw)
    assert not res["ship"] and any(r.startswith("giantmidi_test: NLL") for r in res["reasons"])
    (backwards / "eval.json").write_text(json.dumps({"eval": info["eval"]}))  # no start scored: refused
    assert "holds no NLL" in plan.ship_check(backwards, "small", **kw)["reasons"][0]

    pretrained = tmp_path / "pretrained"  # --apply, into a copy of the package's folder
    shutil.copytree(ROOT / "hf_midi" / "pretrained" / "small", pretrained / "small")
    res = plan.ship(came, "small", pretrained=pretrained, **kw)
    assert res["bundled"] == str(pretrained / "small")
    shipped = load_file(pretrained / "small" / "model.safetensors")
    assert next(iter(shipped.values())).dtype == torch.float32  # the bundled small's dtype


def test_a_plan_stopped_while_scoring_keeps_what_it_has(corpus, tmp_path, monkeypatch):
    """The recipe's hard limit interrupts plan.py (SIGINT): scoring that is cut off is written down, the
    summary is written, and the runs after it do not start; the trained weights stay for collect."""
    plan = _plan_module()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plan, "evaluate", interrupted)
    summary = plan.train_plan("rehearsal", str(corpus), tmp_path / "plan", seconds=3, runs=["base", "small"],
                              evals=("giantmidi_test",), extra={"cpu_threads": 1})
    assert list(summary["runs"]) == ["base"] and "base" in summary["stopped"]
    assert summary["runs"]["base"]["eval_failed"] == "interrupted (the hard limit)"
    assert json.loads((tmp_path / "plan" / "summary.json").read_text())["stopped"] == summary["stopped"]
    assert (tmp_path / "plan" / "base" / "config.json").is_file()
    assert not (tmp_path / "plan" / "small").exists()
