"""Safe archive extraction (no server): every hostile entry is refused before anything is written."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from track4dgen.server.uploads import UploadError, extract_archive, find_job_root, safe_relative_path


def _zip(path: Path, entries: list[tuple[str, bytes]], symlink: tuple[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink[0])
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, symlink[1])
    return path


def _tar(path: Path, entries: list[tuple[str, bytes]], link: tuple[str, str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link[0])
            info.type = link[2]
            info.linkname = link[1]
            tf.addfile(info)
    return path


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


GOOD = [("job/job.json", b"{}"), ("job/views/0.png", b"png")]


def test_plain_zip_and_tar_extract_and_find_root(tmp_path: Path) -> None:
    for maker, name in ((_zip, "a.zip"), (_tar, "a.tar.gz")):
        dest = tmp_path / f"x-{name}"
        n = extract_archive(maker(tmp_path / name, GOOD), dest, max_bytes=1 << 20)
        assert n == 5
        assert (dest / "job" / "views" / "0.png").read_bytes() == b"png"
        assert find_job_root(dest) == dest / "job"


@pytest.mark.parametrize("evil", ["../evil.txt", "job/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt", "..\\evil.txt"])
def test_zip_slip_names_are_refused_and_nothing_is_written(tmp_path: Path, evil: str) -> None:
    archive = _zip(tmp_path / "evil.zip", GOOD + [(evil, b"pwned")])
    dest = tmp_path / "area" / "x"
    with pytest.raises(UploadError) as err:
        extract_archive(archive, dest, max_bytes=1 << 20)
    assert err.value.status == 400 and err.value.code == "unsafe_archive"
    assert repr(evil) in err.value.message
    assert not dest.exists()  # the good entries before the bad one were not written either
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))


def test_symlinks_and_hardlinks_are_refused(tmp_path: Path) -> None:
    cases = [
        _zip(tmp_path / "l.zip", GOOD, symlink=("job/views", "/etc")),
        _tar(tmp_path / "s.tar.gz", GOOD, link=("job/mesh.glb", "/etc/passwd", tarfile.SYMTYPE)),
        _tar(tmp_path / "h.tar.gz", GOOD, link=("job/mesh.glb", "job/job.json", tarfile.LNKTYPE)),
        _tar(tmp_path / "f.tar.gz", GOOD, link=("job/fifo", "", tarfile.FIFOTYPE)),
    ]
    for i, archive in enumerate(cases):
        dest = tmp_path / f"x{i}"
        with pytest.raises(UploadError) as err:
            extract_archive(archive, dest, max_bytes=1 << 20)
        assert err.value.code == "unsafe_archive", archive
        assert not dest.exists()


def test_expansion_limit_stops_zip_bombs(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("job/job.json", b"{}")
        zf.writestr("job/big.bin", b"\0" * (4 << 20))  # 4 MiB of zeros compress to a few KiB
    assert archive.stat().st_size < 64 << 10
    with pytest.raises(UploadError) as err:
        extract_archive(archive, tmp_path / "x", max_bytes=1 << 20)
    assert err.value.status == 413 and "expands" in err.value.message
    assert not (tmp_path / "x").exists()


def test_not_an_archive_and_missing_job_json(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello, not an archive" * 10)
    with pytest.raises(UploadError) as err:
        extract_archive(junk, tmp_path / "x", max_bytes=1 << 20)
    assert err.value.code == "bad_archive"
    dest = tmp_path / "y"
    extract_archive(_zip(tmp_path / "two.zip", [("a/job.json", b"{}"), ("b/job.json", b"{}")]), dest, max_bytes=1 << 20)
    with pytest.raises(UploadError) as err:
        find_job_root(dest)
    assert err.value.status == 422 and "job.json" in err.value.message


def test_safe_relative_path_normalises_harmless_names() -> None:
    assert str(safe_relative_path("./job/./views/0.png")) == "job/views/0.png"
    assert safe_relative_path("./") is None
    with pytest.raises(UploadError):
        safe_relative_path("job/\x00.png")


def test_entry_count_stops_at_the_limit_before_later_entries_are_read(tmp_path: Path) -> None:
    # entries past the limit are never looked at: an unsafe name there would be refused as unsafe
    # (400) only if the extractor listed everything first, as it used to (78 s for a 1M-entry tar.xz)
    many = [(f"job/f{i}.txt", b"") for i in range(150)] + [("../evil.txt", b"x")]
    for maker, name in ((_tar, "many.tar.gz"), (_zip, "many.zip")):
        with pytest.raises(UploadError) as err:
            extract_archive(maker(tmp_path / name, many), tmp_path / f"x-{name}", max_bytes=1 << 20, max_entries=100)
        assert err.value.status == 413 and err.value.code == "too_many_entries", err.value.message
        assert not (tmp_path / f"x-{name}").exists()


def _corrupt_deflate(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("job/job.json", b"{}")
        zf.writestr("job/mesh.glb", bytes(range(256)) * 64)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"job/mesh.glb") + len("job/mesh.glb")  # the local header's name, then its data
    for i in range(start + 4, start + 40):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    return path


def _unsupported_method(path: Path) -> Path:
    _zip(path, GOOD)
    raw = bytearray(path.read_bytes())
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):  # method field: local header +8, central header +10
        at = raw.find(sig)
        while at >= 0:
            off = at + (8 if sig == b"PK\x03\x04" else 10)
            raw[off:off + 2] = (93).to_bytes(2, "little")  # zstd: not supported by zipfile
            at = raw.find(sig, at + 4)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("case", ["file_and_folder", "long_name", "long_folder_name", "corrupt_deflate", "unsupported_method"])
def test_malformed_archives_are_refused_with_a_4xx_not_a_crash(tmp_path: Path, case: str) -> None:
    archive = {
        "file_and_folder": lambda p: _zip(p, [("job/views", b"file"), ("job/views/0.png", b"png")]),
        "long_name": lambda p: _zip(p, [("job/" + "a" * 256, b"x")]),
        "long_folder_name": lambda p: _tar(p, [("job/" + "é" * 128 + "/x.png", b"x")]),
        "corrupt_deflate": _corrupt_deflate,
        "unsupported_method": _unsupported_method,
    }[case](tmp_path / "bad.archive")
    with pytest.raises(UploadError) as err:
        extract_archive(archive, tmp_path / "x", max_bytes=1 << 20)
    assert 400 <= err.value.status < 500 and err.value.message and err.value.hint, err.value.message
    assert not (tmp_path / "x").exists()
    if case == "file_and_folder":  # in either order
        with pytest.raises(UploadError):
            extract_archive(_zip(tmp_path / "b.zip", [("job/v/0.png", b"png"), ("job/v", b"file")]), tmp_path / "y", 1 << 20)
