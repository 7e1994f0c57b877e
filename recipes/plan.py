"""Plans: several models trained one after another by the one trainer, each to a share of the time,
then scored, and what a GPU machine should send back laid out in few flat files.

    python recipes/plan.py train --plan gpu --data gpu_data --out OUT --seconds 340 --deadline 520
    python recipes/plan.py collect OUT FILES      # -> <=8 flat files of <=16 MiB (bf16 weights + one archive)
    python recipes/plan.py restore FILES DEST     # -> DEST/<run>/: folders from_pretrained loads
    python recipes/plan.py ship DEST/base base [--apply]   # the ship rule; bundles the model where it allows

Each run of a plan is ``accelerate launch train.py --config <preset> --dataset DATA --output_dir OUT/<run>
--max_minutes M ...``, a process of its own (a run that fails costs only itself, the GPU's memory is
freed between runs, and each run may have its own mixed precision), with ``M`` its share of the
plan's training seconds, shrunk when the deadline comes nearer. The command line of every run is
printed and kept in ``OUT/summary.json``: any run can be repeated by hand. Then each exported model is
scored on the corpus's evaluation sets (``hf_midi.evaluation.evaluate_model``) into ``OUT/<run>/eval.json``.

Continue, don't restart: ``--init_from RUN=MODEL`` starts a run from a trained model (a folder, a Hub id,
``base``/``small``) with a fresh optimizer and the preset's warm-up, so that the compute of an
earlier GPU window adds up instead of starting again from random weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_TAR = "results.tar.gz"


@dataclass
class Run:
    name: str
    preset: str  # hf_midi/training/configs/<preset>.yaml
    share: float  # of the plan's training seconds
    overrides: dict = field(default_factory=dict)  # train.py fields


_TINY = {"probe_steps": 2, "log_every": 2, "eval_batches": 2, "eval_split": "giantmidi_val", "tracker": "none",
         "progress": False, "max_steps": 1000000, "transpose": [-5, 6], "cpu_threads": 1}
PLANS: dict[str, list[Run]] = {
    # ~8 minutes of one H100/H200 and what may come back from it (64 MiB): base (46.5 MiB in bf16),
    # small (7.4 MiB) and the LSTM baseline sized like small (7.0 MiB), on the same data.
    "gpu": [Run("base", "gpu-base", 0.64), Run("small", "gpu-small", 0.18), Run("lstm", "gpu-lstm", 0.18)],
    # One model and all the time.
    "gpu-base": [Run("base", "gpu-base", 1.0)],
    # The next lent GPU (the model-users-hear issue): base continued from the shipped weights
    # (--init_from base=STASH/base, a short warm-up), a quarter of its windows from piece starts, on all of
    # GiantMIDI train + POP909 train carried in pieces (recipes/README.md, "A trip in several calls").
    "gpu-next": [Run("base", "gpu-base", 1.0, {"piece_start_share": 0.25, "warmup_steps": 100})],
    # The window after it: small the same way
    # (--init_from small=STASH/small_w).
    "gpu-next-small": [Run("small", "gpu-small", 1.0, {"piece_start_share": 0.25, "warmup_steps": 100})],
    # A CPU, one thread.
    "cpu": [Run("cpu", "cpu-packed", 1.0)],
    # The "gpu" plan's three shapes shrunk to seconds on a CPU: the recipe's rehearsal (a test, CI).
    "rehearsal": [
        Run("base", "tiny", 0.5, {**_TINY, "model.intermediate_size": 224}),
        Run("small", "tiny", 0.25, {**_TINY, "model.num_layers": 1, "model.hidden_size": 32}),
        Run("lstm", "lstm", 0.25, {**_TINY, "model.num_layers": 1, "model.hidden_size": 32,
                                   "model.embedding_size": 16, "model.dropout": 0.0, "block_size": 64,
                                   "per_device_batch_size": 4, "warmup_steps": 3, "learning_rate": 3e-3}),
    ],
}


def _value(v) -> str:
    return json.dumps(v) if isinstance(v, (list, bool)) or v is None else str(v)


def run_command(run: Run, data: str, out: Path, minutes: float, init_from: str | None = None,
                extra: dict | None = None) -> list[str]:
    """train.py's arguments for one run (what follows ``accelerate launch train.py``)."""
    args = {"dataset": data, "output_dir": str(out / run.name), "max_minutes": round(minutes, 4),
            **run.overrides, **(extra or {})}
    if init_from:
        args["init_from"] = init_from
    argv = ["--config", run.preset]
    for k, v in args.items():
        argv += [f"--{k}", _value(v)]
    return argv


