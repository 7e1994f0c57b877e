"""Time-budgeted training from a packed corpus (``hf_midi.packed``): the GPU recipe's trainer.

One process trains a *plan*: a list of runs (a model, a batch shape, a learning rate and a share of the
time), one after another, each to a wall-clock budget, then scores each on the packed evaluation
sets and writes it out. It needs torch, transformers, numpy and this package; no ``datasets``, no
``accelerate``, no MIDI parsing, so it runs on a bare GPU machine with only the corpus beside it::

    python -m hf_midi.packed_training --data gpu_data --out OUT --plan gpu --seconds 480

Batches are cut on the device: random windows of ``block + 1`` ids from the concatenated stream,
each transposed by a random whole number of semitones (drawn per window in ``transpose``, narrowed so
that no note leaves 0..127; a common shift of NOTE_ON/NOTE_OFF ids is an exact transposition, SPEC).
The learning rate warms up linearly, then follows a cosine over the run's *time* budget, so a run ends
annealed whatever speed the machine has.

Before training each run times ``probe_steps`` steps on a fixed synthetic batch at learning rate 0
(this also pays torch.compile's warm-up), then the same number on real batches: their ratio is the
data path's cost (goal >= 0.95). MFU counts the PaLM estimate of training FLOPs (6 N + 12 L d T a
token, ``hf_midi.training.flops_per_token``) against ``--peak-tflops`` (989 for an H100/H200 in
dense bf16).

OUT/<run>/ holds ``config.json``, ``generation_config.json``, the weights (safetensors, shards of at
most ``--max-shard-mb``) and ``eval.json``; OUT/metrics.jsonl has one line per logged step of every
run and OUT/summary.json the figures of all runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .codec import TIME_SHIFT, VOCAB_SIZE

PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


@dataclass
class Run:
    """One model trained to a time budget."""

    name: str
    model: dict  # a ModelArguments dict (hf_midi.training.build_model)
    block: int  # tokens a window (inputs); the labels are the next ids
    batch: int  # windows a step
    lr: float
    share: float  # this run's share of the plan's training seconds
    warmup: int = 200  # steps
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0
    transpose: tuple = (-5, 6)  # inclusive semitone range drawn per window
    compile: bool = True
    dtype: str = "bf16"  # autocast dtype on CUDA ("bf16" or "fp32"); CPU runs in fp32
    save_dtype: str = "bf16"  # weights as written (bf16 halves what comes back from a GPU machine)
    eval_context: int | None = None  # GPT-2: its n_positions; LSTM: 1024-token chunks
    probe_steps: int = 10
    profile_steps: int = 0  # after the probe: this many steps under torch.profiler (a kernel table)
    probe_only: bool = False  # time the shape (compile, probe, MFU) and stop: no training, nothing saved
    log_every: int = 25
    val_every_s: float = 60.0


def _gpt2(layers: int, width: int, heads: int, ctx: int, inner: int | None = None, dropout: float = 0.0) -> dict:
    return {"architecture": "gpt2", "num_layers": layers, "hidden_size": width, "num_heads": heads,
            "context_length": ctx, "intermediate_size": inner, "dropout": dropout}


def _lstm(layers: int, width: int, emb: int, dropout: float = 0.0) -> dict:
    return {"architecture": "musicrnn", "num_layers": layers, "hidden_size": width, "embedding_size": emb,
            "dropout": dropout}


# The plans. "gpu" is sized for ~8 minutes of one H100/H200 and for what may come back from it
# (64 MiB): base 8 x 512 with a 1792-wide MLP (24.4 M parameters, 46.5 MiB in bf16), small 4 x 256
# (3.9 M, 7.4 MiB), and the LSTM baseline sized like small (3.6 M, 7.0 MiB), trained on the same data.
PLANS: dict[str, list[Run]] = {
    "gpu": [
        Run("base", _gpt2(8, 512, 8, 2048, inner=1792), block=2048, batch=64, lr=1.2e-3, share=0.64, warmup=300),
        Run("small", _gpt2(4, 256, 4, 2048), block=2048, batch=64, lr=2e-3, share=0.18, warmup=200),
        Run("lstm", _lstm(3, 384, 256), block=512, batch=256, lr=2e-3, share=0.18, warmup=200, compile=False,
        dtype="fp32"),  # cuDNN LSTM in fp32 (TF32): bf16 autocast support for cuDNN RNNs is not assumed
    ],
    # One model and all the time: the base shape trained ~2x longer than in "gpu" (its small and LSTM
    # already exist), with a kernel profile of its step, then two shapes only timed for MFU: the same
    # width with 128-wide heads, and a wider model.
    "gpu-base": [
        Run("base", _gpt2(8, 512, 8, 2048, inner=1792), block=2048, batch=64, lr=1.2e-3, share=1.0, warmup=300,
            profile_steps=6),
        Run("probe-h128", _gpt2(8, 512, 4, 2048, inner=1792), block=2048, batch=64, lr=1.2e-3, share=0.0,
            probe_only=True),
        Run("probe-768", _gpt2(8, 768, 6, 2048), block=2048, batch=64, lr=1e-3, share=0.0, probe_only=True),
    ],
    # Shapes only timed (compile, 10 steps, MFU): what would reach the 40 % MFU goal.
    "gpu-probes": [
        Run("p-base-2048", _gpt2(8, 512, 8, 2048, inner=1792), block=2048, batch=64, lr=1e-3, share=0.0,
            probe_only=True),
        Run("p-base-1024", _gpt2(8, 512, 8, 1024, inner=1792), block=1024, batch=128, lr=1e-3, share=0.0,
            probe_only=True),
        Run("p-768-2048", _gpt2(8, 768, 6, 2048), block=2048, batch=64, lr=1e-3, share=0.0, probe_only=True),
        Run("p-768-1024", _gpt2(8, 768, 6, 1024), block=1024, batch=128, lr=1e-3, share=0.0, probe_only=True),
        Run("p-1024-1024", _gpt2(8, 1024, 8, 1024), block=1024, batch=128, lr=1e-3, share=0.0, probe_only=True),
    ],
    # The 2-core CPU: one thread (a second thread slowed training whenever anything else ran, see
    # ../shared/ENVIRONMENT.md), a model small enough to see ~5 M tokens in ~1.5 h and to compose
    # fast: 3 x 256, context 1024.
    "cpu": [
        Run("cpu", _gpt2(3, 256, 4, 1024), block=1024, batch=4, lr=2e-3, share=1.0, warmup=100, compile=False,
            save_dtype="fp32", probe_steps=3, log_every=20, val_every_s=600.0),
    ],
    # The same three shapes shrunk to run in seconds on a CPU: the rehearsal of the recipe (a test).
    "rehearsal": [
        Run("base", _gpt2(2, 64, 2, 128, inner=224), block=128, batch=4, lr=3e-3, share=0.5, warmup=3,
            compile=False, probe_steps=2, log_every=2, val_every_s=2.0),
        Run("small", _gpt2(1, 32, 2, 128), block=128, batch=4, lr=3e-3, share=0.25, warmup=3, compile=False,
            probe_steps=2, log_every=2, val_every_s=2.0),
        Run("lstm", _lstm(1, 32, 16), block=64, batch=4, lr=3e-3, share=0.25, warmup=3, compile=False,
            probe_steps=2, log_every=2, val_every_s=2.0),
    ],
    # "gpu-base" shrunk the same way: a profiled run, then a shape only timed.
    "rehearsal-base": [
        Run("base", _gpt2(2, 64, 2, 128, inner=224), block=128, batch=4, lr=3e-3, share=1.0, warmup=3,
            compile=False, probe_steps=2, log_every=2, val_every_s=2.0, profile_steps=2),
        Run("probe-h128", _gpt2(2, 64, 1, 128, inner=224), block=128, batch=4, lr=3e-3, share=0.0,
            compile=False, probe_steps=2, probe_only=True),
    ],
}


# --------------------------------------------------------------------------- batches
class WindowSampler:
    """Random (block + 1)-id windows of a token stream held on ``device``, transposed per window."""

    def __init__(self, ids: np.ndarray, block: int, batch: int, device: torch.device, transpose=(0, 0),
                 seed: int = 0):
        if len(ids) < block + 2:
            raise ValueError(f"the corpus has {len(ids)} tokens: fewer than one window of {block + 1}")
        self.data = torch.from_numpy(ids.astype(np.int16)).to(device)  # ids < 393 fit int16
        self.block, self.batch, self.device = block, batch, device
        self.lo, self.hi = transpose
        self.offsets = torch.arange(block + 1, device=device)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)

    def __call__(self) -> torch.Tensor:
        starts = torch.randint(0, len(self.data) - self.block - 1, (self.batch, 1), device=self.device,
                               generator=self.gen)
        x = self.data[starts + self.offsets].long()  # (B, block + 1)
        if self.hi > self.lo or self.lo != 0:
            x = transpose_windows(x, self.lo, self.hi, self.gen)
        return x


def transpose_windows(x: torch.Tensor, lo: int, hi: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Shift every NOTE_ON/NOTE_OFF id of each row by one semitone count drawn in [lo, hi], narrowed per
    row so that no pitch leaves 0..127."""
    note = x < TIME_SHIFT  # NOTE_ON and NOTE_OFF ids
    pitch = x % 128
    low = torch.where(note, pitch, 127).amin(1)  # rows without notes: low 127, high 0 -> k clamps to 0
    high = torch.where(note, pitch, 0).amax(1)
    k = torch.randint(lo, hi + 1, (x.shape[0],), device=x.device, generator=gen)
    k = torch.minimum(torch.maximum(k, -low), 127 - high)
    k = torch.where(note.any(1), k, torch.zeros_like(k))
    return torch.where(note, x + k[:, None], x)


