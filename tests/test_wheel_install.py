"""A non-editable install (as from a wheel) runs what the README documents, from another folder.

The wheel is built here without network (setuptools from this environment), installed without its
dependencies into a fresh virtual environment that borrows this one's packages (a path entry, so none of
this environment's own .pth hooks, such as the editable install of hf_midi, apply), and every command is
run from a folder outside the repository.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import POP909_FIXTURES, ROOT

pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")


def run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a clean copy of the sources: no build/ or egg-info of the editable install
    top = {".git", ".venv", "runs", "data", "gpu_data", "out", "build", "dist", ".whl", "tests", "benchmarks", "docs",
           "recipes"}  # top-level only: hf_midi/data is the package's own
    anywhere = shutil.ignore_patterns("*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache")

    def ignore(folder, names):
        return set(anywhere(folder, names)) | (top & set(names) if Path(folder) == ROOT else set())

    shutil.copytree(ROOT, src, ignore=ignore)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
         str(src)], cwd=tmp, env=env)
    [wheel] = list((tmp / "dist").glob("hf_midi-*.whl"))
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=env)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                           text=True).strip())
    borrowed = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (purelib / "_borrowed_deps.pth").write_text("\n".join(dict.fromkeys(borrowed)) + "\n")
    run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=tmp, env=env)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    clean.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                 PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    return {"py": str(py), "bin": venv / "bin", "cwd": elsewhere, "env": clean, "venv": venv}


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    out = run([installed["py"], "-c", "import hf_midi, os; print(os.path.dirname(hf_midi.__file__))"],
              installed["cwd"], installed["env"]).stdout.strip()
    assert Path(out).is_relative_to(installed["venv"]) and not Path(out).is_relative_to(ROOT)


def test_presets_and_bundled_models_come_with_the_wheel(installed):
    code = ("from hf_midi.training import build_model; from hf_midi.training.args import load_config;"
            "m = build_model('small-stream');"
            "print(m.config.n_layer, load_config('tiny', check_paths=False).block_size);"
            "from hf_midi.loading import bundled_models; print(sorted(bundled_models()))")
    out = run([installed["py"], "-c", code], installed["cwd"], installed["env"]).stdout.split("\n")
    assert out[0] == "4 128" and out[1] == "['base', 'default', 'small']"


def test_the_readme_commands_work_from_another_folder(installed):
    cwd, env, hf = installed["cwd"], installed["env"], str(installed["bin"] / "hf-midi")
    # The main job: compose with the bundled model, write MIDI and the piano roll.
    run([hf, "generate", "--seconds", "2", "--seed", "0", "-o", "song.mid", "--png", "song.png"], cwd, env)
    assert (cwd / "song.mid").stat().st_size > 20 and (cwd / "song.png").read_bytes()[:4] == b"\x89PNG"
    # Prepare a folder, train from the tiny preset through the installed module (no train.py here),
    # fine-tune from the bundled model, evaluate.
    src = cwd / "midi"
    src.mkdir()
    for f in POP909_FIXTURES:
        shutil.copy(f, src / f.name)
    shutil.copy(POP909_FIXTURES[0].parent / "split.csv", src / "split.csv")
    run([hf, "prepare", "midi", "data", "--splits", "midi/split.csv", "--license", "mit", "--num-workers", "0"],
        cwd, env)
    run([installed["py"], "-m", "hf_midi.training", "--config", "tiny", "--dataset", "data", "--output_dir", "run",
         "--max_steps", "2", "--tracker", "none", "--eval_batches", "1", "--save_every", "0"], cwd, env)
    assert (cwd / "run" / "model.safetensors").is_file()
    run([hf, "evaluate", "run", "--dataset", "data", "--split", "test", "--quiet"], cwd, env)
    run([hf, "finetune", "midi", "tuned", "--minutes", "1", "--max-steps", "1", "--block-size", "128", "--quiet"],
        cwd, env)
    assert (cwd / "tuned" / "model" / "config.json").is_file()
