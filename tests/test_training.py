"""train.py / hf_midi.training on a dataset prepared from the committed POP909 fixtures.

Real runs throughout: the tiny preset trains in-process or as `python train.py` subprocesses, a
run is SIGKILLed after a checkpoint and resumed, and a two-process CPU run (gloo) is launched with
`accelerate launch`. Losses are compared for exact equality where the claim is "the same run": on
CPU with one thread every kernel is deterministic, so a resumed run that restores weights,
optimizer, RNG and data position reproduces the uninterrupted run's float32 losses bit for bit
(any drift, e.g. a lost RNG draw, shows up at 1e-3, far above rounding).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import POP909_FIXTURES, ROOT, SUBPROCESS_ENV

from hf_midi.remote_code.codec import BOS_ID, EOS_ID, PAD_ID
from hf_midi.training import trainer as training
from hf_midi.training.args import load_config, parse_args
from hf_midi.training.checkpoints import checkpoints
from hf_midi.training.trainer import learning_rate, main, param_groups, token_loss_sum

pytest.importorskip("accelerate")
pytest.importorskip("datasets")
ENV = SUBPROCESS_ENV
pytestmark = pytest.mark.usefixtures("fresh_accelerate")  # conftest


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "logs" / "metrics.jsonl").read_text().splitlines()]


def losses(out) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in metrics(out)}


def args_for(dataset, out, *extra) -> list[str]:
    return ["--config", "tiny", "--dataset", dataset, "--output_dir", str(out), "--tracker", "none", *extra]


# --------------------------------------------------------------------------- configuration
def test_config_errors_name_the_field_and_stop_before_any_work(tmp_path, dataset, capsys):
    out = tmp_path / "out"
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model:\n  num_layers: 2\nlerning_rate: 0.1\n")
    cases = [
        (["--config", str(bad_yaml), "--dataset", dataset, "--output_dir", str(out)],
         "unknown field 'lerning_rate' (did you mean 'learning_rate'?)"),
        (args_for(dataset, out, "--max_steps", "ten"), "max_steps: expected int, got str 'ten'"),
        (args_for(dataset, out, "--model.num_layers", "2.5"), "model.num_layers: expected int"),
        (args_for(dataset, out, "--model.architecture", "rnn"), "model.architecture: must be one of"),
        (args_for(str(tmp_path / "nope"), out), "dataset: no such folder"),
        (["--config", "tiny", "--dataset", dataset], "output_dir: required"),
        (args_for(dataset, out, "--block_size", "256"), "block_size: 256 differs from model.context_length 128"),
        (args_for(dataset, out, "--resume", str(tmp_path)), "is not a checkpoint folder (no trainer_state.json)"),
        (["--config", "huge", "--dataset", dataset, "--output_dir", str(out)], "unknown preset 'huge'"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, (argv, message)
    assert not out.exists()
    # A split the dataset does not have: named, before the first step (no checkpoint, no model).
    assert main(args_for(dataset, out, "--eval_split", "nope")) == 1
    assert "no split 'nope'" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists() and not checkpoints(out)


def test_any_field_can_be_overridden_on_the_command_line(dataset, tmp_path):
    args = parse_args(args_for(dataset, tmp_path, "--learning_rate", "3e-4", "--model.num_layers", "3",
                               "--transpose", "[-2, 2]", "--augment", "false", "--max_minutes", "1.5",
                               "--resume"))
    assert args.learning_rate == 3e-4 and args.model.num_layers == 3 and args.transpose == [-2, 2]
    assert args.augment is False and args.max_minutes == 1.5 and args.resume == "latest"
    assert args.model.hidden_size == 64  # from hf_midi/training/configs/tiny.yaml
    assert load_config("small-stream", check_paths=False).model.architecture == "gpt2"
    assert load_config("lstm", check_paths=False).model.architecture == "musicrnn"


def test_schedule_warms_up_then_decays_by_cosine(dataset, tmp_path):
    args = load_config("tiny", {"learning_rate": 1.0, "warmup_steps": 10, "max_steps": 110, "min_lr_ratio": 0.1},
                       check_paths=False)
    lrs = [learning_rate(args, s, 0.0) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.55) and lrs[109] > 0.1
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    # A wall-clock budget: half the minutes used is half the cosine, whatever the step.
    timed = load_config("tiny", {"learning_rate": 1.0, "warmup_steps": 0, "max_steps": 10**6, "max_minutes": 60.0,
                                 "min_lr_ratio": 0.0}, check_paths=False)
    assert learning_rate(timed, 5, 30.0) == pytest.approx(0.5)


def test_no_weight_decay_on_biases_norms_and_embeddings():
    model = training.build_model("tiny")
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed and all(n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for n in decayed)
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
            "transformer.h.0.attn.c_attn.bias"} <= {names[id(p)] for p in no_decay["params"]}


def test_loss_counts_only_labelled_tokens():
    logits = torch.randn(2, 5, 448)
    labels = torch.randint(0, 390, (2, 5))
    labels[1, 3:] = -100
    logits[..., 393:] += 5.0  # the padding rows of the embedding: no event, no share of the probability
    want = sum(-torch.log_softmax(logits[b, t - 1, :393], -1)[labels[b, t]]
               for b in range(2) for t in range(1, 5) if labels[b, t] != -100)
    torch.testing.assert_close(token_loss_sum(logits, labels), want)


def test_training_evaluation_and_hf_midi_evaluate_give_the_same_nll(tmp_path):
    """The loss training reports and the NLL `hf-midi evaluate` reports are one measure: on the same
    tokens (one window from <bos>), the same number, padded vocabulary or not."""
    from hf_midi.evaluation import evaluate_model

    torch.manual_seed(0)
    model = training.build_model("tiny").eval()
    with torch.no_grad():
        model.lm_head.weight[393:] += 0.5  # give the padding rows a say, as an untrained model's may have
    ids = torch.cat([torch.tensor([BOS_ID]), torch.randint(0, 390, (100,)), torch.tensor([EOS_ID])])
    with torch.no_grad():
        train_nll = token_loss_sum(model(ids[None]).logits, ids[None]) / (len(ids) - 1)
    eval_nll = evaluate_model(model, [("x", ids.numpy())], context=128, progress=False)["nll"]
    assert abs(float(train_nll) - eval_nll) < 1e-4


# --------------------------------------------------------------------------- training runs
def test_tiny_trains_its_loss_falls_and_the_folder_loads(dataset, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    out = tmp_path / "run"
    assert main(args_for(dataset, out, "--tracker", "tensorboard")) == 0
    ms = metrics(out)
    train_losses = [m["loss"] for m in ms]
    assert [m["step"] for m in ms] == list(range(1, 41))
    assert sum(train_losses[-5:]) / 5 < sum(train_losses[:5]) / 5 - 0.5
    evals = [m["eval_loss"] for m in ms if "eval_loss" in m]
    assert len(evals) == 2 and evals[-1] < 5.6  # a uniform guess over 448 rows is ln(448) = 6.1
    logged = [m for m in ms if "tokens_per_s" in m]
    assert logged and all(m["tokens_per_s"] > 0 and m["tflops"] > 0 for m in logged)
    assert list((out / "logs").rglob("events.out.tfevents.*")), "tensorboard wrote nothing"
    assert [c.name for c in checkpoints(out)] == ["step_0000020", "step_0000040"]

    # OUT is a model folder: weights, config, generation config, tokenizer with its remote code.
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json",
                 "codec.py", "tokenization_midi.py"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin")) and not list(out.glob(".tmp*"))
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    gc = GenerationConfig.from_pretrained(out)
    assert (gc.bos_token_id, gc.eos_token_id, gc.pad_token_id, gc.do_sample) == (BOS_ID, EOS_ID, PAD_ID, True)
    tok = AutoTokenizer.from_pretrained(out)
    assert type(tok).__name__ == "MidiTokenizer"
    assert json.loads((out / "tokenizer_config.json").read_text())["auto_map"]
    # The exported weights are the last checkpoint's.
    from safetensors.torch import load_file

    ckpt = load_file(checkpoints(out)[-1] / "model.safetensors")
    assert torch.equal(ckpt["transformer.wte.weight"], model.transformer.wte.weight)
    ids = torch.tensor([tok.encode_midi(POP909_FIXTURES[0])[:100]])
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    torch.manual_seed(0)
    gen = model.generate(ids[:, :1], max_new_tokens=20, min_new_tokens=20)
    assert int(gen.max()) <= EOS_ID  # an exported model emits only the vocabulary's ids

    # The generation team's face loads the folder as it is (`import hf_midi` registers the task).
    from transformers import pipeline

    [piece] = pipeline("midi-generation", model=str(out))(max_new_tokens=16, seed=0)
    ids = piece["token_ids"]  # <bos>, then the 16 new events unless the model ended the piece first
    assert ids[0] == BOS_ID and (len(ids) == 17 or ids[-1] == EOS_ID) and all(i < 390 for i in ids[1:-1])


def test_gradient_accumulation_normalises_by_real_tokens(dataset, tmp_path):
    """Crop mode pads short pieces, so micro-batches carry different token counts: one step over 4
    blocks must equal 2 micro-batches of 2, in loss and in gradient (its norm before clipping; a
    per-micro-batch mean would weight the padded batch's tokens more and change it)."""
    common = ["--model.context_length", "1024", "--block_size", "1024", "--data_mode", "crop", "--augment", "false",
              "--max_steps", "1", "--eval_batches", "0", "--save_every", "0", "--warmup_steps", "1"]
    assert main(args_for(dataset, tmp_path / "a", *common, "--per_device_batch_size", "4")) == 0
    assert main(args_for(dataset, tmp_path / "b", *common, "--per_device_batch_size", "2",
                         "--gradient_accumulation_steps", "2")) == 0
    [a], [b] = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    # The two micro-batches really do hold different numbers of labelled tokens.
    from hf_midi import MidiTokenizer

    lengths = sorted(len(MidiTokenizer().encode_midi(p)) for p in POP909_FIXTURES)
    assert lengths[0] < 1024 <= lengths[-1]


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(dataset, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = training.token_loss_sum

    def poisoned(logits, labels):
        calls["n"] += 1
        loss = real(logits, labels)
        return loss * float("nan") if calls["n"] >= 5 else loss  # step 5 goes bad

    monkeypatch.setattr(training, "token_loss_sum", poisoned)
    out = tmp_path / "run"
    assert main(args_for(dataset, out, "--save_every", "2", "--eval_batches", "0")) == 1
    err = capsys.readouterr().err
    assert "loss is nan at step 5" in err and "step_0000004" in err
    assert [c.name for c in checkpoints(out)] == ["step_0000002", "step_0000004"]
    assert not (out / "model.safetensors").exists()
    assert max(losses(out)) == 4


def _wait_for(predicate, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def test_sigkill_then_resume_reproduces_the_uninterrupted_losses(dataset, tmp_path):
    common = ["--model.dropout", "0.1", "--max_steps", "60", "--save_every", "10", "--save_total_limit", "10",
              "--eval_every", "25"]
    # The uninterrupted reference (in this process, one thread, like the subprocesses).
    assert main(args_for(dataset, tmp_path / "ref", *common)) == 0
    ref = losses(tmp_path / "ref")

    out = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:  # a file, not a pipe nobody reads while it runs
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args_for(dataset, out, *common)], env=ENV,
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            assert _wait_for(lambda: checkpoints(out), proc), log.read_text()[-3000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = max(losses(out))
    resumed_from = int(checkpoints(out)[-1].name[5:])
    assert resumed_from < 60 and not (out / "model.safetensors").exists()

    assert main(args_for(dataset, out, *common, "--resume", "latest")) == 0
    after = losses(out)
    assert sorted(after) == list(range(1, 61))  # the killed run's steps past the checkpoint were replaced
    assert all(after[s] == ref[s] for s in range(resumed_from + 1, 61)), (resumed_from, killed_at)
    evals = lambda o: [m.get("eval_loss") for m in metrics(o) if "eval_loss" in m]  # noqa: E731
    assert evals(out)[-1] == evals(tmp_path / "ref")[-1]


def test_two_cpu_processes_train_on_disjoint_data_and_resume_in_one(dataset, tmp_path):
    out = tmp_path / "ddp"
    with socket.socket() as s:  # a free port for the gloo rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), str(ROOT / "train.py"),
           *args_for(dataset, out, "--max_steps", "6", "--save_every", "3",
                     "--per_device_batch_size", "4")]
    env = {**ENV, "ACCELERATE_USE_CPU": "1", "HF_MIDI_RECORD_BATCHES": "1"}
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    seen = []
    for rank in (0, 1):
        rows = [json.loads(line) for line in (out / "logs" / f"batches_rank{rank}.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(6)) and all(len(r["blocks"]) == 4 for r in rows)
        seen.append({b for r in rows for b in r["blocks"]})
    assert seen[0] and seen[1] and not seen[0] & seen[1], "the ranks trained on the same blocks"
    last = checkpoints(out)[-1]
    assert last.name == "step_0000006"
    for name in ("random_states_0.pkl", "random_states_1.pkl", "data_state_rank0.json", "data_state_rank1.json"):
        assert (last / name).is_file(), name
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["tokens_seen"] == 6 * 2 * 4 * 128

    # The two-process checkpoint resumes in one process, at its step.
    assert main(args_for(dataset, out, "--max_steps", "9", "--save_every", "3", "--per_device_batch_size", "4",
                         "--resume", "latest")) == 0
    after = losses(out)
    assert sorted(after) == list(range(1, 10)) and all(v == v for v in after.values())
    assert json.loads((checkpoints(out)[-1] / "trainer_state.json").read_text())["step"] == 9


def test_lstm_trains_saves_loads_and_generates(dataset, tmp_path):
    from transformers import AutoModelForCausalLM

    from hf_midi.remote_code.modeling_musicrnn import MusicRNNForCausalLM

    out = tmp_path / "lstm"
    assert main(["--config", "lstm", "--dataset", dataset, "--output_dir", str(out), "--tracker", "none",
                 "--model.hidden_size", "64", "--model.embedding_size", "32", "--model.num_layers", "2",
                 "--block_size", "128", "--per_device_batch_size", "8", "--max_steps", "30", "--warmup_steps", "3",
                 "--eval_every", "15", "--eval_batches", "2", "--save_every", "15", "--max_minutes", "null"]) == 0
    ls = [m["loss"] for m in metrics(out)]
    assert sum(ls[-5:]) / 5 < sum(ls[:5]) / 5 - 0.3
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(model, MusicRNNForCausalLM) and model.config.hidden_size == 64
    torch.manual_seed(0)
    gen = model.generate(torch.tensor([[BOS_ID]]), max_new_tokens=40, min_new_tokens=40)  # generation_config.json
    assert int(gen[0, 1:].max()) <= EOS_ID and not (gen[0, 1:] == BOS_ID).any()  # its suppressed ids hold


def test_a_compiled_model_exports_plain_keys(tmp_path):
    """torch.compile wraps the model (keys "_orig_mod.*"); the exported folder must load as plain GPT-2.
    (Compiling for real takes a minute here; wrapping is what changes the keys.)"""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from hf_midi import MidiTokenizer

    torch.manual_seed(0)
    model = training.build_model("tiny")
    compiled = torch.compile(model)
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    training.export(Accelerator(cpu=True), compiled, MidiTokenizer(), tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    for name, p in model.named_parameters():
        assert torch.equal(p, loaded.get_parameter(name)), name


def test_half_written_checkpoints_are_never_resumed_from(tmp_path):
    root = tmp_path / "checkpoints"
    for name, complete in (("step_0000010", True), ("step_0000020", False), (".tmp-step_0000030", True)):
        (root / name).mkdir(parents=True)
        if complete:
            (root / name / "trainer_state.json").write_text("{}")
    assert [c.name for c in checkpoints(tmp_path)] == ["step_0000010"]


def test_a_compile_failure_is_caught_on_the_first_call_only(monkeypatch):
    """torch.compile fails at its first call (no compiler): training goes on uncompiled, and says so. An
    error in a later call (out of memory mid-run) is raised, not taken for a compile failure."""
    from hf_midi.training import trainer

    said = []

    class Printer:
        def print(self, text):
            said.append(text)

    def model(**batch):
        return "eager"

    calls = []

    def compiled_that_fails_later(**batch):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("CPU out of memory")
        return "compiled"

    monkeypatch.setattr(trainer.torch, "compile", lambda m: compiled_that_fails_later)
    forward = trainer._Forward(model, True, Printer())
    assert forward(x=1) == "compiled"
    with pytest.raises(RuntimeError, match="out of memory"):
        forward(x=1)
    assert said == [] and forward.compiled is not None

    def never_compiles(**batch):
        raise RuntimeError("no C compiler")

    monkeypatch.setattr(trainer.torch, "compile", lambda m: never_compiles)
    forward = trainer._Forward(model, True, Printer())
    assert forward(x=1) == "eager" and forward(x=2) == "eager"
    assert len(said) == 1 and "no C compiler" in said[0] and "training uncompiled" in said[0]