# --------------------------------------------------------------------------- one run
def _lr(run: Run, step: int, progress: float) -> float:
    if step < run.warmup:
        return run.lr * (step + 1) / run.warmup
    return run.lr * (run.min_lr_ratio + (1 - run.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _val_loss(model, windows: torch.Tensor, device, amp) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), amp():
        for i in range(0, len(windows), 8):
            x = windows[i : i + 8].to(device)
            logits = model(input_ids=x[:, :-1]).logits
            total += F.cross_entropy(logits[..., :VOCAB_SIZE].flatten(0, 1).float(), x[:, 1:].flatten(),
                                     reduction="sum").item()
            n += x[:, 1:].numel()
    model.train()
    return total / max(1, n)


def train_run(run: Run, ids: np.ndarray, val: np.ndarray | None, seconds: float, device: torch.device,
              out: Path, log, peak: float | None, seed: int = 0):
    """Train ``run`` for ``seconds`` of training steps (probes and validation not counted); returns
    (model, summary dict)."""
    from .training import build_model, flops_per_token, param_groups

    torch.manual_seed(seed)
    model = build_model(run.model).to(device)
    gpt2 = model.config.model_type == "gpt2"
    n_params = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    flops_tok = flops_per_token(model, run.block) if gpt2 else 6 * (n_params - embed)
    use_amp = device.type == "cuda" and run.dtype == "bf16"

    def amp():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else torch.autocast("cpu", enabled=False)

    # What the training step calls: the compiled model, or the model itself when compiling fails.
    holder = {"fwd": torch.compile(model) if (run.compile and device.type == "cuda") else model}
    sampler = WindowSampler(ids, run.block, run.batch, device, run.transpose, seed)
    val_windows = None
    if val is not None and len(val) > run.block + 2:
        g = np.random.default_rng(seed)
        starts = g.integers(0, len(val) - run.block - 1, size=32)
        val_windows = torch.from_numpy(np.stack([val[s : s + run.block + 1] for s in starts]).astype(np.int64))

    def make_opt():
        return torch.optim.AdamW(param_groups(model, run.weight_decay), lr=run.lr, betas=run.betas,
                                 fused=device.type == "cuda")

    def step_fn(x, opt, lr):
        for g in opt.param_groups:
            g["lr"] = lr
        with amp():
            logits = holder["fwd"](input_ids=x[:, :-1]).logits
            loss = F.cross_entropy(logits[..., :VOCAB_SIZE].flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), run.grad_clip) if run.grad_clip else None
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss, norm

    model.train()
    # Probe: compile warm-up, then synthetic vs real step times, at lr 0 (the weights do not move:
    # AdamW's decoupled decay is lr * wd); the optimizer is made afresh afterwards.
    t0 = time.perf_counter()
    opt = make_opt()
    synthetic = sampler()
    try:
        step_fn(synthetic, opt, 0.0)
    except Exception as e:  # a compiler failure must not cost the run: fall back to eager
        if holder["fwd"] is model:
            raise
        log({"run": run.name, "event": "compile_failed", "error": f"{type(e).__name__}: {e}"[:500]})
        holder["fwd"] = model
        opt.zero_grad(set_to_none=True)
        step_fn(synthetic, opt, 0.0)
    step_fn(synthetic, opt, 0.0)
    _sync(device)
    warmup_s = time.perf_counter() - t0

    def timed(batches) -> float:
        _sync(device)
        t = time.perf_counter()
        for _ in range(run.probe_steps):
            step_fn(batches(), opt, 0.0)
        _sync(device)
        return (time.perf_counter() - t) / run.probe_steps

    synth_s = timed(lambda: synthetic)
    real_s = timed(sampler)
    probe_tflops = synthetic[:, 1:].numel() * flops_tok / synth_s / 1e12
    log({"run": run.name, "event": "probe", "warmup_s": round(warmup_s, 2), "synthetic_step_s": synth_s,
         "real_step_s": real_s, "real_vs_synthetic": synth_s / real_s, "parameters": n_params,
         "flops_per_token": flops_tok, "probe_tflops": probe_tflops,
         "probe_mfu": probe_tflops / peak if peak else None})
    if run.profile_steps:
        try:
            profile_step(run, lambda: step_fn(sampler(), opt, 0.0), device, out, log)
        except Exception as e:  # a profiler failure must not cost the run
            log({"run": run.name, "event": "profile_failed", "error": f"{type(e).__name__}: {e}"[:500]})
    del opt
    if run.probe_only:
        return model, {"run": run.name, "probe_only": True, "parameters": n_params, "flops_per_token": flops_tok,
                       "synthetic_step_s": synth_s, "real_step_s": real_s, "real_vs_synthetic": synth_s / real_s,
                       "warmup_s": round(warmup_s, 2), "tflops": probe_tflops,
                       "mfu": probe_tflops / peak if peak else None, "config": asdict(run)}
    opt = make_opt()

    step, tokens, t_train, t_last_val = 0, 0, 0.0, 0.0
    window_t, window_tok = 0.0, 0
    losses = []
    best = {}
    while t_train < seconds:
        t = time.perf_counter()
        lr = _lr(run, step, t_train / seconds)
        x = sampler()
        loss, norm = step_fn(x, opt, lr)
        step += 1
        tokens += x[:, 1:].numel()
        if step % run.log_every == 0 or step == 1:
            loss_v = loss.item()  # a sync: the step's time is then honest
            if not math.isfinite(loss_v):
                raise FloatingPointError(f"{run.name}: loss {loss_v} at step {step}")
            losses.append(loss_v)
        if step % run.log_every == 0:
            _sync(device)
        dt = time.perf_counter() - t
        t_train += dt
        window_t += dt
        window_tok += x[:, 1:].numel()
        if step % run.log_every == 0:
            tok_s = window_tok / window_t
            rec = {"run": run.name, "step": step, "loss": losses[-1], "lr": lr, "tokens": tokens,
                   "tokens_per_s": tok_s, "tflops": tok_s * flops_tok / 1e12, "train_s": round(t_train, 2),
                   "grad_norm": None if norm is None else float(norm)}
            if peak:
                rec["mfu"] = rec["tflops"] / peak
            window_t, window_tok = 0.0, 0
            if val_windows is not None and t_train - t_last_val >= run.val_every_s:
                rec["val_loss"] = _val_loss(model, val_windows, device, amp)  # eager: no recompile
                t_last_val = t_train
            log(rec)
    final_val = _val_loss(model, val_windows, device, amp) if val_windows is not None else None
    tok_s = tokens / max(t_train, 1e-9)
    best.update(run=run.name, parameters=n_params, steps=step, tokens=tokens, train_s=round(t_train, 1),
                tokens_per_s=tok_s, tflops=tok_s * flops_tok / 1e12,
                mfu=(tok_s * flops_tok / 1e12 / peak) if peak else None,
                flops_per_token=flops_tok, final_train_loss=losses[-1] if losses else None, final_val_loss=final_val,
                warmup_s=round(warmup_s, 2), synthetic_step_s=synth_s, real_step_s=real_s,
                real_vs_synthetic=synth_s / real_s, config=asdict(run))
    log({"run": run.name, "event": "done", **{k: v for k, v in best.items() if k != "config"}})
    return model, best