def launcher() -> list[str]:
    """``accelerate launch`` for one process (``HF_MIDI_LAUNCH`` replaces it, e.g. for several GPUs)."""
    if os.environ.get("HF_MIDI_LAUNCH"):
        return os.environ["HF_MIDI_LAUNCH"].split()
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no"]


def _read_metrics(folder: Path) -> list[dict]:
    path = folder / "logs" / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def summarise(folder: Path) -> dict:
    """The figures of one finished run, from its metrics.jsonl: the probe, throughput, MFU, losses."""
    lines = _read_metrics(folder)
    probe = next((r for r in lines if r.get("event") == "probe"), {})
    steps = [r for r in lines if "loss" in r]
    timed = [r for r in steps if "tokens_per_s" in r][1:] or [r for r in steps if "tokens_per_s" in r]
    info = {k: probe[k] for k in ("real_vs_synthetic", "synthetic_step_s", "real_step_s", "warmup_s",
                                  "probe_tflops", "probe_mfu", "flops_per_token") if k in probe}
    if steps:
        info.update(steps=steps[-1]["step"], final_train_loss=steps[-1]["loss"])
    if timed:
        info.update(tokens=timed[-1].get("tokens_seen"), minutes=timed[-1].get("minutes"),
                    tokens_per_s=sum(r["tokens_per_s"] for r in timed) / len(timed))
        if all("mfu" in r for r in timed):
            info["mfu"] = sum(r["mfu"] for r in timed) / len(timed)
    evals = [r["eval_loss"] for r in steps if "eval_loss" in r]
    if evals:
        info["final_val_loss"] = evals[-1]
    return info


def evaluate(folder: str | Path, data: str, names: list[str]) -> dict:
    """NLL of the model in ``folder`` (or a bundled name) on the corpus's evaluation sets ``names``."""
    import torch

    from hf_midi.data.packed import load_eval
    from hf_midi.evaluation import evaluate_model
    from hf_midi.loading import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _ = load_model(folder)
    model = model.to(device).eval()
    out = {}
    for name in names:
        t = time.perf_counter()
        res = evaluate_model(model, load_eval(data, name), batch_size=64 if device == "cuda" else 8, progress=False)
        res["seconds"] = round(time.perf_counter() - t, 1)
        out[name] = res
    return out


def _score(info: dict, key: str, model: str | Path, data: str, evals: list[str], folder: Path) -> bool:
    """``info[key]``: ``model`` scored on ``evals``; a failure is written down instead (``<key>_failed``), so
    that an evaluation never costs the weights or the runs after it. Returns True when it was interrupted
    (the recipe's hard limit sends SIGINT): the caller writes what it has and stops."""
    try:
        info[key] = {"model": str(model), **evaluate(model, data, evals)}  # a folder, or a bundled name
    except KeyboardInterrupt:
        info[f"{key}_failed"] = "interrupted (the hard limit)"
        return True
    except Exception as e:
        info[f"{key}_failed"] = f"{type(e).__name__}: {e}"
    (folder / "eval.json").write_text(json.dumps(info, indent=1) + "\n")
    return False


