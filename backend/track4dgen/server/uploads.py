"""Safe extraction of uploaded job archives (zip or tar, optionally gz/bz2/xz compressed).

Why our own extractor: ``zipfile.extractall`` silently rewrites dangerous names and
``tarfile.extractall`` (before Python 3.12's filters) follows links, so a hostile archive could
write outside the data folder (zip-slip) or plant a symlink that a later file write follows. Here
*every* entry is checked before *anything* is written, and the archive is rejected as a whole if
one entry is unsafe: absolute paths, drive letters, ``..`` components, backslashes, NUL bytes,
symlinks, hard links, devices, FIFOs, encrypted entries, duplicates, too many entries, or more
uncompressed bytes than allowed (zip bombs). Files are then created with ``O_EXCL`` under a fresh
staging folder and their resolved path is checked to lie inside it.
"""

from __future__ import annotations

import lzma
import re
import shutil
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterable, Iterator

CHUNK = 1 << 20
MAX_NAME_BYTES = 255  # one path component (the Linux limit)
MAX_PATH_BYTES = 1024
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_DRIVE = re.compile(r"^[A-Za-z]:")


class UploadError(Exception):
    """An upload that is refused. ``status`` is the HTTP status the server answers with."""

    def __init__(self, status: int, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint


def _unsafe(name: str, why: str) -> UploadError:
    return UploadError(400, "unsafe_archive", f"archive entry {name!r} is refused: {why}",
                       "Upload a plain zip or tar of the job folder's regular files (no links, no absolute or '..' paths).")


def safe_relative_path(name: str) -> PurePosixPath | None:
    """The entry's path relative to the extraction root, or raise; ``None`` for the root itself."""
    if "\x00" in name:
        raise _unsafe(name, "the name contains a NUL byte")
    if "\\" in name:
        raise _unsafe(name, "the name contains a backslash")
    if name.startswith("/") or _DRIVE.match(name):
        raise _unsafe(name, "the path is absolute")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise _unsafe(name, "the path contains '..'")
    return PurePosixPath(*parts) if parts else None


@dataclass
class _Entry:
    rel: PurePosixPath
    is_dir: bool
    size: int
    open: Callable[[], BinaryIO] | None


def _too_many(max_entries: int) -> UploadError:
    return UploadError(413, "too_many_entries", f"the archive has more than {max_entries} entries",
                       "Upload only the job folder (job.json, mesh.glb, cameras.json, views/, videos/).")


def _zip_declared_entries(path: Path) -> int | None:
    """The entry count from the zip's end-of-central-directory record, read before zipfile parses
    (and holds in memory) the whole central directory; ``None`` when the record is not found."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    count = struct.unpack("<H", tail[at + 10:at + 12])[0]
    if count == 0xFFFF and at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":  # zip64: ask its record
        (offset,) = struct.unpack("<Q", tail[at - 12:at - 4])
        with open(path, "rb") as f:
            f.seek(offset)
            rec = f.read(56)
        if rec[:4] == b"PK\x06\x06" and len(rec) == 56:
            count = struct.unpack("<Q", rec[32:40])[0]
    return count


def _zip_entries(zf: zipfile.ZipFile) -> Iterator[_Entry]:
    for info in zf.infolist():
        rel = safe_relative_path(info.filename)
        mode = (info.external_attr >> 16) & 0xFFFF
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise _unsafe(info.filename, "it is a symbolic link")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _unsafe(info.filename, "it is not a regular file or folder")
        if info.flag_bits & 0x1:
            raise _unsafe(info.filename, "it is encrypted")
        if info.compress_type not in _ZIP_METHODS:
            raise UploadError(400, "unsupported_compression",
                              f"archive entry {info.filename!r} uses zip compression method {info.compress_type}",
                              "Zip the job folder with 'deflate' or 'store' (the default of every zip tool).")
        if rel is None:
            continue
        is_dir = info.is_dir() or kind == stat.S_IFDIR
        yield _Entry(rel, is_dir, 0 if is_dir else info.file_size, None if is_dir else (lambda info=info: zf.open(info)))


def _tar_entries(tf: tarfile.TarFile) -> Iterator[_Entry]:
    for member in tf:  # streamed: a million-entry tar is refused at the limit, not listed first
        rel = safe_relative_path(member.name)
        if member.issym():
            raise _unsafe(member.name, "it is a symbolic link")
        if member.islnk():
            raise _unsafe(member.name, "it is a hard link")
        if not (member.isreg() or member.isdir()):
            raise _unsafe(member.name, "it is not a regular file or folder")
        if rel is None:
            continue
        yield _Entry(rel, member.isdir(), 0 if member.isdir() else member.size,
                     None if member.isdir() else (lambda m=member: tf.extractfile(m)))


def archive_kind(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise UploadError(400, "bad_archive", "the upload is neither a zip nor a tar archive",
                      "Upload the job folder as a .zip or .tar(.gz) file.")


def _check_name(rel: PurePosixPath) -> None:
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for p in rel.parts):
        raise _unsafe(str(rel)[:80] + "...", f"a name in it is longer than {MAX_NAME_BYTES} bytes")
    if len(str(rel).encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise _unsafe(str(rel)[:80] + "...", f"the path is longer than {MAX_PATH_BYTES} bytes")


def _check_entries(entries: Iterable[_Entry], max_bytes: int, max_entries: int) -> list[_Entry]:
    """Every entry checked (count, size, names, file/folder clashes) before anything is written;
    counting stops at the limit, so the cost of a refused archive is bounded by it."""
    checked: list[_Entry] = []
    files: set[PurePosixPath] = set()
    folders: set[PurePosixPath] = set()
    declared = 0
    for e in entries:
        if len(checked) >= max_entries:
            raise _too_many(max_entries)
        _check_name(e.rel)
        declared += e.size
        if declared > max_bytes:
            raise UploadError(413, "archive_too_large", f"the archive expands to more than {max_bytes} bytes",
                              "Lower the job's resolution or frame count, or raise --max-extract-mb on the server.")
        parents = set(e.rel.parents) - {PurePosixPath(".")}
        if e.is_dir:
            parents.add(e.rel)
        elif e.rel in files:
            raise _unsafe(str(e.rel), "the archive holds this path twice")
        if (not e.is_dir and e.rel in folders) or parents & files:
            raise _unsafe(str(e.rel), "a file and a folder in the archive have the same name")
        folders |= parents
        if not e.is_dir:
            files.add(e.rel)
        checked.append(e)
    return checked


def _write(entries: list[_Entry], dest: Path, max_bytes: int) -> int:
    root = dest.resolve()
    written = 0
    for e in entries:  # directories first is not required: parents are created on demand
        target = dest / e.rel
        if e.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(root):
            raise _unsafe(str(e.rel), "it resolves outside the job folder")
        assert e.open is not None
        with e.open() as src, open(target, "xb") as out:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                if written > max_bytes:
                    raise UploadError(413, "archive_too_large", f"the archive expands to more than {max_bytes} bytes",
                                      "Lower the job's resolution or frame count.")
                out.write(chunk)
    return written


# A job folder holds at most 8 views x (64 frames + 1) PNGs plus a handful of files and folders
# (~540 entries); twice that leaves room for tool droppings such as macOS's "._*" files.
MAX_ENTRIES = 2048


def extract_archive(archive: Path, dest: Path, max_bytes: int, max_entries: int = MAX_ENTRIES) -> int:
    """Extract ``archive`` into the (new, empty) folder ``dest``; returns the bytes written.

    On any error ``dest`` is removed again, so a refused upload leaves nothing behind.
    """
    dest.mkdir(parents=True, exist_ok=False)
    try:
        kind = archive_kind(archive)
        if kind == "zip":
            declared = _zip_declared_entries(archive)
            if declared is not None and declared > max_entries:
                raise _too_many(max_entries)
            try:
                with zipfile.ZipFile(archive) as zf:
                    return _write(_check_entries(_zip_entries(zf), max_bytes, max_entries), dest, max_bytes)
            except (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise  # a server-side file error (disk full...), not the archive's fault
                raise UploadError(400, "bad_archive", f"the zip archive is corrupt: {exc}", "Re-create the zip file.") from exc
        try:
            with tarfile.open(archive, "r:*") as tf:
                return _write(_check_entries(_tar_entries(tf), max_bytes, max_entries), dest, max_bytes)
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise
            raise UploadError(400, "bad_archive", f"the tar archive is corrupt: {exc}", "Re-create the tar file.") from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def find_job_root(extracted: Path) -> Path:
    """The folder holding job.json: the archive root, or its single top-level folder."""
    if (extracted / "job.json").is_file():
        return extracted
    children = [p for p in extracted.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    if len(children) == 1 and children[0].is_dir() and (children[0] / "job.json").is_file():
        return children[0]
    raise UploadError(422, "missing_file", "job.json is missing at the top of the uploaded archive",
                      "Zip the job folder so that job.json is at the archive root (or inside one top-level folder).")
