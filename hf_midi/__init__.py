"""hf-midi: expressive piano music generation, the Hugging Face way.

The public names are here: ``from hf_midi import load_pipeline, load_model, generate_music, fast_sample,
MusicStreamer, MusicControls, SoundAtOnceLogitsProcessor, FillPlan, AccompanyPlan, ...``. ``import hf_midi``
also registers the tokenizer with ``AutoTokenizer``, the LSTM with ``AutoConfig`` and ``AutoModelForCausalLM``, and the
``"midi-generation"`` pipeline task (``_register``). Heavy optional dependencies (accelerate, datasets,
peft, gradio) are imported only where used.
"""

from .loading import bundled_critic_path, default_model_path, load_model, load_pipeline
from .remote_code.codec import MidiReadError, TokenIdError
from .remote_code.controls import (
    KeyProfileLogitsProcessor,
    MaxPolyphonyLogitsProcessor,
    MusicControls,
    NoPedalLogitsProcessor,
    NoteDensityLogitsProcessor,
    PitchSetLogitsProcessor,
    VelocityRangeLogitsProcessor,
)
from .remote_code.critic import MusicCritic
from .remote_code.errors import HfMidiError, MidiError
from .remote_code.fast_generation import fast_sample
from .remote_code.generation import generate_music, music_processors
from .remote_code.processors import (
    CanonicalOrderLogitsProcessor,
    GivenNotes,
    GivenNotesLogitsProcessor,
    MaxNoteLengthLogitsProcessor,
    MaxSilenceLogitsProcessor,
    MusicTimeLimitLogitsProcessor,
    MusicTimeStoppingCriteria,
    PerformanceGrammarLogitsProcessor,
    SoundAtOnceLogitsProcessor,
)
from .remote_code.streaming import MusicChunk, MusicStreamer
from .remote_code.tokenization_midi import MidiTokenizer
from .remote_code.writing import AccompanyPlan, FillPlan

__version__ = "0.1.0"


def _register() -> None:
    """Plain, documented registration with transformers, once, at import:

    - ``AutoConfig`` / ``AutoModelForCausalLM``: the LSTM baseline (``model_type = "musicrnn"``);
    - ``AutoTokenizer``: ``MidiTokenizer``, mapped to the LSTM's config (an LSTM folder loads it), and
      so known by its class name to every folder whose ``tokenizer_config.json`` names it. It is not
      mapped to ``GPT2Config``: that would hand this tokenizer to every GPT-2 checkpoint in the process;
    - ``PIPELINE_REGISTRY``: the ``"midi-generation"`` task, its default the bundled model.

    Importing the pipeline and modeling code here costs time at ``import hf_midi``
    (benchmarks/RESULTS.md has the measure) and buys registration without import hooks.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .remote_code.configuration_musicrnn import MusicRNNConfig
    from .remote_code.modeling_musicrnn import MusicRNNForCausalLM
    from .remote_code.pipeline_midi_generation import register_pipeline_task

    AutoConfig.register("musicrnn", MusicRNNConfig, exist_ok=True)
    AutoModelForCausalLM.register(MusicRNNConfig, MusicRNNForCausalLM, exist_ok=True)
    AutoTokenizer.register(MusicRNNConfig, tokenizer_class=MidiTokenizer, exist_ok=True)
    register_pipeline_task(default_model=default_model_path(), default_critic=bundled_critic_path())


_register()

__all__ = [
    "AccompanyPlan", "CanonicalOrderLogitsProcessor", "FillPlan", "GivenNotes", "GivenNotesLogitsProcessor",
    "KeyProfileLogitsProcessor", "MaxPolyphonyLogitsProcessor", "MusicControls", "NoPedalLogitsProcessor",
    "NoteDensityLogitsProcessor", "PitchSetLogitsProcessor", "VelocityRangeLogitsProcessor", "music_processors",
    "MaxNoteLengthLogitsProcessor", "MaxSilenceLogitsProcessor", "HfMidiError", "MidiError", "MidiReadError",
    "MidiTokenizer", "MusicCritic",
    "MusicChunk", "MusicStreamer", "MusicTimeLimitLogitsProcessor", "MusicTimeStoppingCriteria",
    "PerformanceGrammarLogitsProcessor", "SoundAtOnceLogitsProcessor", "TokenIdError", "__version__", "fast_sample",
    "generate_music", "load_model", "load_pipeline",
]