def _kernel_family(name: str) -> str:
    n = name.lower()
    if "flash" in n or "fmha" in n or "attention" in n or "sdpa" in n:
        return "attention"
    if any(k in n for k in ("gemm", "nvjet", "matmul", "mm_", "cutlass", "sm90_xmma", "sm80_xmma", "ampere", "hopper",
                            "cublas", "addmm", "aten::mm", "aten::bmm")):
        return "matmul"
    if "adam" in n or "foreach" in n or "multi_tensor" in n:
        return "optimizer"
    if "nll" in n or "cross_entropy" in n or "log_softmax" in n:
        return "loss"
    if "memcpy" in n or "memset" in n:
        return "copies"
    if "triton" in n or "elementwise" in n or "reduce" in n or "norm" in n or "gelu" in n:
        return "fused/elementwise"
    return "other"


def profile_step(run: Run, step, device: torch.device, out: Path, log) -> dict:
    """``run.profile_steps`` training steps under torch.profiler (at lr 0): the 40 costliest kernels to
    ``out/profile-<run>.txt`` and their time by family (matmul, attention, fused/elementwise, optimizer,
    loss, copies, other) logged; what holds MFU back, measured."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(device)
    t = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(run.profile_steps):
            step()
        _sync(device)
    wall = (time.perf_counter() - t) / run.profile_steps
    events = prof.key_averages()
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    if cuda and not hasattr(events[0], attr):
        attr = "self_cuda_time_total"
    rows = [e for e in events if getattr(e, attr, 0) > 0 and (not cuda or e.device_type.name == "CUDA")]
    rows.sort(key=lambda e: -getattr(e, attr))
    total = sum(getattr(e, attr) for e in rows) or 1.0
    families: dict[str, float] = {}
    for e in rows:
        fam = _kernel_family(e.key)
        families[fam] = families.get(fam, 0.0) + getattr(e, attr)
    lines = [f"{run.name}: {run.profile_steps} steps, {wall * 1e3:.1f} ms a step (wall), "
             f"{total / run.profile_steps / 1e3:.1f} ms a step of {'GPU kernels' if cuda else 'CPU ops'}", "",
             f"{'share':>6} {'ms/step':>8} {'calls':>6}  family / kernel"]
    for e in rows[:40]:
        v = getattr(e, attr)
        lines.append(f"{v / total:6.1%} {v / run.profile_steps / 1e3:8.2f} {e.count // run.profile_steps:6d}  "
                     f"{_kernel_family(e.key)} / {e.key[:140]}")
    (out / f"profile-{run.name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rec = {"run": run.name, "event": "profile", "step_ms": wall * 1e3,
           "busy_ms": total / run.profile_steps / 1e3,
           "families": {k: round(v / total, 4) for k, v in sorted(families.items(), key=lambda kv: -kv[1])}}
    log(rec)
    return rec


def save_run(model, run: Run, out: Path, max_shard_mb: float) -> Path:
    """config.json, generation_config.json and the safetensors weights of one run in ``out/run.name``."""
    from .training import generation_config

    folder = out / run.name
    folder.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu")
    if run.save_dtype == "bf16":
        model = model.to(torch.bfloat16)
    model.generation_config = generation_config(model.config, max_new_tokens=2048)
    model.save_pretrained(folder, max_shard_size=f"{int(max_shard_mb * 1000)}KB", safe_serialization=True)
    return folder


def evaluate_run(model, run: Run, data: Path, names: list[str], device: torch.device) -> dict:
    from .evaluation import evaluate_model
    from .packed import load_eval

    model = model.to(device).float().eval()
    out = {}
    for name in names:
        t = time.perf_counter()
        res = evaluate_model(model, load_eval(data, name), context=run.eval_context,
                             batch_size=64 if device.type == "cuda" else 8, progress=False)
        res["seconds"] = round(time.perf_counter() - t, 1)
        out[name] = res
    return out


# --------------------------------------------------------------------------- what comes back
RESULTS_TAR = "results.tar.gz"


def collect(run_dir: str | Path, dest: str | Path, max_files: int = 8, max_mb: float = 16.0) -> list[Path]:
    """Lay out ``run_dir`` for a machine that returns few, flat files: every safetensors file as
    ``dest/<run>--<name>``, everything else (configs, eval, metrics, logs) in one ``results.tar.gz``.
    Refuses (before writing) when that makes more than ``max_files`` files or one over ``max_mb`` MiB."""
    import tarfile

    run_dir, dest = Path(run_dir), Path(dest)
    weights = sorted(run_dir.glob("*/*.safetensors"))
    too_big = [w for w in weights if w.stat().st_size > max_mb * 2**20]
    if too_big or len(weights) + 1 > max_files:
        raise ValueError(f"{run_dir}: {len(weights)} weight files (+1 archive) for at most {max_files}; "
                         f"over {max_mb} MiB: {[str(w) for w in too_big]}")
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for w in weights:
        target = dest / f"{w.parent.name}--{w.name}"
        if w.stat().st_dev == dest.stat().st_dev:
            os.replace(w, target)
        else:
            target.write_bytes(w.read_bytes())
        out.append(target)
    with tarfile.open(dest / RESULTS_TAR, "w:gz") as tar:
        for f in sorted(run_dir.rglob("*")):
            if f.is_file() and f.suffix != ".safetensors":
                tar.add(f, arcname=str(f.relative_to(run_dir)))
    return out + [dest / RESULTS_TAR]


def restore(files: str | Path, dest: str | Path) -> Path:
    """Undo ``collect``: ``files`` (what came back) -> ``dest/<run>/`` model folders with their
    weights, eval.json, and the plan's metrics and summary at ``dest``."""
    import tarfile

    from .utils import atomic_folder

    files = Path(files)
    with atomic_folder(dest) as tmp:
        with tarfile.open(files / RESULTS_TAR, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        for w in sorted(files.glob("*--*.safetensors")):
            run, _, name = w.name.partition("--")
            (tmp / run).mkdir(exist_ok=True)
            (tmp / run / name).write_bytes(w.read_bytes())
    return Path(dest)


# --------------------------------------------------------------------------- the plan
def main(argv: list[str] | None = None) -> int:
    from .packed import load_eval, load_train, read_manifest

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--collect"], ["--restore"]):  # lay out / bring back what a GPU machine returns
        if len(argv) != 3:
            print(f"usage: python -m hf_midi.packed_training {argv[0]} SRC DEST", file=sys.stderr)
            return 2
        if argv[0] == "--collect":
            for f in collect(argv[1], argv[2]):
                print(f"{f}  {f.stat().st_size / 2**20:.1f} MiB")
        else:
            print(restore(argv[1], argv[2]))
        return 0

    p = argparse.ArgumentParser(prog="python -m hf_midi.packed_training", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a packed corpus folder (hf_midi.packed)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--plan", default="gpu", choices=sorted(PLANS))
    p.add_argument("--runs", default=None, help="comma-separated subset of the plan's runs (default: all)")
    p.add_argument("--seconds", type=float, required=True, help="training seconds of the whole plan (shared by share)")
    p.add_argument("--deadline", type=float, default=None,
                   help="wall seconds from start by which everything must be written; later runs shrink to fit")
    p.add_argument("--reserve", type=float, default=25.0, help="seconds a run needs beyond training (eval, save)")
    p.add_argument("--eval", default="giantmidi_test,asap_test,pop909_test", help="evaluation sets ('' for none)")
    p.add_argument("--val", default="giantmidi_val", help="evaluation set for the validation loss")
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--peak-tflops", type=float, default=None, help="for MFU (default: known GPU peaks)")
    p.add_argument("--max-shard-mb", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    peak = args.peak_tflops
    if peak is None and device.type == "cuda":
        peak = next((v for k, v in PEAKS.items() if k in torch.cuda.get_device_name(device)), None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = open(out / "metrics.jsonl", "a", encoding="utf-8")

    def log(rec: dict) -> None:
        rec = {"time": round(time.perf_counter() - start, 2), **rec}
        metrics.write(json.dumps(rec) + "\n")
        metrics.flush()
        print(json.dumps(rec), flush=True)

    manifest = read_manifest(args.data)
    t = time.perf_counter()
    ids = load_train(args.data)
    val = None
    if args.val and args.val in manifest["eval"]:
        val = np.concatenate([x for _, x in load_eval(args.data, args.val)])
    log({"event": "data", "tokens": int(len(ids)), "load_s": round(time.perf_counter() - t, 2),
         "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
         "torch": torch.__version__, "peak_tflops": peak})
    runs = PLANS[args.plan]
    if args.runs:
        wanted = args.runs.split(",")
        unknown = set(wanted) - {r.name for r in runs}
        if unknown:
            p.error(f"--runs: {sorted(unknown)} not in plan {args.plan!r} ({[r.name for r in runs]})")
        runs = [r for r in runs if r.name in wanted]
    evals = [n for n in args.eval.split(",") if n]
    missing = [n for n in evals if n not in manifest["eval"]]
    if missing:
        p.error(f"--eval: {missing} not in {args.data} (has {sorted(manifest['eval'])})")
    total_share = sum(r.share for r in runs)
    summary = {"plan": args.plan, "device": str(device), "runs": {}, "data": manifest["train"]}
    for i, run in enumerate(runs):
        seconds = args.seconds * run.share / (total_share or 1.0)
        if args.deadline is not None and not run.probe_only:  # what is left, shared with the later runs
            later = [r for r in runs[i:] if not r.probe_only]
            left = args.deadline - (time.perf_counter() - start) - args.reserve * len(later)
            share_left = sum(r.share for r in later)
            seconds = max(5.0, min(seconds, left * run.share / share_left))
        if run.probe_only and args.deadline is not None and time.perf_counter() - start > args.deadline:
            log({"run": run.name, "event": "skipped", "reason": "past the deadline"})
            continue
        try:
            model, info = train_run(run, ids, val, seconds, device, out, log, peak, seed=args.seed)
            if run.probe_only:
                summary["runs"][run.name] = info
                del model
                continue
            save_run(model, run, out, args.max_shard_mb)  # weights first: an evaluation cut short loses nothing
            (out / run.name / "eval.json").write_text(json.dumps(info, indent=1) + "\n")
            info["eval"] = evaluate_run(model, run, Path(args.data), evals, device)
            (out / run.name / "eval.json").write_text(json.dumps(info, indent=1) + "\n")
            log({"run": run.name, "event": "eval", **{k: v["nll"] for k, v in info["eval"].items()}})
            summary["runs"][run.name] = info
        except Exception as e:  # one failed run must not cost the others
            import traceback

            traceback.print_exc()
            log({"run": run.name, "event": "failed", "error": f"{type(e).__name__}: {e}"})
            summary["runs"][run.name] = {"failed": f"{type(e).__name__}: {e}"}
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    metrics.close()
    keys = ("mfu", "real_vs_synthetic", "tokens", "final_val_loss", "failed")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk in keys} for k, v in summary["runs"].items()}))
    return 0 if all("failed" not in v for v in summary["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
