"""The folder writer every job uses (hf_midi.utils.atomic_folder): whole or nothing, old kept until the swap."""

from __future__ import annotations

import os

import pytest

from hf_midi.utils import atomic_folder


def _listing(parent):
    return sorted(p.name for p in parent.iterdir())


def test_a_failed_write_leaves_the_old_folder_as_it_was(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert _listing(out) == ["old.txt"] and _listing(tmp_path) == ["model"]


def test_a_finished_write_replaces_the_folder_whole_and_readable(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_folder(out) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "new.txt").write_text("new")
    assert _listing(out) == ["sub"] and _listing(tmp_path) == ["model"]
    assert (out / "sub" / "new.txt").stat().st_mode & 0o777 == 0o644 and out.stat().st_mode & 0o777 == 0o755


def test_the_old_folder_comes_back_when_the_swap_itself_fails(tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder's rename into place
            raise OSError("disk gone")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError, match="disk gone"):
        with atomic_folder(out) as tmp:
            (tmp / "new.txt").write_text("new")
    assert _listing(out) == ["old.txt"] and _listing(tmp_path) == ["model"]
