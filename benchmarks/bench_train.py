"""Training throughput of a preset on this machine: tokens/s, achieved TFLOP/s and MFU.

    python benchmarks/bench_train.py --preset tiny [--dataset DIR] [--steps 20] [--threads 1]
    python benchmarks/bench_train.py --preset base --compile          # on a CUDA GPU: bf16 + compile

One training step is what ``hf_midi.training.train`` does (same model builder, optimizer groups,
loss, clipping; fused AdamW and bf16 autocast on CUDA), timed side by side in one process on:

- ``synthetic``: random token blocks already on the device (the model alone);
- ``real``: blocks from the dataset as training reads them (``hf_midi.training.batches.make_batches``: a prepared
  folder through ``MidiBlockStream`` and the DataLoader, or windows of a packed corpus on the device;
  ``--dataset``, default: the committed POP909 fixtures, prepared into a temporary folder);
- ``data``: the batch source alone (batches/s), to say whether it keeps up with the model.

``--profile N`` then runs N steps under ``torch.profiler`` and writes the costliest kernels (CUDA) or
ops (CPU) to ``--profile-out``, with their time by family (matmul, attention, fused/elementwise,
optimizer, loss, copies, other): what holds MFU back, measured. Shapes are timed by running this
script once a shape (``--preset gpu-base --set model.hidden_size=1024 --set model.num_heads=8``).

``real / synthetic`` step time near 1 means the data stream keeps up. FLOPs per token are the
PaLM/nanoGPT estimate (6 x matmul parameters + attention). MFU is against a stated peak: on CUDA the
device's dense bf16 peak (H100: 989 TFLOP/s); on CPU, a peak measured in this run (the best fp32
matrix multiply the same threads reach), so CPU "MFU" means "fraction of this CPU's sgemm speed".
``--generate N`` also times N tokens of KV-cached sampling on one thread (the shipped use).
On a shared CPU wall times include waiting for other jobs; the figures per process CPU-second
(``tokens_per_cpu_s``, ``mfu_per_cpu_s``) do not, and with one thread they stand for an idle core.
The last line printed is one JSON object with every figure, the machine and the versions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hf_midi.training.args import load_config  # noqa: E402
from hf_midi.training.batches import make_batches  # noqa: E402
from hf_midi.training.models import build_model, generation_config  # noqa: E402
from hf_midi.training.trainer import flops_per_token, param_groups, peak_tflops, token_loss_sum  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def cpu_peak_tflops(seconds: float = 1.0) -> float:
    """The best fp32 GEMM rate (TFLOP/s) this process reaches with its threads."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * 1024**3 / (time.perf_counter() - t))
    return best / 1e12


def fixture_dataset(tmp: str) -> str:
    from hf_midi.data.prepare import PrepareConfig, prepare_dataset

    src = ROOT / "tests" / "fixtures" / "pop909"
    out = Path(tmp) / "pop909-fixtures"
    prepare_dataset(src, out, PrepareConfig(splits_file=str(src / "split.csv"), license="mit", num_workers=0,
                                            progress=False))
    return str(out)


class _Dist:  # the single-process stand-in for the Accelerator fields make_batches reads
    process_index, num_processes = 0, 1

    def __init__(self, device):
        self.device = device

    def print(self, *args):
        print(*args, file=sys.stderr)


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


