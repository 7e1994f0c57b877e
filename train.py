"""Train a model: ``accelerate launch train.py --config tiny --dataset DIR --output_dir OUT``.

(From a wheel install, without this file: ``accelerate launch -m hf_midi.training ...``.)

Any config field can be overridden (``--learning_rate 3e-4``, ``--model.num_layers 6``); see
``python train.py --help`` and hf_midi/training/args.py. ``--resume`` (latest) or ``--resume PATH``
continues a run at the same step and data position.
"""

import sys

from hf_midi.training import main

if __name__ == "__main__":
    sys.exit(main())
