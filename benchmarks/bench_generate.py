"""Generation speed: events per second of ``generate()`` on one CPU thread.

For a preset's model (random weights: speed does not depend on them), one sequence and a batch of
4, side by side in one run:

- ``greedy``: a plain greedy ``model.generate()`` (the floor: what transformers costs by itself);
- ``sample``: plain sampling ``model.generate()``;
- ``ours``: ``hf_midi.generation.generate_music`` as the pipeline calls it (sampling + the time
  limit processor and criterion), without the grammar processor;
- ``ours+grammar``: the same with ``PerformanceGrammarLogitsProcessor`` (the pipeline's default);
- with ``--compile``: ``ours+grammar`` again with a static cache and ``torch.compile``.

Every variant makes exactly ``--tokens`` tokens (``<eos>`` is suppressed in all of them), and the
variants take turns for ``--repeats`` rounds (the best round counts), so load from other processes
hits them alike. Rates are given by wall time and by the process's CPU time; on a shared machine
the CPU-time ratios are the steady ones. ``--sizes 4x256,6x384`` adds GPT-2 sizes (layers x
width). ``--stats MODEL_DIR`` measures instead what the grammar processor does to samples of a
trained model (invalid tokens, note statistics). The last line printed is one JSON object.

    python benchmarks/bench_generate.py [--preset default] [--tokens 512] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from hf_midi.codec import BOS_ID, EOS_ID, PAD_ID, SUSTAIN_OFF, SUSTAIN_ON, VELOCITY, VOCAB_SIZE  # noqa: E402
from hf_midi.generation import (  # noqa: E402
    MAX_SECONDS,
    PerformanceGrammarLogitsProcessor,
    generate_music,
    music_generation_config,
)

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"events_per_s_b1": 500, "events_per_s_b4": 1500}
WARMUP_S: dict[str, float] = {}  # first call of each variant (includes torch.compile with --compile)


# --------------------------------------------------------------------------- models
def preset_model(preset: str):
    """``hf_midi.training.build_model(preset)``; hf_midi/configs/<preset>.yaml read directly if that fails."""
    try:
        from hf_midi.training import build_model

        return build_model(preset), "hf_midi.training.build_model"
    except ImportError:
        import yaml

        m = yaml.safe_load((ROOT / "hf_midi" / "configs" / f"{preset}.yaml").read_text())["model"]
        return gpt2(m["num_layers"], m["hidden_size"], m["num_heads"], m["context_length"]), "configs yaml"


def gpt2(layers: int, width: int, heads: int | None = None, context: int = 1024):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=448, n_positions=context, n_embd=width, n_layer=layers, n_head=heads or width // 64,
                     bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return GPT2LMHeadModel(cfg)


def prepare(model):
    model.eval()
    config = music_generation_config(model, top_k=0)
    # exactly --tokens tokens each, none of them special (as the shipped generation config does)
    config.suppress_tokens = sorted(set(config.suppress_tokens or ()) | {EOS_ID, PAD_ID, BOS_ID})
    config.max_new_tokens = None
    model.generation_config.update(**{k: v for k, v in config.to_diff_dict().items() if k != "transformers_version"})
    return config


# --------------------------------------------------------------------------- speed
def variants(model, config, tokens: int, compiled_config=None):
    bos = {b: torch.full((b, 1), BOS_ID) for b in (1, 4)}

    def plain(sample: bool):
        return lambda b: model.generate(bos[b], attention_mask=torch.ones_like(bos[b]), do_sample=sample,
                                        max_new_tokens=tokens, top_k=0)

    def ours(grammar: bool, cfg=config):
        return lambda b: generate_music(model, bos[b], seconds=MAX_SECONDS, max_new_tokens=tokens,
                                        grammar=grammar, generation_config=cfg)

    out = {"greedy": plain(False), "sample": plain(True), "ours": ours(False), "ours+grammar": ours(True)}
    if compiled_config is not None:
        out["ours+grammar+static+compile"] = ours(True, compiled_config)
    return out


def measure(fns: dict, tokens: int, repeats: int) -> tuple[dict, dict]:
    """Events per second of each variant and batch size: by wall time and by this process's CPU time
    (the best round of each). CPU time leaves out the time other processes held the core, so on a
    shared machine its ratios are the steadier ones."""
    wall, cpu = {}, {}
    with torch.inference_mode():
        for name, fn in fns.items():  # warm up (and compile) outside the clock
            for b in (1, 4):
                t = time.perf_counter()
                fn(b)
                WARMUP_S[f"{name}/b{b}"] = round(time.perf_counter() - t, 2)
        for _ in range(repeats):
            for b in (1, 4):
                for name, fn in fns.items():
                    t, c = time.perf_counter(), time.process_time()
                    out = fn(b)
                    dt, dc = time.perf_counter() - t, time.process_time() - c
                    assert out.shape == (b, 1 + tokens), (name, out.shape)
                    key = f"{name}/b{b}"
                    wall[key] = min(wall.get(key, float("inf")), dt)
                    cpu[key] = min(cpu.get(key, float("inf")), dc)

    def rate(times):
        return {k: round(int(k.rsplit("b", 1)[1]) * tokens / v, 1) for k, v in times.items()}

    return rate(wall), rate(cpu)


def grammar_cost_us(batch: int, calls: int = 1000, repeats: int = 3) -> float:
    """CPU microseconds per call of the grammar processor alone (its state advancing one token a
    call), best of ``repeats``."""
    torch.manual_seed(0)
    ids = torch.randint(0, SUSTAIN_OFF + 1, (batch, calls + 1))
    scores = torch.randn(batch, 448)
    best = float("inf")
    for _ in range(repeats):
        proc = PerformanceGrammarLogitsProcessor()
        proc(ids[:, :1], scores)
        t = time.process_time()
        for n in range(2, calls + 2):
            proc(ids[:, :n], scores)
        best = min(best, time.process_time() - t)
    return round(best / calls * 1e6, 1)


def compiled(config):
    from transformers import CompileConfig

    cfg = config.__class__.from_dict(config.to_dict())
    cfg.cache_implementation = "static"
    cfg.compile_config = CompileConfig(fullgraph=False, mode="default", dynamic=False)
    cfg.compile_config._compile_all_devices = True  # transformers only auto-compiles on GPUs otherwise
    return cfg


# --------------------------------------------------------------------------- sample statistics
def invalid_counts(ids) -> dict[str, int]:
    """Tokens of a sample that the grammar forbids, by kind (a plain walk, stops at <eos>)."""
    counts = dict.fromkeys(("note_off_silent", "velocity_twice", "sustain_off_up", "sustain_on_down", "special"), 0)
    sounding, pedal, last = set(), False, None
    for t in ids[1:]:
        if t == EOS_ID:
            break
        if t >= VOCAB_SIZE or t in (PAD_ID, BOS_ID):
            counts["special"] += 1
        elif 128 <= t < 256 and t - 128 not in sounding:
            counts["note_off_silent"] += 1
        elif VELOCITY <= t < SUSTAIN_ON and last is not None and VELOCITY <= last < SUSTAIN_ON:
            counts["velocity_twice"] += 1
        elif t == SUSTAIN_OFF and not pedal:
            counts["sustain_off_up"] += 1
        elif t == SUSTAIN_ON and pedal:
            counts["sustain_on_down"] += 1
        if t < 128:
            sounding.add(t)
        elif t < 256:
            sounding.discard(t - 128)
        elif t == SUSTAIN_ON:
            pedal = True
        elif t == SUSTAIN_OFF:
            pedal = False
        last = t
    return counts


def sample_stats(model_dir: str, n: int, seconds: float, seed: int) -> dict:
    """Samples with and without the grammar processor: invalid tokens, speed, note statistics, and
    how many samples fall inside the 5-95 % band of real music (POP909 fixtures, same-length windows)."""
    from music_stats import band_report, ids_stats, window_stats
    from transformers import AutoModelForCausalLM

    from hf_midi.codec import encode

    reference = [w for f in sorted((ROOT / "tests" / "fixtures" / "pop909").glob("*.mid"))
                 for w in window_stats(encode(f), seconds)]
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = {"reference_windows": len(reference)}
    for grammar in (False, True):
        torch.manual_seed(seed)
        t = time.perf_counter()
        with torch.inference_mode():
            rows = generate_music(model, torch.full((n, 1), BOS_ID), seconds=seconds, grammar=grammar).tolist()
        dt = time.perf_counter() - t
        rows = [[t for t in r if t != PAD_ID] for r in rows]
        tokens = sum(len(r) - 1 for r in rows)
        bad = {}
        for r in rows:
            for k, v in invalid_counts(r).items():
                bad[k] = bad.get(k, 0) + v
        stats = [ids_stats(r) for r in rows]
        out["grammar" if grammar else "no_grammar"] = {
            "tokens": tokens, "events_per_s": round(tokens / dt, 1),
            "invalid_per_1000": {k: round(1000 * v / tokens, 2) for k, v in bad.items()},
            "ended_by_eos": sum(EOS_ID in r for r in rows),
            **{k: round(float(np.nanmean([s[k] for s in stats])), 3) for k in stats[0]},
            "inside_reference_band": {k: v["fraction_inside"] for k, v in band_report(stats, reference).items()},
        }
    return out


# --------------------------------------------------------------------------- main
def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def versions() -> dict:
    import symusic

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "symusic": symusic.__version__}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also static cache + torch.compile (slow to compile)")
    p.add_argument("--sizes", default="", help="extra GPT-2 sizes, e.g. 4x256,6x384 (layers x width)")
    p.add_argument("--stats", default=None, help="a trained model folder: measure the grammar's effect on samples")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result = {"bench": "generate", "machine": machine(), "versions": versions()}

    if args.stats:
        result["stats"] = sample_stats(args.stats, args.samples, args.seconds, seed=0)
        result["stats_model"] = args.stats
        print(json.dumps(result))
        return result

    torch.manual_seed(0)
    model, source = preset_model(args.preset)
    config = prepare(model)
    n_params = sum(p.numel() for p in model.parameters())
    fns = variants(model, config, args.tokens, compiled(config) if args.compile else None)
    eps, eps_cpu = measure(fns, args.tokens, args.repeats)
    for k in eps:
        print(f"{args.preset:>8} {k:<34} {eps[k]:>8.1f} events/s wall {eps_cpu[k]:>8.1f} events/cpu-s",
              file=sys.stderr)
    pairs = (("ours", "greedy"), ("ours+grammar", "greedy"), ("ours+grammar", "ours"), ("sample", "greedy"))
    result.update({
        "preset": args.preset, "model_source": source, "params": n_params, "tokens": args.tokens,
        "repeats": args.repeats, "events_per_s": eps, "events_per_cpu_s": eps_cpu,
        "ratios_cpu": {f"{a}_over_{b}/b{n}": round(eps_cpu[f"{a}/b{n}"] / eps_cpu[f"{b}/b{n}"], 3)
                       for n in (1, 4) for a, b in pairs},
        "ratios_wall": {f"{a}_over_{b}/b{n}": round(eps[f"{a}/b{n}"] / eps[f"{b}/b{n}"], 3)
                        for n in (1, 4) for a, b in pairs},
        "grammar_processor_us_per_step": {"b1": grammar_cost_us(1), "b4": grammar_cost_us(4)},
        "warmup_s": dict(WARMUP_S),
        "goals": {
            f"events_per_s_b{n}": {"goal": GOALS[f"events_per_s_b{n}"], "wall": eps[f"ours+grammar/b{n}"],
                                   "cpu": eps_cpu[f"ours+grammar/b{n}"],
                                   "met": eps_cpu[f"ours+grammar/b{n}"] >= GOALS[f"events_per_s_b{n}"]}
            for n in (1, 4)
        },
    })
    sizes = {}
    for size in filter(None, args.sizes.split(",")):
        layers, width = map(int, size.lower().split("x"))
        torch.manual_seed(0)
        m = gpt2(layers, width)
        cfg = prepare(m)
        fns = variants(m, cfg, args.tokens)
        _, r = measure({k: fns[k] for k in ("greedy", "ours+grammar")}, args.tokens, args.repeats)
        sizes[size] = {"params": sum(p.numel() for p in m.parameters()), "events_per_cpu_s": r}
        print(f"{size:>8} events/cpu-s {r}", file=sys.stderr)
    if sizes:
        result["sizes"] = sizes
    result["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
