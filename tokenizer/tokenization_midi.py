# Copied from hf-midi's hf_midi/remote_code/tokenization_midi.py by hf_midi.hub (`python -m hf_midi.hub`, `hf-midi export`); edit it there.
"""MidiTokenizer: the ``transformers`` face of the performance-event codec.

Only ``codec`` is imported (relatively), so this file and ``codec.py`` can be copied into a Hub
folder as remote code and load where ``hf_midi`` is not installed.

Three ways in:

- ``tokenizer.encode_midi("song.mid")`` -> ``[391, ..., 392]`` (one piece, a list of ids);
- ``tokenizer(midi=["a.mid", b"MThd..."], padding=True, return_tensors="pt")`` -> a
  ``BatchEncoding`` with ``input_ids`` and ``attention_mask``, like text tokenizers give;
- the text form: ``tokenizer("NOTE_ON_60 TIME_SHIFT_500 NOTE_OFF_60")`` and ``tokenizer.decode``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizer

from .codec import (
    BOS_ID,
    EOS_ID,
    SUSTAIN_MODES,
    VOCAB_SIZE,
    TokenIdError,
    decode,
    encode,
    token_names,
)
from .errors import HfMidiError

VOCAB_FILE = "vocab.json"


def _is_midi(x: Any) -> bool:
    """Inputs taken as MIDI when passed positionally: bytes, a Score, a Path, or a .mid/.midi path."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return True
    if isinstance(x, os.PathLike):
        return True
    if isinstance(x, str):  # no token ends in ".mid", so this cannot be event text
        return x.rstrip().lower().endswith((".mid", ".midi"))
    return type(x).__name__ == "Score" and type(x).__module__.startswith("symusic")


class MidiTokenizer(PreTrainedTokenizer):
    """Tokenizer for the 390-event performance vocabulary (Oore et al. 2018) plus 3 special tokens.

    Args:
        sustain: how the sustain pedal is encoded: ``"events"`` (SUSTAIN_ON/OFF tokens, default),
            ``"extend"`` (note ends moved to the pedal release, no pedal tokens; Music Transformer),
            or ``"ignore"``.
        model_max_length: the longest sequence a model using this tokenizer takes.
    """

    vocab_files_names = {"vocab_file": VOCAB_FILE}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | None = None,
        sustain: str = "events",
        model_max_length: int = 2048,
        bos_token: str = "<bos>",
        eos_token: str = "<eos>",
        pad_token: str = "<pad>",
        **kwargs,
    ):
        if sustain not in SUSTAIN_MODES:
            raise HfMidiError(f"sustain must be one of {SUSTAIN_MODES}, got {sustain!r}")
        names = token_names()
        if vocab_file is not None:
            # The vocabulary is fixed by the codec (docs/vocabulary.md); a saved vocab.json must agree with it.
            with open(vocab_file, encoding="utf-8") as f:
                saved = json.load(f)
            if saved != {n: i for i, n in enumerate(names)}:
                raise HfMidiError(f"{vocab_file}: vocabulary differs from the codec's 393 tokens")
        self.sustain = sustain
        self._id_to_token = names
        self._token_to_id = {n: i for i, n in enumerate(names)}  # set before super().__init__
        kwargs.pop("special_tokens_pattern", None)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(
            sustain=sustain,
            model_max_length=model_max_length,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            special_tokens_pattern="bos_eos",
            **kwargs,
        )

    # ------------------------------------------------------------------ the vocabulary
    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    def get_vocab(self) -> dict[str, int]:
        return dict(self._token_to_id)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return text.split()

    def _convert_token_to_id(self, token: str) -> int:
        try:
            return self._token_to_id[token]
        except KeyError:
            raise HfMidiError(f"unknown token {token!r}: not in the performance vocabulary") from None

    def _convert_id_to_token(self, index: int) -> str:
        if not 0 <= int(index) < VOCAB_SIZE:
            raise TokenIdError(f"token id {index} is outside 0..{VOCAB_SIZE - 1}")
        return self._id_to_token[int(index)]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        # Set explicitly: special_tokens_pattern is not saved by transformers 5.
        if token_ids_1 is None:
            return [self.bos_token_id] + list(token_ids_0) + [self.eos_token_id]
        return [self.bos_token_id] + list(token_ids_0) + [self.eos_token_id] + list(token_ids_1) + [self.eos_token_id]

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        path = os.path.join(save_directory, (f"{filename_prefix}-" if filename_prefix else "") + VOCAB_FILE)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self._token_to_id, f, indent=0)
            f.write("\n")
        return (path,)

    # ------------------------------------------------------------------ MIDI
    def encode_midi(self, midi, add_special_tokens: bool = True) -> list[int]:
        """A MIDI path, raw bytes or ``symusic.Score`` to a list of ids (``<bos>`` ... ``<eos>``)."""
        ids = encode(midi, sustain=self.sustain).tolist()
        return [BOS_ID, *ids, EOS_ID] if add_special_tokens else ids

    def decode_midi(self, ids):
        """Ids (list, numpy array or tensor; 1-D) to a ``symusic.Score`` in ticks.

        ``<bos>`` and ``<pad>`` are skipped and ``<eos>`` ends the piece; any id outside 0..392
        raises ``TokenIdError`` naming it and its position.
        """
        if hasattr(ids, "detach"):
            ids = ids.detach().cpu().numpy()
        ids = np.asarray(ids)
        if ids.ndim > 1 and ids.shape[0] != 1 or ids.ndim > 2:
            raise HfMidiError(
                f"decode_midi takes one sequence of ids, got shape {ids.shape}; decode each row"
            )
        return decode(ids.reshape(-1))

    def __call__(self, text=None, *args, midi=None, **kwargs):
        """Text as usual; MIDI through ``midi=`` (a path, bytes, Score, or a list of them).

        bytes, ``symusic.Score``, ``pathlib.Path`` and strings ending in .mid/.midi are also taken
        as MIDI when passed positionally.
        """
        if midi is None and text is not None:
            first = text[0] if isinstance(text, (list, tuple)) and len(text) else text
            if _is_midi(first):
                midi, text = text, None
        if midi is None:
            return super().__call__(text, *args, **kwargs)
        if text is not None or args:
            raise HfMidiError("pass either text or midi=, not both")
        return self._call_midi(midi, **kwargs)

    def _call_midi(
        self,
        midi,
        add_special_tokens: bool = True,
        padding=False,
        truncation=False,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors=None,
        return_attention_mask: bool | None = None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"unsupported arguments for MIDI input: {sorted(kwargs)}")
        batched = isinstance(midi, (list, tuple))
        items = list(midi) if batched else [midi]
        limit = max_length if max_length is not None else self.model_max_length
        out = []
        for item in items:
            ids = self.encode_midi(item, add_special_tokens=False)
            if truncation and truncation != "do_not_truncate":
                ids = ids[: max(limit - (2 if add_special_tokens else 0), 0)]
            out.append(self.build_inputs_with_special_tokens(ids) if add_special_tokens else ids)
        encoded = {"input_ids": out if batched else out[0]}
        to_max = getattr(padding, "value", padding) == "max_length"
        return self.pad(
            encoded,
            padding=padding,
            max_length=max_length if to_max else None,  # else pad warns that it ignores it
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            return_tensors=return_tensors,
            return_attention_mask=return_attention_mask,
        )


__all__ = ["MidiTokenizer"]