def train_plan(plan: str, data: str, out: Path, seconds: float, deadline: float | None = None,
               reserve: float = 40.0, runs: list[str] | None = None, evals: tuple[str, ...] = (),
               init_from: dict | None = None, extra: dict | None = None) -> dict:
    """Train the plan's runs one after another (each ``accelerate launch train.py``), score them, and
    write ``out/summary.json``. ``reserve``: seconds a run needs beyond its training (start-up,
    compilation, probe, export, evaluation), kept back from the deadline for each run still to come."""
    from hf_midi.data.packed import read_manifest

    start = time.perf_counter()
    chosen = [r for r in PLANS[plan] if runs is None or r.name in runs]
    manifest = read_manifest(data)
    missing = [n for n in evals if n not in manifest["eval"]]
    if missing:
        raise SystemExit(f"--eval: {missing} not in {data} (has {sorted(manifest['eval'])})")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"plan": plan, "data": manifest["train"], "runs": {}}
    total = sum(r.share for r in chosen) or 1.0
    for i, run in enumerate(chosen):
        budget = seconds * run.share / total
        if deadline is not None:  # what is left, shared with the runs still to come
            later = chosen[i:]
            left = deadline - (time.perf_counter() - start) - reserve * len(later)
            budget = max(3.0, min(budget, left * run.share / sum(r.share for r in later)))
        argv = run_command(run, data, out, budget / 60, (init_from or {}).get(run.name), extra)
        cmd = launcher() + [str(ROOT / "train.py"), *argv]
        print(f"== {run.name}: accelerate launch train.py {' '.join(argv)}", flush=True)
        t = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        info = {"command": "accelerate launch train.py " + " ".join(argv), "budget_s": round(budget, 1),
                "wall_s": round(time.perf_counter() - t, 1), "config": asdict(run), **summarise(out / run.name)}
        if rc != 0 or not (out / run.name / "config.json").is_file():
            info["failed"] = f"train.py exited {rc}"
        (out / run.name).mkdir(exist_ok=True)
        start_model = (init_from or {}).get(run.name)
        stopped = False
        if "failed" not in info and evals:
            stopped = _score(info, "eval", out / run.name, data, list(evals), out / run.name)
            if (not stopped and start_model and "eval" in info
                    and (deadline is None or time.perf_counter() - start < deadline - reserve)):
                # the model it started from, on the same windows: whether the run beat it, answered on the machine
                stopped = _score(info, "eval_start", start_model, data, list(evals), out / run.name)
        (out / run.name / "eval.json").write_text(json.dumps(info, indent=1) + "\n")
        summary["runs"][run.name] = info
        print(json.dumps({run.name: {k: v for k, v in info.items() if k not in ("config", "eval", "eval_start")}}),
              flush=True)
        for name in info.get("eval_start", {}):
            if name != "model":
                print(f"   {name}: NLL {info['eval'][name]['nll']:.4f} after, {info['eval_start'][name]['nll']:.4f} "
                      f"before ({start_model})", flush=True)
        if stopped:
            summary["stopped"] = f"interrupted while scoring {run.name} (the hard limit): the runs after it did not run"
            break
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


# --------------------------------------------------------------------------- the trip back
def collect(run_dir: str | Path, dest: str | Path, max_files: int = 8, max_mb: float = 16.0,
            shard_mb: float = 15.0, dtype: str = "bfloat16") -> list[Path]:
    """Lay out a plan's output for a machine that returns few flat files: every model's weights cast to
    ``dtype`` in shards of ``shard_mb`` as ``dest/<run>--<shard>``, everything else but the checkpoints
    (configs, tokenizer, eval, logs) in one ``results.tar.gz``. Refuses, before writing, when that
    makes more than ``max_files`` files or one over ``max_mb`` MiB."""
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM

    import hf_midi  # noqa: F401  (registers the LSTM with the Auto classes)

    run_dir, dest = Path(run_dir), Path(dest)
    models = sorted(p.parent for p in run_dir.glob("*/model*.safetensors"))
    models = sorted(set(models))
    with tempfile.TemporaryDirectory() as tmp:
        shards = []
        for folder in models:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
            model.save_pretrained(Path(tmp, folder.name), max_shard_size=f"{int(shard_mb * 1000)}KB",
                                  safe_serialization=True)
            shards += [(folder.name, w) for w in sorted(Path(tmp, folder.name).glob("*.safetensors"))]
        too_big = [str(w) for _, w in shards if w.stat().st_size > max_mb * 2**20]
        if too_big or len(shards) + 1 > max_files:
            raise ValueError(f"{run_dir}: {len(shards)} weight files (+1 archive) for at most {max_files}; "
                             f"over {max_mb} MiB: {too_big}")
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for run, w in shards:
            target = dest / f"{run}--{w.name}"
            shutil.copyfile(w, target)
            out.append(target)
        index = {run: sorted(p.name for p in Path(tmp, run).glob("*.json")) for run in {r for r, _ in shards}}
        with tarfile.open(dest / RESULTS_TAR, "w:gz") as tar:
            for f in sorted(run_dir.rglob("*")):
                rel = f.relative_to(run_dir)
                if f.is_file() and f.suffix != ".safetensors" and "checkpoints" not in rel.parts:
                    tar.add(f, arcname=str(rel))
            for run, names in index.items():  # the shard index, when the weights were sharded
                for name in names:
                    if name.endswith(".index.json"):
                        tar.add(Path(tmp, run, name), arcname=f"{run}/{name}")
    return out + [dest / RESULTS_TAR]


