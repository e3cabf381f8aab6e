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

import re
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterable

CHUNK = 1 << 20
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


def _zip_entries(zf: zipfile.ZipFile) -> list[_Entry]:
    entries = []
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
        if rel is None:
            continue
        is_dir = info.is_dir() or kind == stat.S_IFDIR
        entries.append(_Entry(rel, is_dir, 0 if is_dir else info.file_size,
                              None if is_dir else (lambda info=info: zf.open(info))))
    return entries


def _tar_entries(tf: tarfile.TarFile) -> list[_Entry]:
    entries = []
    for member in tf.getmembers():
        rel = safe_relative_path(member.name)
        if member.issym():
            raise _unsafe(member.name, "it is a symbolic link")
        if member.islnk():
            raise _unsafe(member.name, "it is a hard link")
        if not (member.isreg() or member.isdir()):
            raise _unsafe(member.name, "it is not a regular file or folder")
        if rel is None:
            continue
        entries.append(_Entry(rel, member.isdir(), 0 if member.isdir() else member.size,
                              None if member.isdir() else (lambda m=member: tf.extractfile(m))))
    return entries


def archive_kind(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise UploadError(400, "bad_archive", "the upload is neither a zip nor a tar archive",
                      "Upload the job folder as a .zip or .tar(.gz) file.")


def _check_and_write(entries: Iterable[_Entry], dest: Path, max_bytes: int, max_entries: int) -> int:
    entries = list(entries)
    if len(entries) > max_entries:
        raise UploadError(413, "too_many_entries", f"the archive has {len(entries)} entries (limit {max_entries})",
                          "Upload only the job folder (job.json, mesh.glb, cameras.json, views/, videos/).")
    declared = sum(e.size for e in entries)
    if declared > max_bytes:
        raise UploadError(413, "archive_too_large", f"the archive expands to {declared} bytes (limit {max_bytes})",
                          "Lower the job's resolution or frame count, or raise --max-extract-mb on the server.")
    seen: set[PurePosixPath] = set()
    for e in entries:
        if e.rel in seen and not e.is_dir:
            raise _unsafe(str(e.rel), "the archive holds this path twice")
        seen.add(e.rel)
    root = dest.resolve()
    written = 0
    for e in entries:  # directories first is not required: parents are created on demand
        target = (dest / e.rel)
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


def extract_archive(archive: Path, dest: Path, max_bytes: int, max_entries: int = 20000) -> int:
    """Extract ``archive`` into the (new, empty) folder ``dest``; returns the bytes written.

    On any error ``dest`` is removed again, so a refused upload leaves nothing behind.
    """
    dest.mkdir(parents=True, exist_ok=False)
    try:
        kind = archive_kind(archive)
        if kind == "zip":
            try:
                with zipfile.ZipFile(archive) as zf:
                    return _check_and_write(_zip_entries(zf), dest, max_bytes, max_entries)
            except (zipfile.BadZipFile, EOFError) as exc:
                raise UploadError(400, "bad_archive", f"the zip archive is corrupt: {exc}", "Re-create the zip file.") from exc
        try:
            with tarfile.open(archive, "r:*") as tf:
                return _check_and_write(_tar_entries(tf), dest, max_bytes, max_entries)
        except (tarfile.TarError, EOFError) as exc:
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
