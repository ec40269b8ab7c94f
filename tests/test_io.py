"""mstpn_base.io: atomic writes never leave a half-written or temporary file behind."""
import os

import pytest

from mstpn_base.io import FILE_MODE, atomic_open, atomic_path, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_keeps_mode(tmp_path):
    f = tmp_path / "a.txt"
    atomic_write_text(f, "one")
    atomic_write_text(f, "two")
    assert f.read_text() == "two"
    assert os.stat(f).st_mode & 0o777 == FILE_MODE
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_write_keeps_old_file(tmp_path, exc):
    f = tmp_path / "a.txt"
    atomic_write_text(f, "old")
    with pytest.raises(exc):
        with atomic_open(f) as fh:
            fh.write("half")
            raise exc()
    assert f.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_path_keeps_suffix_and_cleans_up(tmp_path):
    f = tmp_path / "sub" / "plot.png"
    with pytest.raises(ValueError):
        with atomic_path(f) as tmp:
            assert tmp.suffix == ".png" and tmp.parent == f.parent
            tmp.write_bytes(b"x")
            raise ValueError
    assert not f.exists() and list(f.parent.iterdir()) == []
    with atomic_path(f) as tmp:
        tmp.write_bytes(b"png")
    assert f.read_bytes() == b"png"


def test_json_rejects_nan_without_touching_file(tmp_path):
    f = tmp_path / "r.json"
    atomic_write_json(f, {"x": 1})
    with pytest.raises(ValueError):
        atomic_write_json(f, {"x": float("nan")})
    assert f.read_text().strip().startswith("{") and '"x": 1' in f.read_text()


def test_read_mode_refused(tmp_path):
    with pytest.raises(ValueError, match="for writing"):
        with atomic_open(tmp_path / "x", "r"):
            pass