def restore(files: str | Path, dest: str | Path) -> Path:
    """Undo ``collect``: what came back -> ``dest/<run>/`` model folders (weights, config, generation
    config, tokenizer, eval.json, logs) and the plan's summary at ``dest``."""
    from hf_midi.utils import atomic_folder

    files = Path(files)
    with atomic_folder(dest) as tmp:
        with tarfile.open(files / RESULTS_TAR, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        for w in sorted(files.glob("*--*.safetensors")):
            run, _, name = w.name.partition("--")
            (tmp / run).mkdir(exist_ok=True)
            shutil.copyfile(w, tmp / run / name)
    return Path(dest)


# --------------------------------------------------------------------------- the ship rule
SHIP_SETS = ("asap_test", "giantmidi_test")


def ship_check(folder: str | Path, name: str, seed_sets: tuple[tuple[int, int], ...] = ((0, 20), (20, 40)),
               seconds: float = 30.0, sets: tuple[str, ...] = SHIP_SETS) -> dict:
    """Whether a model that came back may replace the bundled ``name``: its NLL on each of ``sets`` beats
    the model it started from on the same windows (``eval.json``'s ``eval`` against ``eval_start``, both
    scored on the machine), and the listener finds no more broken pieces in it than in the bundled model,
    seed set by seed set (``seconds`` of music a seed, the shipped settings). Returns ``ship``, the
    ``reasons`` against, and the figures."""
    from hf_midi.evaluation.listener import listen_ids, listener_report
    from hf_midi.loading import load_pipeline

    folder = Path(folder)
    info = json.loads((folder / "eval.json").read_text())
    reasons, nll = [], {}
    for s in sets:
        after = info.get("eval", {}).get(s, {}).get("nll")
        before = info.get("eval_start", {}).get(s, {}).get("nll")
        if after is None or before is None:
            reasons.append(f"{s}: {folder / 'eval.json'} holds no NLL of both the model and its start")
            continue
        nll[s] = {"after": round(after, 4), "before": round(before, 4)}
        if not after < before:
            reasons.append(f"{s}: NLL {after:.4f}, not below the start's {before:.4f}")
    listener: dict[str, dict[str, int]] = {}
    for label, model in (("came back", str(folder)), ("bundled", name)):
        pipe = load_pipeline(model)
        listener[label] = {}
        for lo, hi in seed_sets:
            heard = [listen_ids(pipe(seconds=seconds, seed=seed)[0]["token_ids"], seconds) for seed in range(lo, hi)]
            listener[label][f"seeds {lo}-{hi - 1}"] = listener_report(heard)["broken"]
    for key, broken in listener["came back"].items():
        if broken > listener["bundled"][key]:
            reasons.append(f"{key}: {broken} broken pieces, the bundled {name} {listener['bundled'][key]}")
    return {"ship": not reasons, "reasons": reasons, "nll": nll, "listener_broken": listener}


def ship(folder: str | Path, name: str, pretrained: Path = ROOT / "hf_midi" / "pretrained", **kw) -> dict:
    """``ship_check``, then, where it allows, the model bundled as ``pretrained/<name>`` in the dtype the
    bundled one has (``hf_midi.hub.bundle_model``, atomic)."""
    from hf_midi.hub import bundle_model

    res = ship_check(folder, name, **kw)
    if res["ship"]:
        target = Path(pretrained) / name
        dtype = json.loads((target / "config.json").read_text()).get("dtype", "float32")
        res["bundled"] = str(bundle_model(folder, target, dtype=dtype))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recipes/plan.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a plan's models, one `accelerate launch train.py` each, and score them")
    t.add_argument("--plan", default="gpu", choices=sorted(PLANS))
    t.add_argument("--data", required=True, help="a packed corpus (python -m hf_midi.data.packed)")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--seconds", type=float, required=True, help="training seconds of the whole plan")
    t.add_argument("--deadline", type=float, default=None, help="wall seconds by which every run is written")
    t.add_argument("--reserve", type=float, default=40.0, help="seconds a run needs beyond its training")
    t.add_argument("--runs", default=None, help="comma-separated subset of the plan's runs")
    t.add_argument("--eval", default="giantmidi_test,asap_test,pop909_test", help="evaluation sets ('' for none)")
    t.add_argument("--init_from", action="append", default=[], metavar="RUN=MODEL",
                   help="continue RUN from a trained model instead of random weights")
    t.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a train.py field for every run")
    c = sub.add_parser("collect", help="lay out a plan's output for the trip back")
    c.add_argument("src", type=Path)
    c.add_argument("dest", type=Path)
    c.add_argument("--shard-mb", type=float, default=15.0)
    r = sub.add_parser("restore", help="what came back -> model folders")
    r.add_argument("src", type=Path)
    r.add_argument("dest", type=Path)
    h = sub.add_parser("ship", help="the ship rule for a model that came back (NLL against its start, the listener "
                                    "against the bundled model); --apply bundles it where the rule allows")
    h.add_argument("folder", type=Path, help="a restored run folder (weights, eval.json)")
    h.add_argument("name", choices=["base", "small"], help="the bundled model it would replace")
    h.add_argument("--seeds", default="0-19,20-39", help="seed sets, each compared on its own")
    h.add_argument("--seconds", type=float, default=30.0)
    h.add_argument("--apply", action="store_true", help="bundle it into hf_midi/pretrained/NAME where the rule allows")
    args = p.parse_args(argv)
    if args.cmd == "collect":
        for f in collect(args.src, args.dest, shard_mb=args.shard_mb):
            print(f"{f}  {f.stat().st_size / 2**20:.1f} MiB")
        return 0
    if args.cmd == "restore":
        print(restore(args.src, args.dest))
        return 0

    if args.cmd == "ship":
        try:  # "0-19,20-39": each an inclusive range, or one seed
            ranges = (x.partition("-") for x in args.seeds.split(","))
            seed_sets = tuple((int(a), int(b or a) + 1) for a, _, b in ranges)
        except ValueError:
            p.error(f"--seeds {args.seeds!r}: expected ranges like 0-19,20-39")
        res = (ship if args.apply else ship_check)(args.folder, args.name, seed_sets=seed_sets, seconds=args.seconds)
        for r in res["reasons"]:
            print(f"not shipped: {r}", file=sys.stderr)
        print(json.dumps(res))
        return 0 if res["ship"] else 1

    runs = args.runs.split(",") if args.runs else None
    known = {r.name for r in PLANS[args.plan]}
    if runs and set(runs) - known:
        p.error(f"--runs: {sorted(set(runs) - known)} not in plan {args.plan!r} ({sorted(known)})")
    init_from = {}
    for spec in args.init_from:
        run, sep, model = spec.partition("=")
        if not sep or run not in known:
            p.error(f"--init_from {spec!r}: expected RUN=MODEL with RUN one of {sorted(known)}")
        init_from[run] = model
    extra = {}
    for spec in args.set:
        key, sep, value = spec.partition("=")
        if not sep:
            p.error(f"--set {spec!r}: expected FIELD=VALUE")
        extra[key] = value  # as typed: train.py reads it by the field's type ("no" stays a word)
    summary = train_plan(args.plan, args.data, args.out, args.seconds, args.deadline, args.reserve, runs,
                         tuple(n for n in args.eval.split(",") if n), init_from, extra)
    keys = ("mfu", "real_vs_synthetic", "tokens", "final_val_loss", "failed")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk in keys} for k, v in summary["runs"].items()}))
    return 0 if all("failed" not in v for v in summary["runs"].values()) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
