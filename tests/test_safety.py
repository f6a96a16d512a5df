"""Upload and archive safety: file names, bounded content-addressed storage, zip extraction that
never writes outside its folder or expands without bound, ONNX external data kept in its folder."""
from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmark import safety
from benchmark.errors import DataError, ModelLoadError, UnsafeArchiveError
from benchmark.safety import check_onnx_external_data, safe_extract_zip, sanitize_filename, store_upload

MB = 1_000_000


# ---------------------------------------------------------------- file names


@pytest.mark.parametrize("raw, expected", [
    ("model.onnx", "model.onnx"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\net.pt", "net.pt"),
    ("/abs/path/weights.pt2", "weights.pt2"),
    (".bashrc", "bashrc"),
    ("...", "upload"),
    ("", "upload"),
    ("my model (v2).onnx", "my_model_v2_.onnx"),
    ("résumé–net.onnx", "resume_net.onnx"),
    ("-rf.onnx", "rf.onnx"),
    ("CON.txt", "_CON.txt"),
    ("a\x00b.onnx", "ab.onnx"),
])
def test_sanitize_filename(raw, expected):
    assert sanitize_filename(raw) == expected


def test_sanitize_filename_bounds_length_and_keeps_extension():
    name = sanitize_filename("x" * 500 + ".onnx")
    assert len(name) <= 120 and name.endswith(".onnx") and name.startswith("x")


# ---------------------------------------------------------------- uploads


def test_store_upload_is_content_addressed_and_idempotent(tmp_path):
    data = b"onnx bytes" * 100
    first = store_upload(data, "../../model.onnx", tmp_path, max_bytes=MB)
    assert first.read_bytes() == data
    assert first.name == "model.onnx"
    assert first.parent.parent == tmp_path / "uploads"
    assert len(first.parent.name) == 16
    again = store_upload(io.BytesIO(data), "model.onnx", tmp_path, max_bytes=MB)
    assert again == first
    other = store_upload(b"different", "model.onnx", tmp_path, max_bytes=MB)
    assert other != first and other.read_bytes() == b"different"
    assert not list((tmp_path / "uploads").glob(".partial-*"))


def test_store_upload_rejects_oversize_with_both_sizes(tmp_path):
    with pytest.raises(DataError, match=r"3\.0 MB.*limit is 2\.0 MB"):
        store_upload(b"\0" * (3 * MB), "big.onnx", tmp_path, max_bytes=2 * MB)


def test_store_upload_rejects_oversize_stream_and_keeps_nothing(tmp_path):
    class Unseekable(io.RawIOBase):
        def __init__(self, n):
            self.left = n

        def readable(self):
            return True

        def seekable(self):
            return False

        def read(self, size=-1):
            size = self.left if size < 0 else min(size, self.left)
            self.left -= size
            return b"\1" * size

    with pytest.raises(DataError, match=r"upload 'big.bin' is 5\.0 MB; the limit is 2\.0 MB"):
        store_upload(Unseekable(5 * MB), "big.bin", tmp_path, max_bytes=2 * MB)
    assert [p for p in (tmp_path / "uploads").rglob("*") if p.is_file()] == []


# ---------------------------------------------------------------- zip archives


def _zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_safe_extract_zip_extracts_normal_archive(tmp_path):
    archive = _zip(tmp_path / "ok.zip", {"model.onnx": b"m", "data/x.npz": b"d" * 10})
    dest = tmp_path / "out"
    files = safe_extract_zip(archive, dest, max_total_bytes=MB, max_files=10)
    assert sorted(p.relative_to(dest).as_posix() for p in files) == ["data/x.npz", "model.onnx"]
    assert (dest / "data" / "x.npz").read_bytes() == b"d" * 10
    assert not list(dest.glob(".extract-*"))


@pytest.mark.parametrize("entry, reason", [
    ("../evil", "'..'"),
    ("sub/../../evil", "'..'"),
    ("/etc/cron.d/evil", "absolute"),
    ("C:/evil", "absolute"),
])
def test_safe_extract_zip_refuses_escaping_paths(tmp_path, entry, reason):
    archive = _zip(tmp_path / "bad.zip", {"fine.txt": b"ok", entry: b"pwned"})
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=reason) as info:
        safe_extract_zip(archive, dest, max_total_bytes=MB, max_files=10)
    assert "\n" not in str(info.value)
    assert not dest.exists()
    assert not (tmp_path / "evil").exists()


def test_safe_extract_zip_refuses_symlinks(tmp_path):
    archive = _zip(tmp_path / "link.zip", {"a.txt": b"a"}, symlinks={"link": "/etc/passwd"})
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract_zip(archive, tmp_path / "out", max_total_bytes=MB, max_files=10)
    assert not (tmp_path / "out").exists()


