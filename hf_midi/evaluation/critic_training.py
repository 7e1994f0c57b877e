"""Training the critic (``hf_midi.remote_code.critic.MusicCritic``): real piano playing against the shipped
models' own samples, and its held-out accuracy per model (``hf-midi critic``).

- ``compose_samples``: a model's pieces with its shipped settings (the pipeline, as a user gets them), saved
  as a flat id array + offsets (``.npz``, no pickle) so a later run reuses them;
- ``real_pieces``: the event ids of a split of GiantMIDI / POP909 (``split.csv``), unreadable files skipped
  and counted;
- ``train_critic``: random stretches of 4-30 s of both, transposed, a few minutes of CPU; early stopping on
  a validation part of the training pieces; the weights as safetensors (``MusicCritic.save_pretrained``);
- ``critic_accuracy``: accuracy and ROC AUC on held-out real pieces (test splits) and held-out seeds of
  each model.

    hf-midi critic ../shared/data hf_midi/pretrained/critic --models base small --pieces 192
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..remote_code import codec
from ..remote_code.critic import CRITIC_SECONDS, STEPS_PER_FRAME, MusicCritic, batch_rolls, roll_from_notes
from ..remote_code.errors import HfMidiError

logger = logging.getLogger(__name__)

# The data sets the bundled critic learns real playing from, and their split files (ASAP stays out: its licence).
REAL_SETS = (("giantmidi", "split.csv"), ("pop909", "split.csv"))
SAMPLE_SECONDS = 30.0
SHORTEST, LONGEST = 4.0, CRITIC_SECONDS  # the stretches the critic learns to score


class CriticTrainingError(HfMidiError):
    """Missing data, or samples that do not match the request; the message names the file or argument."""


# --------------------------------------------------------------------------- data
def save_pieces(path: Path, pieces: list[np.ndarray], seeds: list[int]) -> None:
    import io

    from ..utils import atomic_write_bytes

    buf = io.BytesIO()
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
    np.savez(buf, ids=flat.astype(np.int16), offsets=np.cumsum([0] + [len(p) for p in pieces]),
             seeds=np.asarray(seeds, np.int64))
    atomic_write_bytes(path, buf.getvalue())


def load_pieces(path: Path) -> tuple[list[np.ndarray], list[int]]:
    with np.load(path, allow_pickle=False) as z:
        ids, off, seeds = z["ids"].astype(np.int64), z["offsets"], z["seeds"]
    return [ids[a:b] for a, b in zip(off[:-1], off[1:])], [int(s) for s in seeds]


def compose_samples(model: str, seeds: list[int], seconds: float = SAMPLE_SECONDS, batch: int = 8,
                    cache: Path | None = None, **settings) -> list[np.ndarray]:
    """Pieces of ``seconds`` composed by ``model`` (a bundled name or folder) with its shipped settings but no
    search (what the model itself plays: ``candidates=1``), ``batch`` at a time (seed = the batch's first
    seed); ``settings`` are passed to the pipeline. With ``cache`` (an ``.npz``), pieces already made for these
    seeds are reused."""
    from ..loading import load_pipeline

    if cache is not None and cache.is_file():
        pieces, done = load_pieces(cache)
        if done[: len(seeds)] == list(seeds):
            return pieces[: len(seeds)]
    from tqdm.auto import tqdm

    pipe = load_pipeline(model)
    pieces = []
    for i in tqdm(range(0, len(seeds), batch), desc=f"{Path(str(model)).name}: samples", unit="batch"):
        group = seeds[i : i + batch]
        out = pipe(seconds=seconds, seed=group[0], num_return_sequences=len(group), threads=1,
                   return_prompt=False, **({"candidates": 1} | settings))
        pieces += [np.asarray([t for t in r["token_ids"] if t < codec.PAD_ID], np.int64) for r in out]
    if cache is not None:
        save_pieces(cache, pieces, seeds)
    return pieces


def real_pieces(data: Path, split: str, limit: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """Event ids of the ``split`` pieces of each of ``REAL_SETS`` under ``data`` (at most ``limit`` of each,
    drawn at random); unreadable files are skipped and counted in the log."""
    rng = np.random.default_rng(seed)
    out = []
    for name, split_file in REAL_SETS:
        table = data / name / split_file
        if not table.is_file():
            raise CriticTrainingError(f"{table}: missing (the real music's split; --data names the folder "
                                      f"holding {', '.join(n for n, _ in REAL_SETS)})")
        with open(table, newline="") as f:
            paths = [data / name / r["path"] for r in csv.DictReader(f) if r["split"] == split]
        if limit is not None and len(paths) > limit:
            paths = [paths[i] for i in sorted(rng.choice(len(paths), limit, replace=False))]
        skipped = 0
        for p in paths:
            try:
                ids = codec.encode(p)
            except codec.MidiReadError:
                skipped += 1
                continue
            if (ids < codec.NOTE_OFF).sum() >= 8:
                out.append(ids)
        if skipped:
            logger.warning("%s %s: %d unreadable files skipped", name, split, skipped)
    return out


class NoteBank:
    """Pieces as notes (decoded once), from which random stretches are drawn as piano rolls."""

    def __init__(self, pieces: list[np.ndarray]):
        self.notes = [codec.ids_to_notes(p) for p in pieces]
        self.totals = [max(int(n["end_step"]), int(n["end"].max()) if len(n["end"]) else 0) for n in self.notes]

    def __len__(self) -> int:
        return len(self.notes)

    def draw(self, count: int, rng: np.random.Generator, transpose: int = 0,
             seconds: tuple[float, float] = (SHORTEST, LONGEST), each: bool = False) -> list[np.ndarray]:
        """``count`` rolls of random stretches (length uniform in ``seconds``) of random pieces (``each``: of
        pieces 0..count-1 in turn), each transposed by up to +-``transpose`` semitones."""
        out = []
        for k in range(count):
            i = k % len(self.notes) if each else int(rng.integers(len(self.notes)))
            width = codec.seconds_to_steps(float(rng.uniform(*seconds)))
            t0 = int(rng.integers(0, max(self.totals[i] - width, 0) + 1))
            shift = int(rng.integers(-transpose, transpose + 1)) if transpose else 0
            out.append(roll_from_notes(self.notes[i], t0, t0 + width, shift))
        return out


def _tails(rolls: list[np.ndarray], rng: np.random.Generator) -> list[int]:
    """The frames each stretch is judged on: its last 2 s or more, up to all of it (the rest is context), as a
    search scores the chunk its candidates differ in after the music before it."""
    shortest = int(2.0 * 100 / STEPS_PER_FRAME)
    return [int(rng.integers(min(shortest, r.shape[1]), r.shape[1] + 1)) for r in rolls]


# --------------------------------------------------------------------------- training
def train_critic(real: list[np.ndarray], fake: list[np.ndarray], steps: int = 2000, batch: int = 32,
                 lr: float = 2e-3, seed: int = 0, valid_share: float = 0.15,
                 progress: bool = True) -> tuple[MusicCritic, dict]:
    """A ``MusicCritic`` trained to tell stretches of ``real`` (label 1) from ``fake`` (0), balanced
    batches; the step with the best validation loss (a held-back share of the pieces of each side) is kept."""
    from tqdm.auto import tqdm

    if len(real) < 10 or len(fake) < 10:
        raise CriticTrainingError(f"too few pieces to train on: {len(real)} real, {len(fake)} generated (>= 10 each)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    def split(pieces):
        order = rng.permutation(len(pieces))
        n = max(2, int(len(pieces) * valid_share))
        return [pieces[i] for i in order[n:]], [pieces[i] for i in order[:n]]

    real_train, real_valid = split(real)
    fake_train, fake_valid = split(fake)
    vrng = np.random.default_rng(seed + 1)
    real_bank, fake_bank = NoteBank(real_train), NoteBank(fake_train)
    valid = NoteBank(real_valid).draw(256, vrng) + NoteBank(fake_valid).draw(256, vrng)
    vx, vmask = batch_rolls(valid, _tails(valid, vrng))
    vy = torch.tensor([1.0] * 256 + [0.0] * 256)

    critic = MusicCritic()
    optim = torch.optim.AdamW(critic.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=lr, total_steps=steps, pct_start=0.1)
    best, best_state, history = math.inf, None, []
    bar = tqdm(range(steps), desc="critic", disable=not progress)
    for step in bar:
        critic.train()
        half = batch // 2
        rolls = real_bank.draw(half, rng, transpose=5) + fake_bank.draw(half, rng, transpose=5)
        x, mask = batch_rolls(rolls, _tails(rolls, rng))
        y = torch.tensor([1.0] * half + [0.0] * half)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(critic(x, mask), y)
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            critic.eval()
            with torch.no_grad():
                logits = critic(vx, vmask)
            vloss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, vy))
            vacc = float(((logits > 0).float() == vy).float().mean())
            history.append({"step": step + 1, "valid_loss": round(vloss, 4), "valid_accuracy": round(vacc, 4)})
            bar.set_postfix(loss=f"{vloss:.3f}", acc=f"{vacc:.3f}")
            if vloss < best:
                best, best_state = vloss, {k: v.detach().clone() for k, v in critic.state_dict().items()}
    critic.load_state_dict(best_state)
    critic.eval()
    return critic, {"history": history, "best_valid_loss": round(best, 4),
                    "train_pieces": {"real": len(real_train), "generated": len(fake_train)}}


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC: the chance that a random positive scores above a random negative (ties count half)."""
    p, n = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / max(p.size * n.size, 1))


