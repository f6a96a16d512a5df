"""Safe handling of uploaded files: names, content-addressed storage, zip archives, ONNX external data.

- Uploads are stored under ``data_dir/uploads/<sha256[:16]>/<sanitized name>``: the same bytes
  land in the same place (idempotent), a name can never point outside that folder, and the size
  is bounded while streaming (a file over the bound is never kept).
- Zip archives are checked before and while extracting: absolute paths, ``..`` components,
  symbolic links and special files are refused; the number of files and the total uncompressed
  size are bounded by the declared sizes *and* by the bytes actually written (a header that lies
  about its size is caught). Extraction goes to a staging folder inside the destination and is
  moved into place only when the whole archive passed, so a refused archive leaves nothing.
- ONNX external data: every ``location`` must name a file inside the model's folder.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import unicodedata
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import ConfigError, DataError, ModelLoadError, UnsafeArchiveError
from .onnx_graph import iter_tensors

MAX_FILENAME_CHARS = 120
_CHUNK = 1 << 20
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def sanitize_filename(name: str, max_chars: int = MAX_FILENAME_CHARS) -> str:
    """A safe file name from an uploaded one.

    Keeps the last path component (``/`` and ``\\`` both separate), drops accents,
    replaces anything but letters, digits, ``.``, ``_`` and ``-`` with ``_``, strips leading dots
    and dashes and trailing dots, bounds the length (keeping the extension), avoids Windows device
    names, and never returns an empty name (``upload``).
    """
    text = str(name or "").replace("\x00", "")
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = _SAFE.sub("_", text)
    text = re.sub(r"_{2,}", "_", text)
    text = text.lstrip(".-_ ").rstrip(". ")
    if not text:
        text = "upload"
    stem, dot, ext = text.rpartition(".")
    if not dot:
        stem, ext = text, ""
    if stem.upper() in _WINDOWS_RESERVED:
        stem = f"_{stem}"
    ext = ext[:16]
    limit = max(1, int(max_chars) - (len(ext) + 1 if ext else 0))
    stem = stem[:limit].rstrip(". ") or "upload"
    return f"{stem}.{ext}" if ext else stem


def _stream_size(stream) -> int | None:
    try:
        if stream.seekable():
            pos = stream.tell()
            end = stream.seek(0, os.SEEK_END)
            stream.seek(pos)
            return int(end - pos)
    except (OSError, AttributeError, ValueError):
        return None
    return None


def store_upload(data: bytes | BinaryIO, filename: str, data_dir: Path, max_bytes: int) -> Path:
    """Store uploaded bytes under ``data_dir/uploads/<sha256[:16]>/<sanitized filename>``.

    ``data`` is bytes or a binary stream (read in chunks from its current position). A file over
    ``max_bytes`` raises ``DataError`` giving both sizes and keeps nothing. Storing the same
    content again returns the same path without rewriting it.
    """
    if int(max_bytes) <= 0:
        raise ConfigError(f"max upload size must be > 0 bytes; got {max_bytes}")
    safe = sanitize_filename(filename)
    uploads = Path(data_dir) / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)

    def too_big(size: int, at_least: bool = False) -> DataError:
        size_text = ("more than " if at_least else "") + _mb(size)
        return DataError(f"upload {safe!r} is {size_text}; the limit is {_mb(max_bytes)} "
                         "(raise the upload limit in the settings or upload a smaller file)")

    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) > max_bytes:
            raise too_big(len(data))
        chunks = (bytes(data[i:i + _CHUNK]) for i in range(0, len(data), _CHUNK))
    else:
        declared = _stream_size(data)
        if declared is not None and declared > max_bytes:
            raise too_big(declared)
        chunks = iter(lambda: data.read(_CHUNK), b"")

    digest = hashlib.sha256()
    written = 0
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", dir=uploads)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                written += len(chunk)
                if written > max_bytes:
                    total, exact = written, True
                    for rest in chunks:  # keep counting (without writing) to report the size
                        total += len(rest)
                        if total > 16 * max_bytes:
                            exact = False
                            break
                    raise too_big(total, at_least=not exact)
                digest.update(chunk)
                out.write(chunk)
        folder = uploads / digest.hexdigest()[:16]
        folder.mkdir(exist_ok=True)
        dest = folder / safe
        if dest.is_file() and not dest.is_symlink() and dest.stat().st_size == written:
            return dest
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        return dest
    finally:
        if tmp.exists():
            tmp.unlink()


def discard_upload(path: str | os.PathLike, data_dir: Path) -> bool:
    """Remove a refused upload: its whole ``uploads/<digest>/`` folder (the file, and anything
    unpacked from it). Only paths inside ``data_dir/uploads`` are touched; returns whether one was."""
    uploads = (Path(data_dir) / "uploads").resolve()
    target = Path(path).resolve()
    if not target.is_relative_to(uploads) or target == uploads:
        return False
    shutil.rmtree(uploads / target.relative_to(uploads).parts[0], ignore_errors=True)
    return True


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    mode = (info.external_attr >> 16) & 0xFFFF
    kind = stat.S_IFMT(mode)
    if not name or "\x00" in name:
        return "has an empty or invalid name"
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized):
        return "is an absolute path"
    if ".." in PurePosixPath(normalized).parts:
        return "contains a '..' component"
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "is a special file (device, pipe or socket)"
    return None


def safe_extract_zip(zip_path: Path, dest_dir: Path, max_total_bytes: int, max_files: int) -> list[Path]:
    """Extract ``zip_path`` into ``dest_dir`` after checking every entry; returns the files written.

    Refuses (``UnsafeArchiveError``) absolute paths, ``..`` components, symbolic links, special
    files, more than ``max_files`` entries, and a total uncompressed size over
    ``max_total_bytes`` (declared sizes first, then the bytes actually written). Nothing is left
    behind when an archive is refused.
    """
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{zip_path.name} is not a readable zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        files = [i for i in infos if not i.is_dir()]
        if len(infos) > max_files:
            raise UnsafeArchiveError(f"archive {zip_path.name} has {len(infos)} entries; at most {max_files} are allowed")
        for info in infos:
            problem = _member_problem(info)
            if problem:
                raise UnsafeArchiveError(f"archive {zip_path.name} refused: entry {info.filename!r} {problem}")
        declared = _declared_size(files)
        if declared > max_total_bytes:
            raise UnsafeArchiveError(f"archive {zip_path.name} expands to {_mb(declared)}; the limit is "
                                     f"{_mb(max_total_bytes)}")

        if dest_dir.is_symlink():
            raise UnsafeArchiveError(f"destination {str(dest_dir)!r} is a symbolic link; refusing to extract into it")
        created = not dest_dir.exists()
        dest_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir))
        staging_root = staging.resolve()
        written = 0
        done = False
        try:
            for info in infos:
                rel = PurePosixPath(info.filename.replace("\\", "/"))
                target = staging.joinpath(*rel.parts)
                if not target.resolve().is_relative_to(staging_root):
                    raise UnsafeArchiveError(f"archive {zip_path.name} refused: entry {info.filename!r} resolves "
                                             "outside the destination")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(target, "xb") as out:
                        while True:
                            chunk = src.read(_CHUNK)
                            if not chunk:
                                break
                            written += len(chunk)
                            if written > max_total_bytes:
                                raise UnsafeArchiveError(
                                    f"archive {zip_path.name} expands beyond {_mb(max_total_bytes)} while extracting "
                                    f"(its headers declare {_mb(declared)})")
                            out.write(chunk)
                except FileExistsError:
                    raise UnsafeArchiveError(f"archive {zip_path.name} refused: entry {info.filename!r} appears "
                                             "twice") from None
                except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
                    raise UnsafeArchiveError(f"archive {zip_path.name} refused: entry {info.filename!r} is corrupt or "
                                             f"its header lies about its size ({exc})") from None
                except RuntimeError as exc:  # zipfile: encrypted entry or unsupported compression
                    raise DataError(f"archive {zip_path.name}: entry {info.filename!r} cannot be read ({exc}); "
                                    "upload an unencrypted zip (deflate or store)") from None
                except (IsADirectoryError, NotADirectoryError) as exc:
                    raise UnsafeArchiveError(f"archive {zip_path.name} refused: entry {info.filename!r} conflicts "
                                             f"with another entry ({type(exc).__name__})") from None
            extracted = _move_into(staging, dest_dir)
            done = True
            return extracted
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if created and not done and dest_dir.is_dir() and not any(dest_dir.iterdir()):
                dest_dir.rmdir()


def _declared_size(infos: list[zipfile.ZipInfo]) -> int:
    """Total uncompressed size the archive's headers declare."""
    return sum(i.file_size for i in infos)