def test_safe_extract_zip_refuses_too_many_files(tmp_path):
    archive = _zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(11)})
    with pytest.raises(UnsafeArchiveError, match="11 entries; at most 10"):
        safe_extract_zip(archive, tmp_path / "out", max_total_bytes=MB, max_files=10)


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory) -> Path:
    """200 MB of zeros deflated to ~200 KB, written in 1 MB chunks (memory stays small)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    chunk = bytes(MB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("zeros.bin", "w") as out:
            for _ in range(200):
                out.write(chunk)
    return path


def test_safe_extract_zip_refuses_zip_bomb(zip_bomb, tmp_path):
    assert zip_bomb.stat().st_size < 2 * MB
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=r"expands to 200\.0 MB; the limit is 50\.0 MB"):
        safe_extract_zip(zip_bomb, dest, max_total_bytes=50 * MB, max_files=10)
    assert not dest.exists()


def _patch_declared_size(src: Path, dst: Path, size: int) -> None:
    """Rewrite the uncompressed size in the local and central headers (a lying archive)."""
    raw = bytearray(src.read_bytes())
    local = raw.find(b"PK\x03\x04")
    struct.pack_into("<I", raw, local + 22, size)
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, size)
    dst.write_bytes(bytes(raw))


def test_safe_extract_zip_catches_lying_headers(zip_bomb, tmp_path):
    liar = tmp_path / "liar.zip"
    _patch_declared_size(zip_bomb, liar, 1000)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(UnsafeArchiveError, match="zeros.bin"):
        safe_extract_zip(liar, dest, max_total_bytes=50 * MB, max_files=10)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]


def test_safe_extract_zip_counts_actual_bytes(tmp_path, monkeypatch):
    """Even if the declared sizes passed, bytes written beyond the bound stop the extraction."""
    archive = _zip(tmp_path / "two.zip", {"a.bin": b"a" * 600_000, "b.bin": b"b" * 600_000})
    monkeypatch.setattr(safety, "_declared_size", lambda infos: 0)
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="beyond 1.0 MB while extracting"):
        safe_extract_zip(archive, dest, max_total_bytes=MB, max_files=10)
    assert not dest.exists()


def test_safe_extract_zip_rejects_non_zip(tmp_path):
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        safe_extract_zip(bad, tmp_path / "out", max_total_bytes=MB, max_files=10)


# ---------------------------------------------------------------- ONNX external data


def _external_model(folder: Path, location: str, name: str = "weight") -> Path:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), name)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("MatMul", ["x", name], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_absolute_path_is_refused(tmp_path):
    path = _external_model(tmp_path, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match=r"tensor 'weight'.*'/etc/passwd'.*absolute"):
        check_onnx_external_data(path)


def test_external_data_parent_path_is_refused(tmp_path):
    (tmp_path / "x.bin").write_bytes(bytes(64))
    inner = tmp_path / "model"
    inner.mkdir()
    path = _external_model(inner, "../x.bin")
    with pytest.raises(UnsafeArchiveError, match=r"tensor 'weight'.*'\.\./x\.bin'"):
        check_onnx_external_data(path)


def test_external_data_symlink_escape_is_refused(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(bytes(64))
    inner = tmp_path / "model"
    inner.mkdir()
    os.symlink(outside, inner / "w.bin")
    path = _external_model(inner, "w.bin")
    with pytest.raises(UnsafeArchiveError, match="outside the model's folder"):
        check_onnx_external_data(path)


def test_external_data_missing_or_short_file(tmp_path):
    path = _external_model(tmp_path, "w.bin")
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_onnx_external_data(path)
    (tmp_path / "w.bin").write_bytes(bytes(10))
    with pytest.raises(ModelLoadError, match="beyond the file's 10 bytes"):
        check_onnx_external_data(path)


def test_external_data_inside_folder_is_accepted_and_counted(tmp_path):
    (tmp_path / "w.bin").write_bytes(np.ones(16, np.float32).tobytes())
    path = _external_model(tmp_path, "w.bin")
    assert check_onnx_external_data(path) == [(tmp_path / "w.bin").resolve()]
    from benchmark.measure.flops import count_onnx

    report = count_onnx(path)
    assert report.params == 16 and report.macs == 16
    assert report.size_bytes == path.stat().st_size + 64


def test_external_data_in_constant_node_is_checked(tmp_path):
    t = numpy_helper.from_array(np.ones((2, 2), np.float32), "c")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "../../secret"
    graph = helper.make_graph([helper.make_node("Constant", [], ["c"], value=t)], "g", [],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 2])])
    path = tmp_path / "const.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(UnsafeArchiveError, match="'c'"):
        check_onnx_external_data(path)
