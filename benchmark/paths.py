"""Where Slimbench keeps its files.

- Data folder: ``platformdirs.user_data_dir("slimbench")``, or ``$SLIMBENCH_DATA_DIR`` when set.
- Results database: ``<data folder>/results.db``, or ``$SLIMBENCH_DB`` / the CLI's ``--db``.
- Device queue locks, queue tickets, sweep work folders and background-runner logs live under the
  data folder, so every dashboard session and every CLI run on this machine share one queue per
  device.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import StoreError

DATA_DIR_ENV = "SLIMBENCH_DATA_DIR"
DB_ENV = "SLIMBENCH_DB"


def data_dir(create: bool = True) -> Path:
    """The data folder (``$SLIMBENCH_DATA_DIR`` or the platform's user data folder)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("slimbench", appauthor=False))
    if create:
        _mkdir(path, "data folder")
    return path


def default_db_path() -> Path:
    """``$SLIMBENCH_DB`` if set, else ``<data folder>/results.db``."""
    env = os.environ.get(DB_ENV)
    if env:
        return Path(env).expanduser()
    return data_dir() / "results.db"


def resolve_db_path(db: str | os.PathLike | None = None) -> Path:
    """The database path to use: ``db`` if given, else :func:`default_db_path`."""
    if db:
        return Path(db).expanduser()
    return default_db_path()


def locks_dir() -> Path:
    """Folder of the per-device queue lock files and queue tickets."""
    return _mkdir(data_dir() / "locks", "lock folder")


def work_root() -> Path:
    """Folder under which each sweep gets a scratch folder (exported ONNX files, engines, caches)."""
    return _mkdir(data_dir() / "work", "work folder")


def logs_dir() -> Path:
    """Folder of background-runner and job logs."""
    return _mkdir(data_dir() / "logs", "log folder")


def _mkdir(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the Slimbench {what} at {path}: {exc.strerror or exc}; "
            f"set {DATA_DIR_ENV} to a writable folder"
        ) from None
    return path
