"""Assemble a deployable copy of the Space: ``python spaces_app/build.py OUT [--model DIR] [--force]``.

A Space cannot pip-install hf_midi, so the copy holds the package itself next to ``app.py``
(``python app.py`` puts its own folder first on ``sys.path``, so that copy is what it imports),
with its bundled model, or the model folder given with ``--model`` in its place. Push ``OUT`` with
``huggingface-cli upload USER/SPACE OUT . --repo-type space`` (large weights go through LFS).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPACE_FILES = ("app.py", "requirements.txt", "packages.txt", "README.md")
SPACE_DIRS = ("examples",)
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
# What the Space does not run stays behind: training, data preparation, evaluation, the CLI, Hub export.
NOT_IN_THE_SPACE = {"training", "data", "evaluation", "cli.py", "hub.py"}


def _package_ignore(folder, names):
    top = NOT_IN_THE_SPACE & set(names) if Path(folder).name == "hf_midi" and (Path(folder) / "__init__.py").is_file() \
        else set()
    return set(IGNORE(folder, names)) | top


def _package_dir() -> Path:
    """The hf_midi source to copy: the checkout's, else the installed one."""
    checkout = HERE.parent / "hf_midi"
    if (checkout / "__init__.py").is_file():
        return checkout
    import hf_midi

    return Path(hf_midi.__file__).resolve().parent


def build_space(out: str | os.PathLike, model: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Write the Space into ``out`` (built in a temporary folder beside it, then renamed)."""
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty (pass force=True / --force to replace it)")
    if model is not None and not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"{model}: not a model folder (no config.json)")
    from hf_midi.loading import DEFAULT_MODEL
    from hf_midi.utils import atomic_folder

    with atomic_folder(out) as tmp:
        for name in SPACE_FILES:
            shutil.copy2(HERE / name, tmp / name)
        for name in SPACE_DIRS:
            shutil.copytree(HERE / name, tmp / name, ignore=IGNORE)
        package = tmp / "hf_midi"
        shutil.copytree(_package_dir(), package, ignore=_package_ignore)
        if model is not None:
            bundled = package / "pretrained" / DEFAULT_MODEL
            shutil.rmtree(bundled, ignore_errors=True)
            shutil.copytree(model, bundled, ignore=IGNORE)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the folder to write (the Space repository's contents)")
    parser.add_argument("--model", default=None, help="a model folder to bundle instead of hf_midi's own")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        out = build_space(args.out, args.model, args.force)
    except (FileExistsError, FileNotFoundError) as e:
        print(f"build.py: error: {e}", file=sys.stderr)
        return 1
    from hf_midi.loading import DEFAULT_MODEL

    has_model = (out / "hf_midi" / "pretrained" / DEFAULT_MODEL / "config.json").is_file()
    print(f"wrote {out}" + ("" if has_model else " (no bundled model: the Space needs HF_MIDI_MODEL)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
