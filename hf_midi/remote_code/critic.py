"""The critic: a small network that scores how much a stretch of music sounds like real piano playing rather
than a model's samples (a logit: > 0 leans "real"). Search while composing (``search.py``) keeps, of K
candidates for each chunk, those it scores highest.

It sees the music itself, as a piano roll of 50-ms frames: for each of the piano's 88 keys where notes begin
(scaled by velocity) and where keys are down, and the sustain pedal (``roll_from_notes``: 177 rows). A stack
of dilated 1-D convolutions over time (100-ms frames, a receptive field of ~3 s) ends in the mean and the maximum
over the stretch: hammering, blips, drones, a pedal that ignores the harmony and textures no pair of hands makes are
all local patterns it can learn to spot. ~100 k parameters: a 10-s stretch costs well under a millisecond.

Saved as ``critic.json`` (its shape, the vocabulary it reads, how it was trained) and ``critic.safetensors``
(``MusicCritic.save_pretrained`` / ``from_pretrained``); trained by ``hf-midi critic``
(``hf_midi.evaluation.critic_training``). Only torch, numpy and safetensors are imported: the file travels
with the pipeline into a Hub folder.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .codec import NUM_EVENTS, PIANO_KEYS, VOCAB_SIZE, ids_to_notes
from .errors import HfMidiError

CRITIC_CONFIG = "critic.json"
CRITIC_WEIGHTS = "critic.safetensors"
CRITIC_FORMAT = "hf-midi-critic"
CRITIC_SECONDS = 30.0  # the longest stretch it learned to score (4-30 s)
STEPS_PER_FRAME = 5  # 10-ms steps per frame: 50-ms frames
KEYS = PIANO_KEYS[1] - PIANO_KEYS[0] + 1  # 88
CHANNELS = 2 * KEYS + 1  # onsets, keys down, the pedal


class CriticError(HfMidiError):
    """A critic file that is missing, unreadable or made for another vocabulary (the message names it)."""


def roll_from_notes(notes: dict, start: int, end: int, transpose: int = 0) -> np.ndarray:
    """The (177, frames) float32 roll of steps ``start``..``end`` of ``notes`` (``codec.ids_to_notes``):
    rows 0-87 a note beginning (velocity / 127), rows 88-175 a key down, row 176 the pedal down. Pitches
    (transposed by ``transpose``) outside the piano's keys are kept at its lowest or highest key."""
    frames = max(1, math.ceil((end - start) / STEPS_PER_FRAME))
    roll = np.zeros((CHANNELS, frames), np.float32)
    s, e, p, v = notes["start"], notes["end"], notes["pitch"], notes["velocity"]
    keep = (e > start) & (s < end)
    s, e, p, v = s[keep], e[keep], p[keep], v[keep]
    row = np.clip(p + transpose, PIANO_KEYS[0], PIANO_KEYS[1]) - PIANO_KEYS[0]
    begins = s >= start
    f0 = (s[begins] - start) // STEPS_PER_FRAME
    np.maximum.at(roll, (row[begins], f0), v[begins] / 127.0)
    a = (np.maximum(s, start) - start) // STEPS_PER_FRAME
    b = np.maximum(a + 1, -(-(np.minimum(e, end) - start) // STEPS_PER_FRAME))
    held = np.zeros((KEYS, frames + 1), np.float32)
    np.add.at(held, (row, a), 1.0)
    np.add.at(held, (row, np.minimum(b, frames)), -1.0)
    roll[KEYS : 2 * KEYS] = np.cumsum(held, 1)[:, :frames] > 0
    times, values = notes["pedal_time"], notes["pedal_value"]
    if len(times):
        down = np.zeros(frames + 1, np.float32)
        before = times < start
        state = bool(before.any() and values[before][-1] >= 64)
        at = 0
        for t, val in zip(times[~before], values[~before]):
            f = min(frames, max(0, (int(t) - start) // STEPS_PER_FRAME))
            if f >= frames:
                break
            down[at:f] = state
            at, state = f, val >= 64
        down[at:frames] = state
        roll[2 * KEYS] = down[:frames]
    return roll


def batch_rolls(rolls: list[np.ndarray], tails: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rolls of different lengths as one zero-padded (B, 177, T) tensor, and the (B, T) mask of the frames to
    judge: each roll's frames, or only its last ``tails[i]``."""
    width = max(r.shape[1] for r in rolls)
    x = torch.zeros(len(rolls), CHANNELS, width)
    mask = torch.zeros(len(rolls), width, dtype=torch.bool)
    for i, r in enumerate(rolls):
        n = r.shape[1]
        x[i, :, :n] = torch.from_numpy(r)
        first = 0 if tails is None else max(0, n - int(tails[i]))
        mask[i, first:n] = True
    return x, mask


class MusicCritic(nn.Module):
    """Scores piano rolls (``roll_from_notes``): ``forward(x (B, 177, T), mask (B, T))`` -> (B,) logits,
    > 0 leaning "real playing". ``score_ids`` does the whole way from event ids."""

    def __init__(self, width: int = 64, dilations: tuple[int, ...] = (1, 2, 4, 8), training: dict | None = None):
        super().__init__()
        self.width, self.dilations = int(width), tuple(int(d) for d in dilations)
        self.training_report = training or {}
        # 50-ms frames in, 100-ms frames out: each output frame sees 200 ms (a re-strike at 0.18 s is one pattern)
        self.inp = nn.Conv1d(CHANNELS, self.width, 4, stride=2, padding=1)
        self.blocks = nn.ModuleList(nn.Conv1d(self.width, self.width, 3, padding=d, dilation=d) for d in self.dilations)
        self.head = nn.Linear(2 * self.width, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = F.gelu(self.inp(x))
        for conv in self.blocks:
            h = h + F.gelu(conv(h))
        if mask is not None:  # a frame out is judged where its second frame in is (the first of a tail can be odd)
            mask = F.pad(mask, (0, 1))[:, 1::2][:, : h.shape[2]]
        if mask is None:
            pooled = torch.cat([h.mean(2), h.amax(2)], 1)
        else:
            m = mask[:, None, :].to(h.dtype)
            mean = (h * m).sum(2) / m.sum(2).clamp(min=1)
            top = h.masked_fill(~mask[:, None, :], -math.inf).amax(2)
            pooled = torch.cat([mean, top], 1)
        return self.head(pooled)[:, 0]

    @torch.no_grad()
    def score_rolls(self, rolls: list[np.ndarray], tails: list[int] | None = None) -> np.ndarray:
        """Logits for rolls of any lengths (one padded batch). ``tails``: judge only each roll's last so many
        frames (the frames before them are context the network hears, not what it scores); None: all."""
        x, mask = batch_rolls(rolls, tails)
        was = self.training
        self.eval()
        out = self(x, mask).numpy()
        self.train(was)
        return out

    def score_ids(self, pieces, seconds: float | None = 12.0, tail: float | None = None) -> np.ndarray:
        """Logits for each row of event ids (special ids allowed): its last ``seconds`` of music (None: all),
        ending at the last time shift. ``tail``: judge only the last ``tail`` seconds, the rest heard as
        context (a search scores the chunk its candidates differ in)."""
        rolls, tails = [], []
        for ids in pieces:
            notes = ids_to_notes(np.asarray(ids))
            end = max(int(notes["end_step"]), 1)
            start = 0 if seconds is None else max(0, end - int(round(seconds * 100)))
            rolls.append(roll_from_notes(notes, start, end))
            tails.append(rolls[-1].shape[1] if tail is None else max(1, math.ceil(tail * 100 / STEPS_PER_FRAME)))
        return self.score_rolls(rolls, tails)

    # ---- files
    def config(self) -> dict:
        return {"format": CRITIC_FORMAT, "version": 1, "vocab_size": VOCAB_SIZE, "events": NUM_EVENTS,
                "steps_per_frame": STEPS_PER_FRAME, "keys": list(PIANO_KEYS), "width": self.width,
                "dilations": list(self.dilations), "training": self.training_report}

    def save_pretrained(self, folder: str | os.PathLike, training: dict | None = None) -> Path:
        """``critic.json`` + ``critic.safetensors`` in ``folder``, written whole or not at all."""
        from safetensors.torch import save_file

        if training is not None:
            self.training_report = training
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, write in ((CRITIC_WEIGHTS, lambda p: save_file(
                {k: v.contiguous() for k, v in self.state_dict().items()}, str(p), metadata={"format": "pt"})),
                            (CRITIC_CONFIG, lambda p: p.write_text(json.dumps(self.config(), indent=1) + "\n"))):
            tmp = folder / f".{name}.tmp"
            try:
                write(tmp)
                tmp.chmod(0o644)  # readable like the model's other files (safetensors writes 0600)
                os.replace(tmp, folder / name)
            finally:
                tmp.unlink(missing_ok=True)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> MusicCritic:
        """The critic saved in ``folder`` (or the folder holding a given ``critic.json``/``critic.safetensors``).
        ``CriticError`` naming the file when it is missing, unreadable or for another vocabulary."""
        folder = Path(folder)
        if folder.is_file():
            folder = folder.parent
        config_path, weights_path = folder / CRITIC_CONFIG, folder / CRITIC_WEIGHTS
        for p in (config_path, weights_path):
            if not p.is_file():
                raise CriticError(f"critic {folder}: {p.name} is missing (a critic folder holds {CRITIC_CONFIG} "
                                  f"and {CRITIC_WEIGHTS}; hf-midi critic trains one)")
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as e:
            raise CriticError(f"critic {config_path}: not readable JSON ({e})") from None
        if not isinstance(config, dict) or config.get("format") != CRITIC_FORMAT:
            found = config.get("format") if isinstance(config, dict) else None
            raise CriticError(f"critic {config_path}: not an hf-midi critic (format {found!r})")
        if config.get("vocab_size") != VOCAB_SIZE or config.get("events") != NUM_EVENTS \
                or list(config.get("keys", ())) != list(PIANO_KEYS) or config.get("steps_per_frame") != STEPS_PER_FRAME:
            raise CriticError(f"critic {config_path}: made for another vocabulary (vocab_size "
                              f"{config.get('vocab_size')}, events {config.get('events')}; this codec has "
                              f"{VOCAB_SIZE} and {NUM_EVENTS})")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        critic = cls(config.get("width", 64), tuple(config.get("dilations", (1, 2, 4, 8))), config.get("training"))
        try:
            critic.load_state_dict(load_file(str(weights_path)))
        except (SafetensorError, RuntimeError, OSError) as e:
            raise CriticError(f"critic {weights_path}: weights do not fit {CRITIC_CONFIG} "
                              f"({str(e).splitlines()[0]})") from None
        return critic.eval()


__all__ = ["batch_rolls", "CHANNELS", "CRITIC_CONFIG", "CRITIC_SECONDS", "CRITIC_WEIGHTS", "CriticError", "MusicCritic",
           "roll_from_notes"]
