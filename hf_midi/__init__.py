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
    _register_musicrnn()
    _register_pipeline_when_imported()


def _register_pipeline_when_imported() -> None:
    """Register the ``"midi-generation"`` task as soon as ``transformers.pipelines`` is imported.

    That module takes ~1.7 s to import (measured), so instead of importing it here, a one-shot
    import hook registers the task right after it loads (``from transformers import pipeline``).
    """
    import importlib.abc
    import importlib.machinery
    import sys

    def register(registry=None) -> None:
        half_made = sys.modules.get(f"{__name__}.pipeline_midi_generation")
        if half_made is not None and not hasattr(half_made, "register_pipeline_task"):
            return  # that module is being imported right now and registers the task at its end
        try:
            from .pipeline_midi_generation import register_pipeline_task

            register_pipeline_task(registry)
        except Exception as e:  # never break transformers' own import
            import warnings

            warnings.warn(f"hf_midi: could not register the midi-generation pipeline: {e}", stacklevel=2)

    if "transformers.pipelines" in sys.modules:
        register()
        return

    class RegisterAfterImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "transformers.pipelines":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is not None and spec.loader is not None:
                exec_module = spec.loader.exec_module

                def exec_and_register(module):
                    exec_module(module)
                    register(module.PIPELINE_REGISTRY)

                spec.loader.exec_module = exec_and_register
            return spec

    sys.meta_path.insert(0, RegisterAfterImport())


def _register_musicrnn() -> None:
    """The LSTM baseline: ``AutoConfig`` now (cheap), ``AutoModelForCausalLM`` when the first
    ``MusicRNNConfig`` is made (importing the model class here would add ~1.4 s, measured, to every
    ``import hf_midi``; loading or building a MusicRNN always makes its config first)."""
    from transformers import AutoConfig

    from .configuration_musicrnn import MusicRNNConfig

    AutoConfig.register("musicrnn", MusicRNNConfig, exist_ok=True)

    def register_model() -> None:
        from transformers import AutoModelForCausalLM

        from .modeling_musicrnn import MusicRNNForCausalLM

        AutoModelForCausalLM.register(MusicRNNConfig, MusicRNNForCausalLM, exist_ok=True)

    MusicRNNConfig._on_first_init.append(register_model)


_register()

__all__ = ["MidiError", "MidiReadError", "MidiTokenizer", "TokenIdError", "__version__"]
