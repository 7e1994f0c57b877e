"""Where training lives: the one trainer (``trainer``: ``accelerate launch train.py``, or
``accelerate launch -m hf_midi.training`` from an installed package), the models it builds and exports
(``models``), its batch sources (``batches``), checkpoints (``checkpoints``), its arguments and presets
(``args``, ``configs/*.yaml``) and ``hf-midi finetune`` (``finetune``).

The names most callers want are here: ``train``, ``main``, ``build_model``, ``load_config``, ...
"""

from .args import ConfigError, ModelArguments, RunArguments, TrainingError, load_config, parse_args
from .models import build_model, generation_config
from .trainer import main, train

__all__ = [
    "ConfigError",
    "ModelArguments",
    "RunArguments",
    "TrainingError",
    "build_model",
    "generation_config",
    "load_config",
    "main",
    "parse_args",
    "train",
]