def critic_accuracy(critic: MusicCritic, real: list[np.ndarray], fake: dict[str, list[np.ndarray]],
                    seconds: float = 30.0, seed: int = 0) -> dict:
    """On whole ``seconds`` stretches: the critic's accuracy (threshold 0) and AUC for held-out ``real``
    against each model's held-out pieces."""
    rng = np.random.default_rng(seed)
    span = (seconds, seconds)
    real_scores = critic.score_rolls(NoteBank(real).draw(len(real), rng, seconds=span, each=True))
    out = {}
    for name, pieces in fake.items():
        fake_scores = critic.score_rolls(NoteBank(pieces).draw(len(pieces), rng, seconds=span, each=True))
        correct = (real_scores > 0).sum() + (fake_scores <= 0).sum()
        out[name] = {"accuracy": round(float(correct / (len(real_scores) + len(fake_scores))), 4),
                     "auc": round(auc(real_scores, fake_scores), 4),
                     "real_called_real": round(float((real_scores > 0).mean()), 4),
                     "generated_called_generated": round(float((fake_scores <= 0).mean()), 4),
                     "real_pieces": len(real_scores), "generated_pieces": len(fake_scores)}
    return out


# --------------------------------------------------------------------------- the command
def configure_critic(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="the folder holding giantmidi/ and pop909/ (each with split.csv)")
    p.add_argument("out", help="where the critic goes (critic.json + critic.safetensors)")
    p.add_argument("--models", nargs="+", default=["base", "small"],
                   help="the models whose samples it learns to tell apart (bundled names or folders)")
    p.add_argument("--pieces", type=int, default=192, help="training samples per model (30 s each)")
    p.add_argument("--held-out", type=int, default=40, help="held-out samples per model (seeds 0..N-1)")
    p.add_argument("--sample-seconds", type=float, default=SAMPLE_SECONDS, help="the samples' length")
    p.add_argument("--real", type=int, default=1500, help="training pieces drawn from each real set's train split")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--cache", default=None,
                   help="folder keeping the samples between runs (default: OUT's parent/.critic-samples)")
    p.add_argument("--seed", type=int, default=0)