def _move_into(staging: Path, dest_dir: Path) -> list[Path]:
    """Move the staged tree into ``dest_dir`` (merging folders); refuses to write through symlinks."""
    for src in sorted(staging.rglob("*")):
        rel = src.relative_to(staging)
        dst = dest_dir
        for part in rel.parts:
            dst = dst / part
            if dst.is_symlink():
                raise UnsafeArchiveError(f"destination path {str(dst)!r} is a symbolic link; refusing to write "
                                         "through it")
        if src.is_dir() and dst.exists() and not dst.is_dir():
            raise UnsafeArchiveError(f"cannot extract folder {str(rel)!r}: a file of that name exists in "
                                     f"{str(dest_dir)!r}")
        if src.is_file() and dst.is_dir():
            raise UnsafeArchiveError(f"cannot extract file {str(rel)!r}: a folder of that name exists in "
                                     f"{str(dest_dir)!r}")
    out = []
    for src in sorted(staging.rglob("*")):
        dst = dest_dir / src.relative_to(staging)
        if src.is_dir():
            dst.mkdir(exist_ok=True)
        else:
            os.replace(src, dst)
            out.append(dst)
    return out


#: TensorProto typed fields and how many of their entries hold one element (complex: two).
_TYPED_FIELDS = {"float_data": ("FLOAT", "COMPLEX64"), "int32_data": ("INT32", "INT16", "INT8", "UINT16", "UINT8",
                 "BOOL", "FLOAT16", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ"),
                 "int64_data": ("INT64",), "double_data": ("DOUBLE", "COMPLEX128"), "uint64_data": ("UINT32", "UINT64")}


def _declared(t) -> tuple[int, int | None]:
    """(elements the dims declare, bytes they need in raw form; None for strings / unknown types)."""
    import onnx

    n = 1
    for d in t.dims:
        n *= int(d)
    name = onnx.TensorProto.DataType.Name(t.data_type) if t.data_type in onnx.TensorProto.DataType.values() else ""
    if name in ("STRING", "UNDEFINED", ""):
        return n, None
    if name in ("INT4", "UINT4", "FLOAT4E2M1"):
        return n, (n + 1) // 2
    try:
        return n, n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return n, None


def _held(t, folder: Path) -> tuple[int, str]:
    """(bytes or elements the tensor holds, unit) for its raw, typed or external data."""
    import onnx

    if t.data_location == onnx.TensorProto.EXTERNAL:
        info = {e.key: e.value for e in t.external_data}
        if info.get("length"):
            return int(info["length"]), "bytes"
        target = folder.joinpath(*PurePosixPath(info.get("location", "").replace("\\", "/")).parts)
        return max(0, target.stat().st_size - int(info.get("offset", 0) or 0)), "bytes"
    if t.HasField("raw_data"):
        return len(t.raw_data), "bytes"
    name = onnx.TensorProto.DataType.Name(t.data_type)
    for field, types in _TYPED_FIELDS.items():
        if name in types:
            per = 2 if name.startswith("COMPLEX") else 1
            return len(getattr(t, field)) // per, "elements"
    return len(t.string_data), "elements"


def check_onnx_tensor_sizes(model, model_path: Path) -> int:
    """Refuse (``ModelLoadError``) a tensor whose dims declare more data than it holds (raw bytes,
    typed values or its external-data slice): counts and memory would follow the dims. Run after
    :func:`check_onnx_external_data`. Returns the bytes the tensors declare."""
    model_path = Path(model_path)
    folder = model_path.resolve().parent
    total = 0
    for t in iter_tensors(model.graph):
        n, nbytes = _declared(t)
        held, unit = _held(t, folder)
        need = nbytes if unit == "bytes" else n
        if need is None:
            continue
        if held < need:
            shape = "x".join(map(str, t.dims)) or "scalar"
            raise ModelLoadError(f"tensor {t.name!r} of {model_path.name} declares shape {shape} ({need:,} {unit}) "
                                 f"but holds {held:,} {unit}; the file is corrupt or crafted")
        total += nbytes or 0
    return total


def check_onnx_external_data(model_path: Path) -> list[Path]:
    """Check that every external-data ``location`` of the ONNX model stays inside its folder.

    Raises ``UnsafeArchiveError`` for an absolute path, a ``..`` component, or a path (or
    symlink) that resolves outside the model's folder; ``ModelLoadError`` for a missing file or
    an offset/length beyond it. Returns the distinct external data files (resolved).
    """
    import onnx
    from google.protobuf.message import DecodeError

    model_path = Path(model_path)
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{model_path.name} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    folder = model_path.resolve().parent
    files: dict[Path, None] = {}
    external = (t for t in iter_tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL)
    for t in external:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        where = f"tensor {t.name!r} of {model_path.name} stores its data at {location!r}"
        if not location:
            raise ModelLoadError(f"{where}: external data without a location")
        normalized = location.replace("\\", "/")
        if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized) or os.path.isabs(location):
            raise UnsafeArchiveError(f"{where}: an absolute path; external data must sit in the model's folder")
        if ".." in PurePosixPath(normalized).parts:
            raise UnsafeArchiveError(f"{where}: a path with '..'; external data must sit in the model's folder")
        target = folder.joinpath(*PurePosixPath(normalized).parts)
        resolved = target.resolve()
        if not resolved.is_relative_to(folder):
            raise UnsafeArchiveError(f"{where}, which resolves outside the model's folder (symbolic link?); refusing it")
        if not resolved.is_file():
            raise ModelLoadError(f"{where}, which does not exist in {str(folder)!r}; upload the data file with the model")
        size = resolved.stat().st_size
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError:
            raise ModelLoadError(f"{where} with a non-numeric offset/length") from None
        if offset < 0 or offset > size or (length is not None and (length < 0 or offset + length > size)):
            raise ModelLoadError(f"{where} at offset {offset} length {length}, beyond the file's {size} bytes")
        files[resolved] = None
    return list(files)
