# Copied from hf-midi's hf_midi/remote_code/errors.py by hf_midi.hub (`python -m hf_midi.hub`, `hf-midi export`); edit it there.
"""The root of the errors hf-midi raises on purpose.

Every error the package raises for bad input (a MIDI file, token ids, an argument, a model, folder,
corpus or preset that cannot be used) derives from ``HfMidiError``, so a caller can catch "anything
hf-midi refused" in one clause, and ``hf-midi`` prints it as one line (anything else is a defect and
keeps its traceback). It is a ``ValueError``. This file travels to the Hub with the codec, which
imports it.
"""

from __future__ import annotations


class HfMidiError(ValueError):
    """The root of every error hf-midi raises on purpose; the message names the file or argument."""


# The root's name before it had a module of its own; code that catches ``MidiError`` keeps working.
MidiError = HfMidiError

__all__ = ["HfMidiError", "MidiError"]
