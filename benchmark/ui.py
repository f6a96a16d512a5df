"""Plain helpers behind the dashboard's words and state (no Streamlit here; pages call them).

- :func:`shape_text` / :func:`override_text`: an input's shape as an editable ``1x3xHx320`` text,
  and the user's edit back as an input override (symbolic dims such as
  ``p2o.DynamicDimension.0`` or unnamed ``?`` are accepted once the unknowns are filled).
- :func:`dashboard_words`: engine messages speak of command-line flags (``--input``, ``--data``);
  on a page the same advice names the widget instead.
- :func:`public_label`: a device-queue label without the folders of file paths, so the queue can
  show other users' jobs without their file paths.
- :func:`parse_batch_sizes`: typed or chosen batch sizes to sorted unique ints.
- :class:`SessionRecords`: a small JSON record per browser session (chosen model, data, settings,
  sweeps started) under the data folder, keyed by a random token kept in the page URL, so a reload
  keeps what the user chose.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError

_SAFE_DIM = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def shape_text(shape: Iterable[Any]) -> str:
    """``1x3x?x320`` for an editable field: ints as is, a symbolic dim by its name when the name
    can be read back (letters, digits, ``_`` and ``.``, no ``x``), else ``?``."""
    parts = []
    for d in shape:
        if isinstance(d, int) or (isinstance(d, str) and d.isdigit()):
            parts.append(str(int(d)))
        else:
            name = str(d)
            parts.append(name if _SAFE_DIM.match(name) and "x" not in name else "?")
    return "x".join(parts)


def override_text(name: str, text: str, dtype: str) -> str:
    """The input override ``name:1x3x48x320:dtype`` for the shape the user typed.

    Dims are separated by ``x`` (or ``,`` / ``*``); a dim that is not a number stays dynamic: ``N``
    for the batch axis (dim 0), ``?`` elsewhere (the model's loader then asks for its value).
    """
    raw = re.sub(r"\s+", "", str(text))
    tokens = re.split(r"[x,*]", raw) if raw else []
    if not tokens or any(t == "" for t in tokens):
        raise ConfigError(f"shape {text!r} of input {name!r} is not of the form 1x3x224x224")
    dims = []
    for i, tok in enumerate(tokens):
        if tok.isdigit():
            if int(tok) < 1:
                raise ConfigError(f"dim {i} of input {name!r} must be >= 1; got {tok}")
            dims.append(str(int(tok)))
        else:
            dims.append("N" if i == 0 else "?")
    return f"{name}:{'x'.join(dims)}:{dtype}"


#: CLI phrasing -> dashboard phrasing, applied in order.
_WORDS: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"give (?:it|one|them) with --input [^\s;,)]+"),
     "type it in the input's shape field on the Model page"),
    (re.compile(r"--input [^\s;,)]+"), "the input's shape field on the Model page"),
    (re.compile(r"pass --data with a dataset or \.npz of model inputs"),
     "choose Evaluation data (a dataset or a .npz of model inputs) on Compress & run"),
    (re.compile(r"\(pass --data[^)]*\)"), "(choose Evaluation data on Compress & run)"),
    (re.compile(r"--data\b"), "Evaluation data on Compress & run"),
    (re.compile(r"allow it with --trust-pickle \(CLI\) or 'I trust this file' \(dashboard\)"),
     "tick 'I trust this file' on the Model page"),
    (re.compile(r"--trust-pickle"), "'I trust this file' on the Model page"),
    (re.compile(r"choose its architecture with --arch"), "choose its Architecture on the Model page"),
    (re.compile(r"--arch\b"), "Architecture on the Model page"),
    (re.compile(r"run `slimbench run` first or pass --db PATH"), "run a sweep first"),
    (re.compile(r"pass --ray-address HOST:PORT"), "give the Ray address on Compress & run"),
    (re.compile(r"add --executor ray"), "choose Run on: Ray cluster on Compress & run"),
    (re.compile(r"resume with `slimbench run --resume (\d+)`"), r"resume it with `slimbench run --resume \1` from a terminal"),
)


def dashboard_words(message: Any) -> str:
    """``message`` with command-line advice rewritten for the dashboard."""
    text = str(message)
    for pattern, words in _WORDS:
        text = pattern.sub(words, text)
    return text


_PATH = re.compile(r"(?<![\w:])(?:/[^\s/]+)+/([^\s/]+)")


def public_label(label: Any) -> str:
    """``label`` with every absolute file path cut to its file name."""
    return _PATH.sub(r"\1", str(label or ""))


#: The largest batch size a user may type (a sweep skips sizes that do not fit in memory anyway).
MAX_BATCH_SIZE = 65536


def parse_batch_sizes(values: Iterable[Any]) -> tuple[int, ...]:
    """Sorted unique batch sizes from chosen ints or typed text (``"40"``); ConfigError otherwise."""
    out = set()
    for v in values:
        text = str(v).strip()
        if not text.isdigit() or not 1 <= int(text) <= MAX_BATCH_SIZE:
            raise ConfigError(f"batch size must be a whole number from 1 to {MAX_BATCH_SIZE}; got {text!r}")
        out.add(int(text))
    return tuple(sorted(out))


class SessionRecords:
    """One JSON file per browser session under ``folder`` (default ``data_dir()/sessions``).

    Tokens are random hex strings (:meth:`new_token`); anything else is refused, so a token from a
    URL never names a path. Records untouched for ``max_age_days`` are removed when one is saved.
    """

    TOKEN = re.compile(r"^[0-9a-f]{16,64}$")

    def __init__(self, folder: str | os.PathLike | None = None, max_age_days: float = 30.0):
        if folder is None:
            from .paths import data_dir

            folder = data_dir() / "sessions"
        self.folder = Path(folder)
        self.max_age_s = float(max_age_days) * 86400

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(16)

    def valid(self, token: Any) -> bool:
        return isinstance(token, str) and bool(self.TOKEN.match(token))

    def _path(self, token: str) -> Path:
        if not self.valid(token):
            raise ConfigError(f"not a session token: {token!r}")
        return self.folder / f"{token}.json"

    def load(self, token: str) -> dict[str, Any]:
        """The record of ``token`` ({} when there is none or it cannot be read)."""
        try:
            data = json.loads(self._path(token).read_text())
        except (OSError, ValueError, ConfigError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, token: str, record: dict[str, Any]) -> None:
        """Write ``record`` (JSON-safe values) atomically; prune stale records."""
        path = self._path(token)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, default=str))
        os.replace(tmp, path)
        self._prune()

    def _prune(self) -> None:
        cutoff = time.time() - self.max_age_s
        for old in self.folder.glob("*.json"):
            try:
                if old.stat().st_mtime < cutoff:
                    old.unlink()
            except OSError:
                continue  # another session removed or is writing it; the next save tries again


__all__ = ["shape_text", "override_text", "dashboard_words", "public_label", "parse_batch_sizes", "MAX_BATCH_SIZE",
           "SessionRecords"]
