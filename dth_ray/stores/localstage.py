"""The local store's multipart uploads, staged under `<root>/.dth-uploads/`, never reached through a link."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import uuid
from collections.abc import Sequence

from dth_ray.errors import Fatal, NotFound
from dth_ray.model import PartInfo, UploadInfo
from dth_ray.stores import localfs

UPLOADS_DIR = ".dth-uploads"
TMP_PREFIX = ".dth-tmp-"
_KEY_FILE = "key"
_MTIME_FILE = "mtime_ns"  # the mtime the completed file gets
_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
_MD5_HEX_RE = re.compile(r"[0-9a-f]{32}")


def _missing(exc: OSError) -> bool:
    """A name missing, a file where a directory should be, or a link (never followed)."""
    return isinstance(exc, (FileNotFoundError, NotADirectoryError)) or exc.errno == errno.ELOOP


class Staging:
    """The uploads folder of one local root: one folder per upload, `<upload_id>/`, holding a `key` file, an
    optional `mtime_ns` file and one file per part named `<part number>.<md5 hex>`. Methods raise OSError for
    the store's error mapping, NotFound and Fatal where they say so."""

    def __init__(self, root: str):
        self._root = root

    def open(self, upload_id: str, key: str) -> list[int]:
        """Descriptors of the root, the uploads folder and the staging folder of `upload_id` (the caller
        closes them). Raises NotFound if the upload is gone or belongs to another key."""
        gone = NotFound(f"local upload {upload_id!r} of {key!r}: no such upload")
        if not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise gone
        try:
            fds = localfs.open_chain(self._root, [UPLOADS_DIR, upload_id])
        except OSError as exc:
            if _missing(exc):
                raise gone from None
            raise
        try:
            stored = localfs.read_text(_KEY_FILE, fds[-1])
        except OSError:
            stored = None
        if stored != key:
            localfs.close_all(fds)
            raise gone
        return fds

    def create(self, key: str, mtime_ns: int) -> str:
        """A new staged upload of `key`; returns its id. It appears whole: built under a temp name, then
        renamed."""
        upload_id = uuid.uuid4().hex
        building = TMP_PREFIX + uuid.uuid4().hex
        fds = localfs.open_chain(self._root, [UPLOADS_DIR], create=True)  # a link here: ELOOP, never followed
        uploads = fds[-1]
        try:
            os.mkdir(building, 0o700, dir_fd=uploads)
            staging = localfs.open_dir(building, uploads)
            try:
                localfs.write_new(staging, _KEY_FILE, key)
                if mtime_ns:
                    localfs.write_new(staging, _MTIME_FILE, str(mtime_ns))
            finally:
                os.close(staging)
            os.rename(building, upload_id, src_dir_fd=uploads, dst_dir_fd=uploads)
        except OSError:
            localfs.remove_flat_dir(building, uploads)
            raise
        finally:
            localfs.close_all(fds)
        return upload_id

    def put_part(self, upload_id: str, key: str, part_number: int, data: bytes, etag: str) -> None:
        """Stage one part (replacing an earlier one of that number). Raises NotFound if the upload is gone."""
        fds = self.open(upload_id, key)
        staging = fds[-1]
        name = f"{part_number:05d}.{etag}"
        try:
            fd, tmp = localfs.create_new(staging, TMP_PREFIX)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, name, src_dir_fd=staging, dst_dir_fd=staging)
            for other in os.listdir(staging):
                if other.startswith(f"{part_number:05d}.") and other != name:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(other, dir_fd=staging)
        except FileNotFoundError:
            raise NotFound(f"local upload {upload_id!r} of {key!r}: aborted while uploading") from None
        finally:
            localfs.close_all(fds)

    def parts(self, upload_id: str, key: str) -> list[PartInfo]:
        """Parts staged so far, by part number. Raises NotFound if the upload is gone."""
        fds = self.open(upload_id, key)
        parts = []
        try:
            for name in os.listdir(fds[-1]):
                number, dot, etag = name.partition(".")
                if dot and number.isdigit() and _MD5_HEX_RE.fullmatch(etag):
                    with contextlib.suppress(FileNotFoundError):
                        st = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
                        if stat.S_ISREG(st.st_mode):
                            parts.append(PartInfo(part_number=int(number), etag=etag, size=st.st_size))
        finally:
            localfs.close_all(fds)
        parts.sort(key=lambda p: p.part_number)
        return parts

    @staticmethod
    def part_names(staging: int, key: str, ordered: Sequence[PartInfo]) -> list[str]:
        """The staged file of each part. Raises Fatal for a part not staged with that ETag."""
        names = []
        for part in ordered:
            etag_hex = part.etag.strip('"').lower()
            name = f"{part.part_number:05d}.{etag_hex}"
            # The ETag becomes a file name: only an MD5 hex, so it can never name a path elsewhere.
            if not _MD5_HEX_RE.fullmatch(etag_hex) or not localfs.is_file(name, staging):
                raise Fatal(f"local {key!r}: part {part.part_number} with that ETag was not uploaded")
            names.append(name)
        return names

    @staticmethod
    def concat(f, staging: int, names: Sequence[str], chunk_bytes: int) -> None:
        """Append the staged files `names` to the open file `f`."""
        for name in names:
            src = os.open(name, localfs.READ_FLAGS, dir_fd=staging)
            try:
                localfs.copy_into(f, src, chunk_bytes)
            finally:
                os.close(src)

    @staticmethod
    def mtime_ns(staging: int) -> int:
        """The mtime `create` was handed for this upload, or 0."""
        try:
            return int(localfs.read_text(_MTIME_FILE, staging))
        except (OSError, ValueError):
            return 0

    def remove(self, upload_id: str, key: str) -> None:
        """Drop a staged upload; one that is already gone (or belongs to another key) is not an error."""
        try:
            fds = self.open(upload_id, key)
        except NotFound:
            return
        try:
            localfs.remove_flat_dir(upload_id, fds[-2])
        finally:
            localfs.close_all(fds)

    def uploads(self, prefix: str) -> list[UploadInfo]:
        """Staged uploads whose key starts with `prefix`, sorted by key then upload id."""
        try:
            fds = localfs.open_chain(self._root, [UPLOADS_DIR])
        except OSError as exc:
            if _missing(exc):
                return []
            raise
        uploads = []
        try:
            with os.scandir(fds[-1]) as scanner:
                for entry in scanner:
                    if not _UPLOAD_ID_RE.fullmatch(entry.name):
                        continue
                    try:
                        staging = localfs.open_dir(entry.name, fds[-1])
                        try:
                            key = localfs.read_text(_KEY_FILE, staging)
                        finally:
                            os.close(staging)
                    except OSError:
                        continue  # being created or aborted
                    if key.startswith(prefix):
                        uploads.append(UploadInfo(key=key, upload_id=entry.name))
        finally:
            localfs.close_all(fds)
        uploads.sort(key=lambda u: (u.key, u.upload_id))
        return uploads
