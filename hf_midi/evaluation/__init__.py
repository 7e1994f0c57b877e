"""The evaluation room: what the model card and the benchmarks report.

- ``nll``: NLL per event, note and second on a dataset split (``hf-midi evaluate``);
- ``listener``: the listener's checks, each fault a listener would hear in a piece, counted over
  samples and over real windows of music;
- ``mgeval``: MGEval distances (Yang and Lerch 2020) between sets of pieces, and memorisation;
- ``music_stats``: per-piece statistics (density, polyphony, range, pitch-class entropy, dynamics,
  note lengths) against the band of real windows.
"""

from .listener import FAULTS, ListenerLimits, listen, listen_ids, listener_report, real_windows
from .nll import Scores, configure_evaluate, evaluate_model, format_table, run_evaluate

__all__ = [
    "FAULTS", "ListenerLimits", "Scores", "configure_evaluate", "evaluate_model", "format_table", "listen",
    "listen_ids", "listener_report", "real_windows", "run_evaluate",
]