def run_critic(args: argparse.Namespace) -> int:
    import json

    data, out = Path(args.data), Path(args.out)
    for name, value in (("--pieces", args.pieces), ("--held-out", args.held_out), ("--real", args.real),
                        ("--steps", args.steps), ("--sample-seconds", args.sample_seconds)):
        if not value >= 1:
            raise CriticTrainingError(f"{name} must be >= 1, got {value}")
    cache = Path(args.cache) if args.cache else out.parent / ".critic-samples"
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print("reading real pieces (train and test splits)...", file=sys.stderr)
    real_train = real_pieces(data, "train", limit=args.real, seed=args.seed)
    real_test = real_pieces(data, "test", limit=200, seed=args.seed)
    fake_train, fake_test = [], {}
    for model in args.models:
        key = Path(str(model)).name
        length = "" if args.sample_seconds == SAMPLE_SECONDS else f"-{args.sample_seconds:g}s"
        train_seeds = list(range(10_000, 10_000 + args.pieces))
        fake_train += compose_samples(model, train_seeds, args.sample_seconds,
                                      cache=cache / f"{key}-train-{args.pieces}{length}.npz")
        fake_test[key] = compose_samples(model, list(range(args.held_out)), args.sample_seconds,
                                         cache=cache / f"{key}-test-{args.held_out}{length}.npz")
    critic, report = train_critic(real_train, fake_train, steps=args.steps, seed=args.seed)
    report["held_out"] = critic_accuracy(critic, real_test, fake_test, seconds=min(args.sample_seconds, LONGEST),
                                         seed=args.seed)
    report["models"] = [str(m) for m in args.models]
    report["minutes"] = round((time.perf_counter() - started) / 60, 1)
    critic.save_pretrained(out, training=report)
    print(json.dumps(report["held_out"], indent=1), file=sys.stderr)
    print(f"critic -> {out}", file=sys.stderr)
    return 0


__all__ = ["CriticTrainingError", "NoteBank", "auc", "compose_samples", "configure_critic", "critic_accuracy",
           "load_pieces", "real_pieces", "run_critic", "save_pieces", "train_critic"]
