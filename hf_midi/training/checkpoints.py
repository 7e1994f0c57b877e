"""A run's checkpoints: ``save_state`` into a hidden folder renamed into place (a ``step_*`` folder is
always complete), the latest one found for ``--resume latest``, and a resumed run's data position and
metrics put back where the checkpoint left them."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ..utils import fsync_files
from .args import RunArguments
from .batches import StreamBatches

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (a renamed-into-place folder is complete)."""
    root = Path(output_dir) / CHECKPOINTS
    found = [p for p in root.glob("step_*") if re.fullmatch(r"step_\d+", p.name) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def resolve_resume(args: RunArguments) -> Path | None:
    if args.resume is None:
        return None
    if args.resume == "latest":
        found = checkpoints(args.output_dir)
        return found[-1] if found else None  # nothing yet: start fresh (a first run and a rerun look alike)
    return Path(args.resume)  # validate() checked it holds a trainer_state.json


def save_checkpoint(accelerator, out: Path, step: int, state: dict, data_state: dict, keep: int) -> Path:
    """``save_state`` into a hidden folder, then one rename: a crash leaves no partial ``step_*``. (The
    policy of ``utils.atomic_folder``, written out here because every process writes into the folder, so
    its name must be known to all of them.)"""
    root = out / CHECKPOINTS
    final, tmp = root / f"step_{step:07d}", root / f".tmp-step_{step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    rank = accelerator.process_index
    (tmp / f"data_state_rank{rank}.json").write_text(json.dumps(data_state), encoding="utf-8")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        fsync_files(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def truncate_metrics(path: Path, step: int) -> None:
    """A resumed run rewrites the steps after its checkpoint: drop their old lines."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):  # a line cut off by a kill
            pass
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def load_checkpoint(accelerator, path: Path, batches, args: RunArguments) -> tuple[int, int, float]:
    state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    accelerator.load_state(str(path))
    data_file = path / f"data_state_rank{accelerator.process_index}.json"
    if state["world_size"] == accelerator.num_processes and data_file.is_file():
        batches.load_state_dict(json.loads(data_file.read_text(encoding="utf-8")))
    else:  # another world size shards the data differently: go on from the next epoch's start
        if isinstance(batches, StreamBatches):
            epoch = json.loads((path / "data_state_rank0.json").read_text(encoding="utf-8"))["epoch"] + 1
            batches.load_state_dict({"epoch": epoch, "taken": 0, "stream": None})
            accelerator.print(f"resume: {state['world_size']} -> {accelerator.num_processes} processes; "
                              f"the data restarts at epoch {epoch}")
        else:  # packed windows: a fresh draw for each rank
            batches.reseed(args.seed, accelerator.process_index, state["step"])
            accelerator.print(f"resume: {state['world_size']} -> {accelerator.num_processes} processes; "
                              "the packed windows are drawn afresh")
    accelerator.print(f"resumed from {path} at step {state['step']}")
    return state["step"], state["tokens_seen"], state["minutes"]


__all__ = ["CHECKPOINTS", "TRAINER_STATE", "checkpoints", "load_checkpoint", "resolve_resume", "save_checkpoint",
           "truncate_metrics"]
