"""hf-midi: expressive piano music generation, the Hugging Face way.

``import hf_midi`` registers the tokenizer with ``AutoTokenizer`` (and, as they land, the LSTM
model with the Auto model classes and the ``"midi-generation"`` pipeline task). Heavy optional
dependencies (accelerate, datasets, gradio, matplotlib) are imported only where used.
"""

from .codec import MidiError, MidiReadError, TokenIdError
from .tokenization_midi import MidiTokenizer

__version__ = "0.1.0"


def _register() -> None:
    # By class name only: mapping a config (GPT2Config) to this tokenizer would hijack every
    # GPT-2 checkpoint's tokenizer in this process.
    from transformers.models.auto import tokenization_auto

    tokenization_auto.REGISTERED_TOKENIZER_CLASSES.setdefault("MidiTokenizer", MidiTokenizer)


_register()

__all__ = ["MidiError", "MidiReadError", "MidiTokenizer", "TokenIdError", "__version__"]
