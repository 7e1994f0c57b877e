"""The evaluation room: what the model card and the benchmarks report.

- ``nll``: NLL per event, note and second on a dataset split (``hf-midi evaluate``);
- ``listener``: the listener's checks, each fault a listener would hear in a piece, counted over
  samples and over real windows of music.
"""

from .listener import FAULTS, ListenerLimits, listen, listen_ids, listener_report, real_windows
from .nll import Scores, configure_evaluate, evaluate_model, format_table, run_evaluate

__all__ = [
    "FAULTS", "ListenerLimits", "Scores", "configure_evaluate", "evaluate_model", "format_table", "listen",
    "listen_ids", "listener_report", "real_windows", "run_evaluate",
]
