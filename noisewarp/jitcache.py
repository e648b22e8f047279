"""A numba cache directory keyed by the package's sources, for tests and benchmarks.

numba keys a cached kernel on its own source file only. A kernel that inlines
code from another module (every kernel inlines the generator of
``core/rng.py``; grid inlines ``core/area.py``) is loaded unchanged after an
edit to that module, so in a working copy the tests can pass on old code and
a benchmark can time it (an example: ``benchmarks/NOTES.md``, numba cache).

``use_keyed_cache()`` points ``NUMBA_CACHE_DIR`` at a directory named after a
digest of every ``.py`` file of the package: unchanged sources reuse it, any
edit starts a new one. It must run before numba is imported (numba reads the
variable once); subprocesses inherit it. An installed package does not need
it (an upgrade rewrites every file and so invalidates every cached kernel),
so the package itself never calls it; ``tests/conftest.py`` and the
benchmarks do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

__all__ = ["source_digest", "keyed_cache_dir", "keyed_cache_env", "use_keyed_cache"]

PACKAGE = Path(__file__).resolve().parent

# Directories of other digests kept besides the current one (most recently used).
_KEEP = 3


def source_digest(package: Path = PACKAGE) -> str:
    """SHA-256 (first 16 hex digits) of the package's ``.py`` files, paths included."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "noisewarp" / "numba"


def keyed_cache_dir(root: Path | None = None) -> Path:
    """``root / <source digest>`` (default root: ``$XDG_CACHE_HOME/noisewarp/numba``).

    Creates it, marks it as just used, and removes all but the ``_KEEP`` most
    recently used directories of other digests.
    """
    root = Path(root) if root is not None else _cache_root()
    path = root / source_digest()
    path.mkdir(parents=True, exist_ok=True)
    os.utime(path)
    others = sorted(
        (p for p in root.iterdir() if p.is_dir() and p != path),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for stale in others[_KEEP:]:
        shutil.rmtree(stale, ignore_errors=True)
    return path


def use_keyed_cache(root: Path | None = None) -> Path:
    """Set ``NUMBA_CACHE_DIR`` to ``keyed_cache_dir(root)`` in this process's environment.

    Raises ``RuntimeError`` if numba is already imported: the setting would not
    take effect in this process.
    """
    if "numba" in sys.modules:
        raise RuntimeError(
            "use_keyed_cache() must run before numba is imported: numba reads "
            "NUMBA_CACHE_DIR once, at import"
        )
    path = keyed_cache_dir(root)
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    return path


def keyed_cache_env() -> dict[str, str]:
    """A copy of this process's environment for worker processes (benchmarks), with
    ``NUMBA_CACHE_DIR`` set to ``keyed_cache_dir()`` unless the user has set it."""
    if "NUMBA_CACHE_DIR" in os.environ:
        return dict(os.environ)
    return {**os.environ, "NUMBA_CACHE_DIR": str(keyed_cache_dir())}
