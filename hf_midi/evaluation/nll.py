"""``hf-midi evaluate MODEL --dataset DIR --split test``: how well a model predicts whole pieces.

For every piece (``<bos>`` events ``<eos>``) each token after ``<bos>`` is scored once, with context:

- GPT-2 (a fixed context C): windows of C tokens every ``stride`` tokens; a window scores only the
  targets the previous one did not, so every target past the first window sees at least
  C - stride + 1 tokens of context (the usual sliding-window perplexity).
- The LSTM: the piece in chunks with the state carried over, so every target sees the whole piece.

Reported: negative log-likelihood per token in nats, perplexity (exp of it) and next-event
accuracy (argmax), over all tokens and per event family (note-on, note-off, time shift, velocity,
pedal, special = ``<eos>``); and the whole NLL per note (per NOTE_ON) and per second of music: per-token
figures depend on the vocabulary (a finer time grid makes more, easier tokens), these compare across
tokenisations and with published numbers. Probabilities are over the 393 real ids (padding rows of a model's
embedding are left out, as ``generate()`` suppresses them). Printed as a table; ``--json`` writes
the same numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from ..remote_code.codec import (
    FAMILIES,
    NOTE_OFF,
    PAD_ID,
    STEPS_PER_SECOND,
    VOCAB_SIZE,
    event_family,
    shift_steps,
)
from ..remote_code.errors import HfMidiError


@dataclass
class Scores:
    """Sums over scored tokens: NLL (nats), correct argmax predictions, count; overall and per family."""

    nll: float = 0.0
    correct: int = 0
    tokens: int = 0
    pieces: int = 0
    family_nll: list[float] = field(default_factory=lambda: [0.0] * len(FAMILIES))
    family_correct: list[int] = field(default_factory=lambda: [0] * len(FAMILIES))
    family_tokens: list[int] = field(default_factory=lambda: [0] * len(FAMILIES))
    notes: int = 0  # NOTE_ONs among the targets
    steps: int = 0  # 10 ms steps of music the targets span

    def add(self, targets: np.ndarray, nll: np.ndarray, correct: np.ndarray) -> None:
        fam = event_family(targets)
        k = len(FAMILIES)
        self.notes += int((targets < NOTE_OFF).sum())
        self.steps += int(shift_steps(targets).sum())
        self.nll += float(nll.sum())
        self.correct += int(correct.sum())
        self.tokens += len(targets)
        self.pieces += 1
        sums = zip(np.bincount(fam, nll, k), np.bincount(fam, correct, k), np.bincount(fam, None, k))
        for i, (a, b, c) in enumerate(sums):
            self.family_nll[i] += float(a)
            self.family_correct[i] += int(b)
            self.family_tokens[i] += int(c)

    def summary(self) -> dict:
        def row(nll, correct, n):
            mean = nll / n if n else float("nan")
            return {"tokens": n, "nll": mean, "perplexity": math.exp(mean) if n else float("nan"),
                    "accuracy": correct / n if n else float("nan")}

        out = {"pieces": self.pieces, **row(self.nll, self.correct, self.tokens),
               "notes": self.notes, "seconds": self.steps / STEPS_PER_SECOND,
               "nll_per_note": self.nll / self.notes if self.notes else float("nan"),
               "nll_per_second": self.nll / (self.steps / STEPS_PER_SECOND) if self.steps else float("nan"),
               "families": {}}
        for i, name in enumerate(FAMILIES):
            out["families"][name] = row(self.family_nll[i], self.family_correct[i], self.family_tokens[i])
        return out


def _window_scores(model, ids: torch.Tensor, context: int, stride: int, batch_size: int):
    """GPT-2: (nll, correct) of the targets ids[1:], from sliding windows. ids: (n,).

    Window k reads ids[b : b + context] with b = k * stride, whose logits predict ids[b + 1 : b + context + 1];
    it scores the targets no earlier window did, so target t sees ids[b:t], at least context - stride + 1 tokens
    once past the first window.
    """
    n = len(ids)
    windows, todo, b = [], 1, 0  # (begin, first target, last target + 1); todo: the next unscored target
    while todo < n:
        end = min(b + context, n - 1)  # inputs ids[b:end] predict targets b+1 .. end
        windows.append((b, todo, end + 1))
        todo, b = end + 1, b + stride
    nll = torch.full((n - 1,), float("nan"))  # NaN until scored
    correct = torch.zeros(n - 1, dtype=torch.bool)
    for i in range(0, len(windows), batch_size):
        group = windows[i : i + batch_size]
        x = torch.full((len(group), context), PAD_ID, dtype=torch.long)
        mask = torch.zeros_like(x)
        for j, (b, _, stop) in enumerate(group):
            x[j, : stop - 1 - b] = ids[b : stop - 1]
            mask[j, : stop - 1 - b] = 1
        logits = model(input_ids=x.to(model.device), attention_mask=mask.to(model.device)).logits  # (B, C, V)
        logp = torch.log_softmax(logits[..., :VOCAB_SIZE].float(), -1).cpu()
        for j, (b, first, stop) in enumerate(group):
            t = torch.arange(first, stop)  # target positions in the piece
            lp = logp[j, t - 1 - b]  # (k, V): the logits at t - 1 predict t
            nll[t - 1] = -lp.gather(1, ids[t, None]).squeeze(1)
            correct[t - 1] = lp.argmax(-1) == ids[t]
    return nll, correct


def _recurrent_scores(model, pieces: list[torch.Tensor], chunk: int):
    """LSTM: [(nll, correct)] of targets ids[1:] of each piece, the state carried through the whole
    piece. Pieces run side by side, right-padded: a padded row's later outputs are never read, and
    the real positions depend only on what came before them, so the result is a piece run alone."""
    n = max(len(x) for x in pieces)
    x = torch.full((len(pieces), n), PAD_ID, dtype=torch.long)
    for j, ids in enumerate(pieces):
        x[j, : len(ids)] = ids
    state, nll, correct = None, torch.zeros(len(pieces), n - 1), torch.zeros(len(pieces), n - 1, dtype=torch.bool)
    for b in range(0, n - 1, chunk):
        e = min(b + chunk, n - 1)
        out = model(input_ids=x[:, b:e].to(model.device), rnn_state=state, use_cache=True)
        state = out.rnn_state
        logp = torch.log_softmax(out.logits[..., :VOCAB_SIZE].float(), -1).cpu()  # (B, k, V)
        y = x[:, b + 1 : e + 1].clamp(max=VOCAB_SIZE - 1)
        nll[:, b:e] = -logp.gather(2, y[..., None]).squeeze(2)
        correct[:, b:e] = logp.argmax(-1) == y
    return [(nll[j, : len(ids) - 1], correct[j, : len(ids) - 1]) for j, ids in enumerate(pieces)]


@torch.no_grad()
def evaluate_model(model, pieces, context: int | None = None, stride: int | None = None,
                   batch_size: int = 8, progress: bool = True) -> dict:
    """Score ``pieces`` (an iterable of ``(path, ids)``, ids with ``<bos>``/``<eos>``) with ``model``.

    ``context``: GPT-2 window (default: its n_positions) or LSTM chunk length (default 1024);
    ``stride``: GPT-2 window step (default context // 2). Returns the ``Scores.summary()`` dict.
    """
    from tqdm.auto import tqdm

    model.eval()
    recurrent = getattr(model.config, "model_type", "") == "musicrnn"
    context = context or (1024 if recurrent else model.config.n_positions)
    stride = stride or max(1, context // 2)
    if not 0 < stride <= context:
        raise HfMidiError(f"stride {stride}: must be in 1..context ({context})")
    scores = Scores()
    todo = [torch.as_tensor(np.asarray(ids), dtype=torch.long) for _, ids in pieces]
    todo = [ids for ids in todo if len(ids) >= 2]
    bar = tqdm(total=len(todo), desc="evaluate", unit="piece", disable=not progress)
    if recurrent:  # pieces of similar length side by side, batch_size at a time
        order = sorted(range(len(todo)), key=lambda i: len(todo[i]))
        results = [None] * len(todo)
        for g in range(0, len(order), batch_size):
            group = order[g : g + batch_size]
            for i, r in zip(group, _recurrent_scores(model, [todo[i] for i in group], context)):
                results[i] = r
            bar.update(len(group))
    for i, ids in enumerate(todo):  # in the given order, so the sums are reproducible
        if recurrent:
            nll, correct = results[i]
        else:
            nll, correct = _window_scores(model, ids, context, stride, batch_size)
            bar.update(1)
        scores.add(ids[1:].numpy(), nll.numpy().astype(np.float64), correct.numpy())
    bar.close()
    out = scores.summary()
    out.update(context=context, stride=None if recurrent else stride)
    return out


def format_table(result: dict) -> str:
    lines = [f"{'':<12}{'tokens':>10}{'NLL (nats)':>12}{'perplexity':>12}{'accuracy':>10}"]

    def line(name, r):
        lines.append(f"{name:<12}{r['tokens']:>10,}{r['nll']:>12.4f}{r['perplexity']:>12.3f}{r['accuracy']:>10.2%}")

    line("all", result)
    for name, r in result["families"].items():
        if r["tokens"]:
            line(name, r)
    lines.append(f"per note: {result['nll_per_note']:.4f} nats ({result['notes']:,} notes); per second of music: "
                 f"{result['nll_per_second']:.4f} nats ({result['seconds']:,.1f} s)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI
def configure_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model folder (or Hub id) that AutoModelForCausalLM loads: GPT-2 or MusicRNN")
    p.add_argument("--dataset", required=True, help="a dataset folder written by `hf-midi prepare` (or Hub id)")
    p.add_argument("--split", default="test")
    p.add_argument("--context", type=int, default=None,
                   help="GPT-2 window (default: the model's context, at most the tokenizer's model_max_length) / "
                        "LSTM chunk (default 1024)")
    p.add_argument("--stride", type=int, default=None, help="GPT-2 window step (default: context / 2)")
    p.add_argument("--batch-size", type=int, default=8, help="windows a forward pass")
    p.add_argument("--max-pieces", type=int, default=None, help="score only the first N pieces")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON ('-': stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_evaluate(args: argparse.Namespace) -> int:
    import itertools

    from ..data.stream import iter_pieces
    from ..loading import load_model
    from ..utils import atomic_write_bytes

    # The one loader: a bundled name, a folder, a Hub id or a LoRA adapter, its vocabulary checked (a
    # model of another vocabulary, or one without its MIDI tokenizer, is refused, not scored).
    model, tokenizer = load_model(args.model)
    model = model.to(args.device)
    pieces = iter_pieces(args.dataset, args.split, tokenizer)
    if args.max_pieces:
        pieces = itertools.islice(pieces, args.max_pieces)
    context = args.context
    if context is None and hasattr(model.config, "n_positions"):
        # The tokenizer saved by training holds the block length the model was trained on.
        context = min(model.config.n_positions, int(getattr(tokenizer, "model_max_length", 1e9)))
    result = evaluate_model(model, pieces, context, args.stride, args.batch_size, progress=not args.quiet)
    result = {"model": str(args.model), "model_type": model.config.model_type,
              "parameters": sum(p.numel() for p in model.parameters()), "dataset": str(args.dataset),
              "split": args.split, **result}
    if args.json == "-":
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.model} ({result['model_type']}, {result['parameters'] / 1e6:.2f} M parameters) on "
              f"{args.dataset} [{args.split}]: {result['pieces']} pieces")
        print(format_table(result))
        if args.json:
            atomic_write_bytes(args.json, (json.dumps(result, indent=1) + "\n").encode())
            print(f"wrote {args.json}", file=sys.stderr)
    return 0


__all__ = ["Scores", "configure_evaluate", "evaluate_model", "format_table", "run_evaluate"]
