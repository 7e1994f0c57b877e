"""``accelerate launch -m hf_midi.training ...``: train.py for an installed package (no checkout)."""

import sys

from .trainer import main

sys.exit(main())
