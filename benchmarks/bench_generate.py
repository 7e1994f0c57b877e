"""Generation speed on one CPU thread: the pipeline's default path against plain ``model.generate()``.

For one model (default: the bundled one; ``--model DIR``), one sequence and a batch of 4, side by side
in one run, each variant making exactly ``--tokens`` new tokens (``<eos>`` is suppressed for all):

- ``generate``: plain ``model.generate(do_sample=True)`` with the model's generation config (the
  baseline: what transformers costs by itself);
- ``pipeline/slow``: ``pipeline("midi-generation")`` with ``fast=False`` (generate()'s own loop with
  the music processors: the path before the fast one);
- ``pipeline``: the pipeline's default (the fast loop, ``weights="auto"``);
- ``pipeline/float32``, ``pipeline/float16``, ``pipeline/int8``: the fast loop in each weight format.

Variants take turns for ``--repeats`` rounds, in a new order each round (the best round counts), so
load from other processes and what the previous call left in the caches hit them alike; rates by
wall time and by this process's CPU time. The first call of each variant
is timed apart (``warmup_s``: first call minus a steady call: packing weights, allocating).
``--sizes 2x256,8x512`` adds random GPT-2s of those shapes (layers x width, context 2048): plain
generate against the fast loop's formats. ``--quality N`` samples N pieces of ``--seconds`` with
and without the fast path (same seeds; float16, int8) and compares their music statistics, with a
second set of seeds as the noise yardstick. ``--stats MODEL_DIR`` measures instead what the
grammar processor does to samples. The last line printed is one JSON object.

    python benchmarks/bench_generate.py [--model DIR] [--tokens 384] [--sizes 2x256,4x256,8x512] [--quality 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from hf_midi.remote_code.codec import BOS_ID, EOS_ID, PAD_ID, SUSTAIN_OFF, SUSTAIN_ON, VELOCITY, VOCAB_SIZE  # noqa: E402
from hf_midi.remote_code.fast_generation import packed_formats_available  # noqa: E402
from hf_midi.remote_code.generation import generate_music, music_generation_config
from hf_midi.remote_code.processors import PerformanceGrammarLogitsProcessor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
GOALS = {"ratio": 2.0, "events_per_s_b1": 500, "events_per_s_b4": 1500, "warmup_s": 3.0}
FORMATS = ("float32", "float16", "int8") if packed_formats_available() else ("float32",)


# --------------------------------------------------------------------------- models
def gpt2(layers: int, width: int, heads: int | None = None, context: int = 2048):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=448, n_positions=context, n_embd=width, n_layer=layers, n_head=heads or width // 64,
                     bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return GPT2LMHeadModel(cfg).eval()


def plays_on(model) -> None:
    """The model's generation config, sampling, with <eos> suppressed: every call makes exactly the
    asked number of tokens (a trained model would otherwise end pieces at different lengths)."""
    config = music_generation_config(model)
    config.suppress_tokens = sorted(set(config.suppress_tokens or ()) | {EOS_ID, PAD_ID, BOS_ID})
    config.max_new_tokens = None
    model.generation_config = config


# --------------------------------------------------------------------------- speed
def pipeline_variants(pipe, tokens: int) -> dict:
    model = pipe.model
    bos = {b: torch.full((b, 1), BOS_ID) for b in (1, 4)}
    out = {"generate": lambda b: model.generate(bos[b], attention_mask=torch.ones_like(bos[b]), do_sample=True,
                                                max_new_tokens=tokens)}

    def via_pipe(**kw):
        return lambda b: pipe(max_new_tokens=tokens, num_return_sequences=b, **kw)

    out["pipeline/slow"] = via_pipe(fast=False)
    out["pipeline"] = via_pipe()
    for fmt in FORMATS:
        out[f"pipeline/{fmt}"] = via_pipe(weights=fmt)
    return out


def draft_variants(pipe, draft, tokens: int) -> dict:
    """One sequence: plain generate(), the pipeline (auto, int8) and the pipeline with ``draft`` drafting
    (transformers' assisted generation, speculative sampling, the music processors on both)."""
    model = pipe.model
    bos = torch.full((1, 1), BOS_ID)
    return {
        "generate": lambda b: model.generate(bos, attention_mask=torch.ones_like(bos), do_sample=True,
                                             max_new_tokens=tokens),
        "pipeline": lambda b: pipe(max_new_tokens=tokens),
        "pipeline/int8": lambda b: pipe(max_new_tokens=tokens, weights="int8"),
        "pipeline/assisted": lambda b: pipe(max_new_tokens=tokens, assistant_model=draft),
    }


def acceptance(pipe, draft, tokens: int, seeds=(0, 1, 2)) -> dict:
    """How much of the draft the target keeps: forward calls of each model over assisted calls. Each
    target call adds its own token after the drafts it accepted, so accepted = tokens - target calls."""
    calls = {"target": 0, "draft": 0}
    hooks = [pipe.model.register_forward_pre_hook(lambda *_: calls.__setitem__("target", calls["target"] + 1)),
             draft.register_forward_pre_hook(lambda *_: calls.__setitem__("draft", calls["draft"] + 1))]
    made = 0
    try:
        with torch.inference_mode():
            for seed in seeds:
                made += len(pipe(max_new_tokens=tokens, assistant_model=draft, seed=seed)[0]["token_ids"]) - 1
    finally:
        for h in hooks:
            h.remove()
    accepted = made - calls["target"]
    # every draft call but the round's first (the prefix) proposes one token more; the first does too
    return {"tokens": made, "target_calls": calls["target"], "draft_calls": calls["draft"],
            "tokens_per_target_call": round(made / calls["target"], 2),
            "acceptance_rate": round(accepted / max(calls["draft"], 1), 3)}


def direct_variants(model, tokens: int) -> dict:
    """For the size table (no tokenizer needed): generate() against the fast loop via generate_music."""
    bos = {b: torch.full((b, 1), BOS_ID) for b in (1, 4)}
    out = {"generate": lambda b: model.generate(bos[b], attention_mask=torch.ones_like(bos[b]), do_sample=True,
                                                max_new_tokens=tokens)}
    for fmt in ("auto", *FORMATS):
        out[f"fast/{fmt}"] = (lambda f: lambda b: generate_music(model, bos[b], seconds=None, max_new_tokens=tokens,
                                                                 weights=f))(fmt)
    return out


def count(out) -> int:
    if isinstance(out, list):  # pipeline results
        return sum(len(r["token_ids"]) - 1 for r in out)
    return int((out[:, 1:] != PAD_ID).sum())


def measure(fns: dict, tokens: int, repeats: int, batches=(1, 4)) -> tuple[dict, dict, dict]:
    """Events per second of each variant and batch (wall, CPU; best round) and each first call's
    extra seconds over a steady call."""
    wall, cpu, first = {}, {}, {}
    with torch.inference_mode():
        for name, fn in fns.items():
            for b in batches:
                t = time.perf_counter()
                assert count(fn(b)) == b * tokens, name
                first[f"{name}/b{b}"] = time.perf_counter() - t
        order = list(fns.items())
        for round_ in range(repeats):
            random.Random(round_).shuffle(order)  # no variant always follows the same one
            for b in batches:
                for name, fn in order:
                    t, c = time.perf_counter(), time.process_time()
                    n = count(fn(b))
                    dt, dc = time.perf_counter() - t, time.process_time() - c
                    assert n == b * tokens, (name, n)
                    key = f"{name}/b{b}"
                    wall[key] = min(wall.get(key, float("inf")), dt)
                    cpu[key] = min(cpu.get(key, float("inf")), dc)

    def rate(times):
        return {k: round(int(k.rsplit("b", 1)[1]) * tokens / v, 1) for k, v in times.items()}

    warm = {k: round(max(first[k] - wall[k], 0.0), 3) for k in wall}
    return rate(wall), rate(cpu), warm


def first_call_in_fresh_process(model_dir: str, tokens: int) -> dict:
    """Seconds of a new process's first and second pipeline call (the default path, one piece): what a
    user's first click pays beyond a steady one."""
    import subprocess

    code = (
        "import time, torch; torch.set_num_threads(1)\n"
        "from transformers import pipeline\nimport hf_midi\n"
        f"pipe = pipeline('midi-generation', model={model_dir!r})\n"
        "import bench_generate as bg\nbg.plays_on(pipe.model)\n"
        "out = []\n"
        "for _ in range(2):\n"
        f"    t = time.perf_counter(); pipe(max_new_tokens={tokens}); out.append(time.perf_counter() - t)\n"
        "print(out[0], out[1])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "benchmarks")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"the fresh-process timing failed:\n{res.stderr[-3000:]}")
    a, b = map(float, res.stdout.split()[-2:])
    return {"first_s": round(a, 3), "second_s": round(b, 3), "warmup_s": round(a - b, 3)}


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


# --------------------------------------------------------------------------- quality
def quality(model, n: int, seconds: float, batch: int = 4, draft=None) -> dict:
    """Music statistics of ``n`` pieces per arm: the slow path (seeds 0..), the fast path in each
    format (same seeds), and the slow path with other seeds (the noise between two sets of samples).
    For each statistic: each arm's mean, and its difference from the slow arm in units of the
    standard error of a difference of two means; ``same_tokens``: arms whose pieces equal the slow
    arm's token for token."""
    from hf_midi.evaluation.music_stats import STATS, ids_stats

    arms = {"slow": dict(fast=False), **{f"fast/{f}": dict(weights=f) for f in FORMATS},
            "slow/other_seeds": dict(fast=False)}
    if draft is not None:  # one sequence at a time: transformers drafts for one
        arms["assisted"] = dict(assistant_model=draft)
    pieces = {}
    for arm, kw in arms.items():
        rows = []
        t = time.perf_counter()
        step = 1 if arm == "assisted" else batch
        for start in range(0, n, step):
            torch.manual_seed(start + (10_000 if arm in ("slow/other_seeds", "assisted") else 0))
            out = generate_music(model, torch.full((min(step, n - start), 1), BOS_ID), seconds=seconds, **kw)
            rows += [[t for t in r if t != PAD_ID] for r in out.tolist()]
        pieces[arm] = (rows, time.perf_counter() - t)
        print(f"quality {arm}: {len(rows)} pieces, {sum(map(len, rows))} tokens, {pieces[arm][1]:.1f} s",
              file=sys.stderr)
    stats = {arm: [ids_stats(r) for r in rows] for arm, (rows, _) in pieces.items()}
    report = {"pieces": n, "seconds": seconds, "stats": {}, "same_tokens": {}, "wall_s": {}}
    for arm in arms:
        report["same_tokens"][arm] = pieces[arm][0] == pieces["slow"][0]
        report["wall_s"][arm] = round(pieces[arm][1], 1)
    worst = {}
    for k in STATS:
        base = np.array([s[k] for s in stats["slow"]], dtype=float)
        row = {}
        for arm in arms:
            x = np.array([s[k] for s in stats[arm]], dtype=float)
            se = float(np.sqrt(np.nanvar(base, ddof=1) / len(base) + np.nanvar(x, ddof=1) / len(x))) or 1e-9
            z = float((np.nanmean(x) - np.nanmean(base)) / se)
            row[arm] = {"mean": round(float(np.nanmean(x)), 3), "z_vs_slow": round(z, 2)}
            worst[arm] = max(worst.get(arm, 0.0), abs(z))
        report["stats"][k] = row
    report["max_abs_z"] = {arm: round(v, 2) for arm, v in worst.items()}
    # Agreement: every statistic within 2 standard errors, as two sets of seeds of one path are.
    report["within_noise"] = {arm: v <= 2.0 for arm, v in worst.items()}
    return report


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
    from transformers import AutoModelForCausalLM

    from hf_midi.evaluation.music_stats import band_report, ids_stats, window_stats
    from hf_midi.remote_code.codec import encode

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
    p.add_argument("--model", default=None, help="a model folder (default: the bundled default model)")
    p.add_argument("--tokens", type=int, default=384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", default="", help="GPT-2 sizes for the table, e.g. 2x256,4x256,8x512 (layers x width)")
    p.add_argument("--size-tokens", type=int, default=256)
    p.add_argument("--quality", type=int, default=0, help="pieces per arm for the quality check (0: skip)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each quality piece")
    p.add_argument("--stats", default=None, help="a trained model folder: measure the grammar's effect on samples")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--no-fresh", action="store_true", help="skip the first-call-in-a-new-process timing")
    p.add_argument("--draft", default=None, help="a draft model folder or bundled name: one-sequence arms with "
                   "assisted generation, and its acceptance rate")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result = {"bench": "generate", "machine": machine(), "versions": versions()}

    if args.stats:
        result["stats"] = sample_stats(args.stats, args.samples, 30.0, seed=0)
        result["stats_model"] = args.stats
        print(json.dumps(result))
        return result

    from transformers import pipeline

    from hf_midi.loading import default_model_path

    model_dir = args.model or str(default_model_path())
    pipe = pipeline("midi-generation", model=model_dir)
    plays_on(pipe.model)
    model = pipe.model
    fns = pipeline_variants(pipe, args.tokens)
    eps, eps_cpu, warm = measure(fns, args.tokens, args.repeats)
    for k in eps:
        print(f"{k:<26} {eps[k]:>8.1f} events/s wall {eps_cpu[k]:>8.1f} events/cpu-s  first call +{warm[k]:.2f} s",
              file=sys.stderr)
    names = [k for k in fns if k != "generate"]
    result.update({
        "model": model_dir, "params": sum(p.numel() for p in model.parameters()),
        "shape": f"{model.config.n_layer}x{model.config.n_embd}" if hasattr(model.config, "n_layer") else None,
        "tokens": args.tokens, "repeats": args.repeats, "formats": list(FORMATS),
        "events_per_s": eps, "events_per_cpu_s": eps_cpu, "warmup_s": warm,
        "ratios_wall": {f"{a}_over_generate/b{n}": round(eps[f"{a}/b{n}"] / eps[f"generate/b{n}"], 3)
                        for n in (1, 4) for a in names},
        "ratios_cpu": {f"{a}_over_generate/b{n}": round(eps_cpu[f"{a}/b{n}"] / eps_cpu[f"generate/b{n}"], 3)
                       for n in (1, 4) for a in names},
        "grammar_processor_us_per_step": {"b1": grammar_cost_us(1), "b4": grammar_cost_us(4)},
    })
    if not args.no_fresh:
        result["fresh_process"] = first_call_in_fresh_process(model_dir, args.tokens)
    fresh_warm = result.get("fresh_process", {}).get("warmup_s", 0.0)
    result["goals"] = {
        **{f"pipeline_over_generate/b{n}": {
            "goal": GOALS["ratio"], "wall": result["ratios_wall"][f"pipeline_over_generate/b{n}"],
            "cpu": result["ratios_cpu"][f"pipeline_over_generate/b{n}"],
            "met": result["ratios_cpu"][f"pipeline_over_generate/b{n}"] >= GOALS["ratio"]} for n in (1, 4)},
        **{f"events_per_s_b{n}": {
            "goal": GOALS[f"events_per_s_b{n}"], "wall": eps[f"pipeline/b{n}"], "cpu": eps_cpu[f"pipeline/b{n}"],
            "met": eps_cpu[f"pipeline/b{n}"] >= GOALS[f"events_per_s_b{n}"]} for n in (1, 4)},
        "warmup_s": {"goal": GOALS["warmup_s"], "in_run": max(warm[f"pipeline/b{n}"] for n in (1, 4)),
                     "fresh_process": fresh_warm,
                     "met": max(fresh_warm, *(warm[f"pipeline/b{n}"] for n in (1, 4))) <= GOALS["warmup_s"]},
    }
    draft = None
    if args.draft:
        from transformers import AutoModelForCausalLM

        from hf_midi.loading import resolve_model

        draft = AutoModelForCausalLM.from_pretrained(str(resolve_model(args.draft))).float().eval()
        plays_on(draft)
        dfns = draft_variants(pipe, draft, args.tokens)
        d_wall, d_cpu, _ = measure(dfns, args.tokens, args.repeats, batches=(1,))
        for k in d_cpu:
            print(f"draft arms {k:<22} {d_wall[k]:>8.1f} events/s wall {d_cpu[k]:>8.1f} events/cpu-s", file=sys.stderr)
        result["draft"] = {
            "model": args.draft, "params": sum(p.numel() for p in draft.parameters()),
            "events_per_s": d_wall, "events_per_cpu_s": d_cpu,
            "ratios_cpu": {f"{a}_over_generate/b1": round(d_cpu[f"{a}/b1"] / d_cpu["generate/b1"], 3)
                           for a in dfns if a != "generate"},
            "acceptance": acceptance(pipe, draft, args.tokens),
        }
        print(f"acceptance {result['draft']['acceptance']}", file=sys.stderr)
        best = max(v for k, v in result["draft"]["ratios_cpu"].items())
        result["goals"]["best_over_generate/b1"] = {"goal": 4.0, "cpu": best, "met": best >= 4.0}
    sizes = {}
    for size in filter(None, args.sizes.split(",")):
        layers, width = map(int, size.lower().split("x"))
        torch.manual_seed(0)
        m = gpt2(layers, width)
        plays_on(m)
        r_wall, r_cpu, _ = measure(direct_variants(m, args.size_tokens), args.size_tokens, max(1, args.repeats - 1))
        sizes[size] = {"params": sum(p.numel() for p in m.parameters()), "events_per_s": r_wall,
                       "events_per_cpu_s": r_cpu,
                       "best_fast_over_generate": {f"b{n}": round(max(v for k, v in r_cpu.items()
                                                                      if k.startswith("fast/") and k.endswith(f"b{n}"))
                                                                  / r_cpu[f"generate/b{n}"], 2) for n in (1, 4)}}
        print(f"{size:>8} events/cpu-s {r_cpu}", file=sys.stderr)
        del m
    if sizes:
        result["sizes"] = sizes
    if args.quality:
        from transformers import AutoModelForCausalLM

        qmodel = AutoModelForCausalLM.from_pretrained(model_dir).float().eval()  # its own generation config
        result["quality"] = quality(qmodel, args.quality, args.seconds, draft=draft)
    result["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