def profile_steps(step, batch, steps: int, device, out: Path, name: str) -> dict:
    """``steps`` training steps under torch.profiler: the 40 costliest kernels (CUDA) or ops (CPU) to
    ``out`` and their share of the time by family."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync(device)
    t = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(batch)
        sync(device)
    wall = (time.perf_counter() - t) / steps
    events = prof.key_averages()
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    if cuda and not hasattr(events[0], attr):
        attr = "self_cuda_time_total"
    rows = [e for e in events if getattr(e, attr, 0) > 0 and (not cuda or e.device_type.name == "CUDA")]
    rows.sort(key=lambda e: -getattr(e, attr))
    total = sum(getattr(e, attr) for e in rows) or 1.0
    families: dict[str, float] = {}
    for e in rows:
        families[_kernel_family(e.key)] = families.get(_kernel_family(e.key), 0.0) + getattr(e, attr)
    lines = [f"{name}: {steps} steps, {wall * 1e3:.1f} ms a step (wall), "
             f"{total / steps / 1e3:.1f} ms a step of {'GPU kernels' if cuda else 'CPU ops'}", "",
             f"{'share':>6} {'ms/step':>8} {'calls':>6}  family / kernel"]
    for e in rows[:40]:
        v = getattr(e, attr)
        lines.append(f"{v / total:6.1%} {v / steps / 1e3:8.2f} {e.count // steps:6d}  "
                     f"{_kernel_family(e.key)} / {e.key[:140]}")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"step_ms": round(wall * 1e3, 3), "busy_ms": round(total / steps / 1e3, 3), "table": str(out),
            "families": {k: round(v / total, 4) for k, v in sorted(families.items(), key=lambda kv: -kv[1])}}


def time_steps(step, batches, steps: int, warmup: int, device) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) of a step over ``steps`` steps after ``warmup``.

    On a shared CPU the wall time includes waiting for other jobs; the process CPU time (all its
    threads) does not, so with one thread it stands for what an idle core would do.
    """
    times, cpu = [], []
    for i in range(warmup + steps):
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        step(batches())
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return sorted(times)[len(times) // 2], sorted(cpu)[len(cpu) // 2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", help="a preset (hf_midi/training/configs/NAME.yaml) or a YAML path")
    p.add_argument("--dataset", default=None, help="a prepared dataset (default: the POP909 fixtures)")
    p.add_argument("--steps", type=int, default=10, help="timed steps a variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None, help="override the preset's per_device_batch_size")
    p.add_argument("--block-size", type=int, default=None, help="override the preset's block_size")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field, e.g. --set model.num_layers=4 (repeatable)")
    p.add_argument("--generate", type=int, default=0, metavar="N", help="also time N sampled tokens, 1 thread")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="then profile N steps (kernel table)")
    p.add_argument("--profile-out", type=Path, default=Path("profile.txt"), help="where the kernel table goes")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    overrides = {k: v for k, v in {"per_device_batch_size": args.batch_size, "block_size": args.block_size}.items()
                 if v is not None}
    if args.block_size is not None:
        overrides["model.context_length"] = args.block_size  # ignored by the LSTM
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    cfg = load_config(args.preset, overrides, check_paths=False)
    B, T = cfg.per_device_batch_size, cfg.block_size
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    flops_tok = flops_per_token(model, T)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.learning_rate,
                            betas=(cfg.adam_beta1, cfg.adam_beta2), fused=device.type == "cuda")
    fwd = torch.compile(model) if args.compile else model
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    model.train()

    def step(batch):
        with autocast():
            logits = fwd(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        n = (batch["labels"][:, 1:] != -100).sum()
        (token_loss_sum(logits, batch["labels"]) / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or fixture_dataset(tmp)
        cfg.dataset = dataset
        from hf_midi import MidiTokenizer

        real, _ = make_batches(cfg, MidiTokenizer(sustain=cfg.sustain), _Dist(device))
        ids = torch.randint(0, 390, (B, T), device=device)
        synthetic = {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}

        # side by side, alternating, so machine load hits both alike; the best of three rounds
        runs = {"synthetic": [], "real": []}
        for _ in range(3):
            runs["synthetic"].append(time_steps(step, lambda: synthetic, args.steps, args.warmup, device))
            runs["real"].append(time_steps(step, lambda: next(real), args.steps, args.warmup, device))
        (t_syn, c_syn), (t_real, c_real) = min(runs["synthetic"]), min(runs["real"])
        data, _ = make_batches(cfg, MidiTokenizer(sustain=cfg.sustain), _Dist(device))
        t0 = time.perf_counter()
        for _ in range(args.steps * 3):
            next(data)
        t_data = (time.perf_counter() - t0) / (args.steps * 3)
        profiled = None
        if args.profile:
            profiled = profile_steps(step, synthetic, args.profile, device, args.profile_out,
                                     " ".join([args.preset, *args.set]))

    threads = torch.get_num_threads()
    if device.type == "cuda":
        peak, peak_source = peak_tflops(cfg, device), f"{torch.cuda.get_device_name(device)} dense bf16 peak"
    else:
        peak, peak_source = cpu_peak_tflops(), f"fp32 1024^3 GEMM measured in this run, {threads} thread(s)"
    figures = {}
    for name, t, c in (("synthetic", t_syn, c_syn), ("real", t_real, c_real)):
        tok_s = B * T / t
        tflops = tok_s * flops_tok / 1e12
        figures[name] = {"step_s": round(t, 5), "tokens_per_s": round(tok_s, 1), "tflops": round(tflops, 5),
                         "mfu": round(tflops / peak, 4) if peak else None}
        if device.type == "cpu" and c:  # per CPU-second: what the process got, whatever else ran
            figures[name].update(cpu_s=round(c, 5), tokens_per_cpu_s=round(B * T / c, 1),
                                 mfu_per_cpu_s=round(B * T / c * flops_tok / 1e12 / peak, 4))
    figures["data"] = {"batch_s": round(t_data, 5), "tokens_per_s": round(B * T / t_data, 1)}
    figures["real_over_synthetic"] = round(t_real / t_syn, 3)
    figures["data_keeps_up"] = t_data < t_syn

    gen = None
    if args.generate:
        torch.set_num_threads(1)
        m = build_model(cfg.model).eval()
        n_gen = min(args.generate, getattr(m.config, "n_positions", args.generate + 1) - 1)
        gc = generation_config(m.config, n_gen)
        gc.min_new_tokens = n_gen
        bos = torch.tensor([[391]])
        best, best_cpu = float("inf"), float("inf")
        with torch.inference_mode():
            m.generate(bos, max_new_tokens=16, min_new_tokens=16)
            for _ in range(3):
                t, c = time.perf_counter(), time.process_time()
                m.generate(bos, generation_config=gc, attention_mask=torch.ones_like(bos))
                best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
        gen = {"tokens": n_gen, "tokens_per_s_1_thread": round(n_gen / best, 1),
               "tokens_per_cpu_s": round(n_gen / best_cpu, 1)}
        torch.set_num_threads(threads)

    name = " ".join([args.preset, *args.set])
    print(f"{name}: {n_params / 1e6:.2f} M parameters, batch {B} x {T} tokens, {device} "
          f"({'bf16' if bf16 else 'fp32'}{', compiled' if args.compile else ''}, {threads} thread(s))")
    for name in ("synthetic", "real"):
        f = figures[name]
        mfu = f"{f['mfu']:.1%}" if f["mfu"] is not None else "n/a"
        cpu = (f"  ({f['tokens_per_cpu_s']:,.0f} tok per CPU-s, MFU {f['mfu_per_cpu_s']:.1%})"
               if "tokens_per_cpu_s" in f else "")
        print(f"  {name:<9} {f['step_s'] * 1e3:8.1f} ms/step {f['tokens_per_s']:>10,.0f} tok/s "
              f"{f['tflops'] * 1e3:8.2f} GFLOP/s  MFU {mfu}{cpu}")
    print(f"  data      {t_data * 1e3:8.1f} ms/batch ({figures['data']['tokens_per_s']:,.0f} tok/s); "
          f"real/synthetic step time {figures['real_over_synthetic']:.2f}")
    print(f"  peak {peak * 1e3 if peak else float('nan'):.1f} GFLOP/s ({peak_source})")
    if gen:
        print(f"  generation: {gen['tokens_per_s_1_thread']:.0f} tokens/s, {gen['tokens_per_cpu_s']:.0f} per CPU-s "
              f"(1 thread, KV cache, {gen['tokens']} tokens from <bos>)")

    import accelerate
    import transformers

    print(json.dumps({
        "benchmark": "bench_train",
        "preset": args.preset,
        "overrides": args.set,
        "parameters": n_params,
        "batch_size": B,
        "block_size": T,
        "device": str(device),
        "precision": "bf16" if bf16 else "fp32",
        "compiled": args.compile,
        "threads": threads,
        "flops_per_token": flops_tok,
        "peak_tflops": peak,
        "peak_source": peak_source,
        **figures,
        "generation": gen,
        "profile": profiled,
        "dataset": args.dataset or "tests/fixtures/pop909 (prepared)",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "accelerate": accelerate.__version__},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
