"""The numba cache keyed by the package's sources (``noisewarp.jitcache``)."""

from __future__ import annotations

import os
import time

import pytest

from noisewarp import jitcache


def _package(root, files: dict[str, str]):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_digest_follows_every_source_file(tmp_path):
    pkg = _package(tmp_path / "pkg", {"a.py": "x = 1\n", "core/b.py": "y = 2\n", "notes.txt": "n"})
    first = jitcache.source_digest(pkg)
    assert jitcache.source_digest(pkg) == first
    (pkg / "notes.txt").write_text("not a source")  # only .py files count
    assert jitcache.source_digest(pkg) == first
    (pkg / "core" / "b.py").write_text("y = 3\n")  # an edit in a module a kernel inlines
    edited = jitcache.source_digest(pkg)
    assert edited != first
    (pkg / "core" / "b.py").rename(pkg / "b.py")  # same bytes, another path
    assert jitcache.source_digest(pkg) not in (first, edited)


def test_keyed_dir_is_reused_and_old_digests_pruned(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    for k in range(5):
        old = root / f"old{k}"
        old.mkdir(parents=True)
        os.utime(old, (time.time() - 100 + k, time.time() - 100 + k))
    path = jitcache.keyed_cache_dir(root)
    assert path.name == jitcache.source_digest()
    assert jitcache.keyed_cache_dir(root) == path
    kept = sorted(p.name for p in root.iterdir() if p != path)
    assert kept == ["old2", "old3", "old4"]  # the three most recently used


def test_tests_run_on_the_keyed_cache():
    """conftest pointed numba at the directory of the current sources (unless the
    user chose one)."""
    import numba
    from conftest import USER_JIT_CACHE

    if USER_JIT_CACHE is not None:
        pytest.skip("NUMBA_CACHE_DIR chosen by the user")
    expected = str(jitcache.keyed_cache_dir())
    assert os.environ.get("NUMBA_CACHE_DIR") == expected
    assert numba.config.CACHE_DIR == expected


def test_use_keyed_cache_refuses_once_numba_is_imported(tmp_path):
    import numba  # noqa: F401

    with pytest.raises(RuntimeError, match="before numba is imported"):
        jitcache.use_keyed_cache(tmp_path)


def test_worker_environment_keeps_a_user_choice(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    env = jitcache.keyed_cache_env()
    assert env["NUMBA_CACHE_DIR"] == str(
        tmp_path / "noisewarp" / "numba" / jitcache.source_digest()
    )
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/somewhere/else")
    assert jitcache.keyed_cache_env()["NUMBA_CACHE_DIR"] == "/somewhere/else"
