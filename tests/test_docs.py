"""Every Python block of the README and of docs/ runs as written.

Each page's blocks run in a fresh process, in a scratch folder that holds what the pages name as
placeholders (``song.mid``: a POP909 fixture; ``docs/controls/`` and ``docs/samples/`` for the pages that
write their pictures there), each block in a namespace of its own, as a reader pasting one block at a time.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import POP909_FIXTURES, ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
RUNNER = """
import json, sys, traceback
import torch
torch.set_num_threads(1)  # the suite's setting: one thread a process on a shared 2-core machine
for i, block in enumerate(json.load(sys.stdin)):
    try:
        exec(compile(block, f"block {i + 1}", "exec"), {"__name__": "__main__"})
    except BaseException:
        print(f"block {i + 1} failed:\\n{block}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def test_the_readme_and_the_docs_have_python_to_run():
    counts = {page.relative_to(ROOT).as_posix(): len(blocks(page)) for page in PAGES}
    assert counts["README.md"] >= 2 and counts["docs/generation.md"] >= 3 and counts["docs/controls.md"] >= 2
    for page in ("README.md", "docs/generation.md", "docs/controls.md"):  # placeholders are marked in the text
        text = (ROOT / page).read_text(encoding="utf-8")
        assert "song.mid" not in text or "stands for your own MIDI file" in text, page


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_python_block_runs_as_written(page, tmp_path):
    shutil.copy(POP909_FIXTURES[0], tmp_path / "song.mid")
    for folder in ("docs/controls", "docs/samples"):
        (tmp_path / folder).mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(blocks(page)), cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_the_readme_starts_with_two_set_up_lines_that_stop_at_the_first_failure():
    """The README's first two commands set up and compose, and set up and test; every step is joined with
    `&&`, so a failed step (a torch that cannot be had) stops the line instead of being hidden. The test
    command is the one CI runs."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    compose, tests = re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)[:2]
    for block in (compose, tests):
        [line] = [x for x in block.splitlines() if x and not x.startswith("#")]
        assert ";" not in line and "||" not in line and line.startswith("python3 -m venv .venv && ")
    assert "hf-midi generate" in compose and compose.strip().endswith("--png song.png")
    test_command = tests.strip().rsplit("&& ", 1)[1]
    assert test_command == "python -m pytest -q" and test_command in (ROOT / ".ci" / "run").read_text()
