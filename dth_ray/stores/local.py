"""A directory on disk as a store: keys are relative POSIX paths under `cfg.path`, listed in S3's order.

What differs from S3 (by design, and documented so callers are not surprised):
- Headers are dropped: no sidecar files are written. `head`/`get` report a Content-Type guessed from the
  key's extension (mimetypes) and the file's mtime (`ObjectHeaders.mtime_ns`) and nothing else. `put` and
  `complete_multipart` give the file the `mtime_ns` they are handed (a copy from a local source keeps the
  source file's mtime, as `rsync -t` does); without one the file gets the time of the write.
- ETags: listings and `head` report "" (hashing every file would make a listing read the whole tree);
  `put` and a `get` of a whole object report the hex MD5 of the bytes; `complete_multipart` reports the
  S3-style md5(concat(part md5s))-N. `get(if_match=...)` hashes the whole file, so use it sparingly.
- Versions: listings, `head` and `get` report `checksum` 'mtime_ns:<st_mtime_ns>-<size>', which changes when
  the file is rewritten, even at the same size. The manifest records it as the source version copied, so the
  next sync finds the change. No other store reports the kind `mtime_ns`, so it is only compared with another
  local file's token: a local copy of a local file keeps the source's mtime, hence its token.
- Keys ending in '/' (S3 "directory markers") are accepted by `put` and `complete_multipart` and dropped
  (a directory on disk cannot hold bytes); `get`/`head` of such a key raise NotFound.
- Keys with empty, '.' or '..' segments, a leading '/', or a NUL byte raise Fatal: they would escape the
  root or alias another key. So do keys whose segments use the reserved names '.dth-uploads' (first segment)
  or '.dth-tmp-*'. Any other character (unicode, spaces, '+', '%', '?', '&') is fine.
- A key cannot be both an object and a "directory" ('a' and 'a/b'): writing the second raises Fatal.
- File names that are not valid UTF-8, special files and symlinked directories are left out of listings.
- A missing root lists as empty (a destination directory need not exist yet; the first write creates it).
  Checking that a *source* directory exists is the caller's job (the driver's preflight does it).
- Writes are atomic (a '.dth-tmp-*' file in the target directory, then os.replace) but not fsync'ed.
- Multipart uploads are staged in `<root>/.dth-uploads/<upload_id>/` (a `key` file and one file per part,
  named `<part number>.<md5 hex>`), hidden from listings.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import hashlib
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence

from dth_ray.config import StoreConfig
from dth_ray.errors import (
    DthError,
    Fatal,
    IntegrityError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    Transient,
)
from dth_ray.model import (
    ByteRange,
    GetResult,
    ListPage,
    ObjectHeaders,
    ObjectInfo,
    ObjectMeta,
    PartInfo,
    PutResult,
    UploadInfo,
)
from dth_ray.stores.base import GiB, MiB, StoreFeatures, TiB

log = logging.getLogger(__name__)

UPLOADS_DIR = ".dth-uploads"
TMP_PREFIX = ".dth-tmp-"
_KEY_FILE = "key"
_MTIME_FILE = "mtime_ns"  # in an upload's staging folder: the mtime the completed file gets
VERSION_KIND = "mtime_ns"  # the kind of the version token in ObjectMeta.checksum
_INLINE_BYTES = 256 * 1024  # smaller reads and writes run inline; larger ones in a worker thread
_CHUNK_BYTES = 8 * MiB
_MAX_PART_NUMBER = 10_000
_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
_MD5_HEX_RE = re.compile(r"[0-9a-f]{32}")
_DIR_RACE_ATTEMPTS = 3  # a concurrent delete may prune the parent directory between makedirs and write


def _map_error(exc: OSError, key: str) -> DthError:
    """Turn an OSError about `key` into the taxonomy (the message names the key, never the root path)."""
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"local {key!r}: not found")
    if isinstance(exc, PermissionError):
        return PermissionDenied(f"local {key!r}: permission denied")
    if isinstance(exc, (IsADirectoryError, NotADirectoryError, FileExistsError)):
        return Fatal(f"local {key!r}: an object and a directory would share a path")
    if exc.errno in (errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EBUSY, errno.ESTALE):
        return Transient(f"local {key!r}: {errno.errorcode.get(exc.errno or 0, 'OSError')}")
    return Fatal(f"local {key!r}: {errno.errorcode.get(exc.errno or 0, type(exc).__name__)}")


def version_token(st: os.stat_result) -> str:
    """The version of a file as ObjectMeta.checksum: 'mtime_ns:<st_mtime_ns>-<size>'."""
    return f"{VERSION_KIND}:{st.st_mtime_ns}-{st.st_size}"


def _valid_segment(segment: str, first: bool) -> bool:
    return (
        segment not in ("", ".", "..")
        and not segment.startswith(TMP_PREFIX)
        and not (first and segment == UPLOADS_DIR)
    )


def _valid_dir_key(dir_key: str) -> bool:
    """True if `dir_key` ('' or 'a/b/') names a directory that may hold listed keys."""
    segments = dir_key.split("/")[:-1]
    return not dir_key.startswith("/") and all(_valid_segment(s, i == 0) for i, s in enumerate(segments))


def _md5_of_open_file(f) -> str:
    digest = hashlib.md5()
    while chunk := f.read(_CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


def _copy_into(dst, src_path: str) -> None:
    """Append the file at `src_path` to the open file `dst` (copy_file_range where the kernel has it)."""
    dst.flush()  # copy_file_range writes to the descriptor, past any buffered bytes
    with open(src_path, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        try:
            while size > 0:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), min(size, 1 << 30))
                if copied == 0:
                    break
                size -= copied
        except (AttributeError, OSError):  # no copy_file_range here: continue from the current offsets
            shutil.copyfileobj(src, dst, _CHUNK_BYTES)
            dst.flush()


class LocalStore:
    """A directory tree holding one object per regular file."""

    def __init__(self, cfg: StoreConfig):
        self._cfg = cfg
        self._root = os.path.abspath(os.path.expanduser(cfg.path))
        self._uploads = os.path.join(self._root, UPLOADS_DIR)
        self.features = FEATURES

    def __reduce__(self):
        return (LocalStore, (self._cfg,))

    def __repr__(self) -> str:
        return f"LocalStore(path={self._cfg.path!r})"

    async def aclose(self) -> None:
        """Nothing to release: every call opens and closes its own files."""

    # -- keys and paths -------------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        """Filesystem path of `key`. Raises Fatal for keys that would escape the root or alias another key."""
        if not key or key.startswith("/") or "\x00" in key:
            raise Fatal(f"local key {key!r} is not a relative path")
        segments = key.split("/")
        if key.endswith("/"):
            segments = segments[:-1]
        if not all(_valid_segment(s, i == 0) for i, s in enumerate(segments)):
            raise Fatal(f"local key {key!r} has an empty, '.', '..' or reserved segment")
        return os.path.join(self._root, *segments)

    def _upload_dir(self, upload_id: str, key: str) -> str:
        """Staging directory of an upload of `key`. Raises NotFound if it is gone or belongs to another key."""
        if not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise NotFound(f"local upload {upload_id!r} of {key!r}: no such upload")
        path = os.path.join(self._uploads, upload_id)
        try:
            with open(os.path.join(path, _KEY_FILE), encoding="utf-8") as f:
                stored = f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"local upload {upload_id!r} of {key!r}: no such upload") from None
        if stored != key:
            raise NotFound(f"local upload {upload_id!r} of {key!r}: no such upload")
        return path

    # -- Lister ---------------------------------------------------------------------------------------------

    async def list_page(
        self, prefix: str, *, start_after: str = "", token: str = "", delimiter: str = "", max_keys: int = 1000
    ) -> ListPage:
        """One page of keys under `prefix` (plain string match), after max(start_after, token).

        `next_token` is the last key or common prefix returned. A missing root lists as empty.
        Raises PermissionDenied or Fatal when a directory cannot be read.
        """
        return await asyncio.to_thread(self._list_page, prefix, start_after, token, delimiter, max_keys)

    def _list_page(self, prefix: str, start_after: str, token: str, delimiter: str, max_keys: int) -> ListPage:
        dir_part, sep, name_prefix = prefix.rpartition("/")
        dir_key = dir_part + sep
        if max_keys <= 0 or not _valid_dir_key(dir_key):
            return ListPage(objects=[])
        after = max(start_after, token)
        skip = [""]  # the consumer sets a prefix whose keys the walk may skip (a common prefix already seen)
        objects: list[ObjectMeta] = []
        prefixes: list[str] = []
        last = ""
        more = False
        walk = self._walk(dir_key, name_prefix, after, skip)
        try:
            for key, entry in walk:
                if delimiter:
                    cut = key.find(delimiter, len(prefix))
                    if cut >= 0:
                        common = key[: cut + len(delimiter)]
                        skip[0] = common
                        if token and common <= token:
                            continue
                        if len(objects) + len(prefixes) >= max_keys:
                            more = True
                            break
                        prefixes.append(common)
                        last = common
                        continue
                if len(objects) + len(prefixes) >= max_keys:
                    more = True
                    break
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # deleted while we listed
                objects.append(ObjectMeta(key=key, size=st.st_size, etag="", mtime=st.st_mtime,
                                          checksum=version_token(st), stored=st.st_ctime))
                last = key
        except OSError as exc:
            raise _map_error(exc, prefix) from exc
        finally:
            walk.close()
        return ListPage(objects=objects, prefixes=prefixes, next_token=last if more else "")

    def _scan(self, dir_key: str) -> list[tuple[str, os.DirEntry, bool]]:
        """One directory's entries as (sort name, entry, is_dir), sorted so keys come out in global order.

        A directory 'a' sorts as 'a/': all its keys start with 'a/', so it goes after 'a-b' and before 'a0'.
        """
        path = os.path.join(self._root, dir_key) if dir_key else self._root
        try:
            scanner = os.scandir(path)
        except (FileNotFoundError, NotADirectoryError):
            return []
        entries = []
        with scanner:
            for entry in scanner:
                name = entry.name
                if name.startswith(TMP_PREFIX) or (not dir_key and name == UPLOADS_DIR):
                    continue
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    log.warning("local: skipping a file name that is not UTF-8 in %r", dir_key)
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        entries.append((name + "/", entry, True))
                    elif entry.is_file():
                        entries.append((name, entry, False))
                except OSError:
                    continue
        entries.sort(key=lambda item: item[0])
        return entries

    def _walk(self, dir_key: str, name_prefix: str, after: str, skip: list[str]) -> Iterator[tuple[str, os.DirEntry]]:
        """Yield (key, entry) for files under `dir_key` whose name starts with `name_prefix`, keys > `after`.

        Lazy and depth-first in key order; subtrees wholly at or before `after`, or under `skip[0]`, are
        never opened.
        """
        if after > dir_key and not after.startswith(dir_key):
            return  # every key under dir_key sorts at or before `after`
        entries = self._scan(dir_key)
        names = [item[0] for item in entries]
        low = name_prefix
        if after > dir_key:
            rest = after[len(dir_key):]
            slash = rest.find("/")
            low = max(low, rest[: slash + 1] if slash >= 0 else rest)
        for index in range(bisect.bisect_left(names, low), len(entries)):
            sort_name, entry, is_dir = entries[index]
            if name_prefix and not sort_name.startswith(name_prefix):
                return
            if skip[0]:
                if dir_key.startswith(skip[0]):
                    return
                if (dir_key + sort_name).startswith(skip[0]):
                    continue
            full = dir_key + sort_name
            if is_dir:
                if after > full and not after.startswith(full):
                    continue
                yield from self._walk(full, "", after, skip)
            elif full > after:
                yield full, entry

    # -- Reader ---------------------------------------------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo:
        """Size, mtime, version token, guessed Content-Type (etag ""). Raises NotFound; Fatal (bad key)."""
        path = self._path(key)
        if key.endswith("/"):
            raise NotFound(f"local {key!r}: not found")
        try:
            st = os.stat(path)
        except OSError as exc:
            raise (NotFound(f"local {key!r}: not found") if isinstance(exc, NotADirectoryError)
                   else _map_error(exc, key)) from exc
        if not os.path.isfile(path):
            raise NotFound(f"local {key!r}: not found")
        return self._info(key, st, "")

    @staticmethod
    def _info(key: str, st: os.stat_result, etag: str) -> ObjectInfo:
        content_type = mimetypes.guess_type(key, strict=False)[0] or ""
        return ObjectInfo(ObjectMeta(key=key, size=st.st_size, etag=etag, mtime=st.st_mtime,
                                     checksum=version_token(st), stored=st.st_ctime),
                          ObjectHeaders(content_type=content_type, mtime_ns=st.st_mtime_ns))

    async def get(self, key: str, byte_range: ByteRange | None = None, if_match: str = "") -> GetResult:
        """The bytes of `key` (or a range). The etag is the MD5 of the bytes when the whole object is read;
        the version token is the open file's as the read began (a later rewrite changes the file's token).

        Raises NotFound, PreconditionFailed (if_match differs from the file's MD5, or the range starts
        beyond the end of the file), Fatal for a bad key.
        """
        path = self._path(key)
        if key.endswith("/"):
            raise NotFound(f"local {key!r}: not found")
        if if_match:
            return await asyncio.to_thread(self._get, key, path, byte_range, if_match)
        if byte_range is not None:
            small = byte_range.length <= _INLINE_BYTES
        else:
            try:
                small = os.stat(path).st_size <= _INLINE_BYTES
            except OSError:
                small = True  # _get raises the right error
        if small:
            return self._get(key, path, byte_range, if_match)
        return await asyncio.to_thread(self._get, key, path, byte_range, if_match)

    def _get(self, key: str, path: str, byte_range: ByteRange | None, if_match: str) -> GetResult:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if if_match:
                    if _md5_of_open_file(f) != if_match.strip('"').lower():
                        raise PreconditionFailed(f"local {key!r}: If-Match failed")
                    f.seek(0)
                if byte_range is None:
                    data = f.read()
                    etag = hashlib.md5(data).hexdigest()
                else:
                    if byte_range.start > 0 and byte_range.start >= st.st_size:
                        raise PreconditionFailed(f"local {key!r}: range starts beyond the object's end")
                    f.seek(byte_range.start)
                    data = f.read(max(0, byte_range.length))
                    etag = hashlib.md5(data).hexdigest() if len(data) == st.st_size else ""
        except (IsADirectoryError, NotADirectoryError):
            raise NotFound(f"local {key!r}: not found") from None
        except OSError as exc:
            raise _map_error(exc, key) from exc
        return GetResult(data=data, info=self._info(key, st, etag))

    # -- Writer ---------------------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, headers: ObjectHeaders, md5: bytes) -> PutResult:
        """Write `key` atomically with `headers.mtime_ns` (if set); other headers are dropped.

        Raises IntegrityError if `md5` does not match.
        """
        path = self._path(key)
        digest = hashlib.md5(data).digest()
        if md5 and md5 != digest:
            raise IntegrityError(f"local {key!r}: Content-MD5 does not match the body")
        if not key.endswith("/"):
            if len(data) <= _INLINE_BYTES:
                self._write_atomic(key, path, lambda f: f.write(data), headers.mtime_ns)
            else:
                await asyncio.to_thread(self._write_atomic, key, path, lambda f: f.write(data),
                                        headers.mtime_ns)
        return PutResult(etag=digest.hex())

    def _write_atomic(self, key: str, path: str, fill, mtime_ns: int = 0) -> None:
        """Write through a temp file in the target directory, then os.replace it onto `path`; the file
        appears with mtime `mtime_ns` when that is set."""
        parent = os.path.dirname(path)
        for attempt in range(_DIR_RACE_ATTEMPTS):
            try:
                os.makedirs(parent, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=parent)
            except FileNotFoundError as exc:
                if attempt + 1 < _DIR_RACE_ATTEMPTS:
                    continue
                raise _map_error(exc, key) from exc
            except OSError as exc:
                raise _map_error(exc, key) from exc
            break
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
            os.chmod(tmp, 0o644)
            if mtime_ns:
                os.utime(tmp, ns=(time.time_ns(), mtime_ns))
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _map_error(exc, key) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def create_multipart(self, key: str, headers: ObjectHeaders) -> str:
        """Open a staged upload (keeping `headers.mtime_ns` for the completed file); other headers are
        dropped. Raises Fatal for a bad key."""
        self._path(key)
        upload_id = uuid.uuid4().hex
        try:
            os.makedirs(self._uploads, exist_ok=True)
            building = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self._uploads)
            with open(os.path.join(building, _KEY_FILE), "w", encoding="utf-8") as f:
                f.write(key)
            if headers.mtime_ns:
                with open(os.path.join(building, _MTIME_FILE), "w", encoding="utf-8") as f:
                    f.write(str(headers.mtime_ns))
            os.rename(building, os.path.join(self._uploads, upload_id))  # appears with its key file
        except OSError as exc:
            raise _map_error(exc, key) from exc
        return upload_id

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes, md5: bytes) -> str:
        """Stage one part; returns its MD5 hex. Raises NotFound, IntegrityError, Fatal (bad part number)."""
        if not 1 <= part_number <= _MAX_PART_NUMBER:
            raise Fatal(f"local {key!r}: part number {part_number} is outside 1..{_MAX_PART_NUMBER}")
        digest = hashlib.md5(data).digest()
        if md5 and md5 != digest:
            raise IntegrityError(f"local {key!r} part {part_number}: Content-MD5 does not match the body")
        await asyncio.to_thread(self._stage_part, key, upload_id, part_number, data, digest.hex())
        return digest.hex()

    def _stage_part(self, key: str, upload_id: str, part_number: int, data: bytes, etag: str) -> None:
        staging = self._upload_dir(upload_id, key)
        name = f"{part_number:05d}.{etag}"
        try:
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=staging)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(staging, name))
            for other in os.listdir(staging):
                if other.startswith(f"{part_number:05d}.") and other != name:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(staging, other))
        except FileNotFoundError:
            raise NotFound(f"local upload {upload_id!r} of {key!r}: aborted while uploading") from None
        except OSError as exc:
            raise _map_error(exc, key) from exc

    def _parts(self, staging: str) -> list[PartInfo]:
        parts = []
        for name in os.listdir(staging):
            number, dot, etag = name.partition(".")
            if dot and number.isdigit() and _MD5_HEX_RE.fullmatch(etag):
                with contextlib.suppress(FileNotFoundError):
                    size = os.stat(os.path.join(staging, name)).st_size
                    parts.append(PartInfo(part_number=int(number), etag=etag, size=size))
        parts.sort(key=lambda p: p.part_number)
        return parts

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        """Parts staged so far, by part number. Raises NotFound if the upload is gone."""

        def run() -> list[PartInfo]:
            try:
                return self._parts(self._upload_dir(upload_id, key))
            except FileNotFoundError:
                raise NotFound(f"local upload {upload_id!r} of {key!r}: no such upload") from None

        return await asyncio.to_thread(run)

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartInfo]) -> PutResult:
        """Concatenate the parts atomically into `key`; returns the S3-style multipart ETag.

        Raises NotFound (upload gone), Fatal (no parts, or a part that was not staged with that ETag).
        """
        return await asyncio.to_thread(self._complete, key, upload_id, parts)

    def _complete(self, key: str, upload_id: str, parts: Sequence[PartInfo]) -> PutResult:
        path = self._path(key)
        staging = self._upload_dir(upload_id, key)
        ordered = sorted(parts, key=lambda p: p.part_number)
        if not ordered:
            raise Fatal(f"local {key!r}: a multipart upload needs at least one part")
        files = []
        for part in ordered:
            etag_hex = part.etag.strip('"').lower()
            part_path = os.path.join(staging, f"{part.part_number:05d}.{etag_hex}")
            if not os.path.isfile(part_path):
                raise Fatal(f"local {key!r}: part {part.part_number} with that ETag was not uploaded")
            files.append(part_path)
        md5s = b"".join(bytes.fromhex(p.etag.strip('"')) for p in ordered)
        etag = f"{hashlib.md5(md5s).hexdigest()}-{len(ordered)}"
        if not key.endswith("/"):

            def fill(f) -> None:
                for part_path in files:
                    _copy_into(f, part_path)

            self._write_atomic(key, path, fill, self._staged_mtime_ns(staging))
        shutil.rmtree(staging, ignore_errors=True)
        return PutResult(etag=etag)

    @staticmethod
    def _staged_mtime_ns(staging: str) -> int:
        """The mtime create_multipart was handed for this upload, or 0."""
        try:
            with open(os.path.join(staging, _MTIME_FILE), encoding="utf-8") as f:
                return int(f.read())
        except (OSError, ValueError):
            return 0

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop a staged upload; one that is already gone (or belongs to another key) is not an error."""
        try:
            staging = self._upload_dir(upload_id, key)
        except NotFound:
            return
        await asyncio.to_thread(shutil.rmtree, staging, True)

    async def list_uploads(self, prefix: str) -> list[UploadInfo]:
        """Staged uploads whose key starts with `prefix`, sorted by key then upload id."""

        def run() -> list[UploadInfo]:
            uploads = []
            try:
                scanner = os.scandir(self._uploads)
            except (FileNotFoundError, NotADirectoryError):
                return []
            with scanner:
                for entry in scanner:
                    if not _UPLOAD_ID_RE.fullmatch(entry.name):
                        continue
                    try:
                        with open(os.path.join(entry.path, _KEY_FILE), encoding="utf-8") as f:
                            key = f.read()
                    except OSError:
                        continue  # being created or aborted
                    if key.startswith(prefix):
                        uploads.append(UploadInfo(key=key, upload_id=entry.name))
            uploads.sort(key=lambda u: (u.key, u.upload_id))
            return uploads

        return await asyncio.to_thread(run)

    async def delete(self, key: str) -> None:
        """Remove `key` and any directories it leaves empty; a missing key is not an error."""
        path = self._path(key)
        if key.endswith("/"):
            return
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise _map_error(exc, key) from exc
        parent = os.path.dirname(path)
        while parent != self._root and parent.startswith(self._root + os.sep):
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)


FEATURES = StoreFeatures(
    name="local",
    min_part_size_bytes=1,
    max_part_size_bytes=5 * GiB,
    max_parts=10_000,
    max_single_put_bytes=5 * TiB,
    single_put_etag_is_md5=True,
    multipart_etag_is_md5_of_md5s=True,
    server_side_copy=False,
    checksum_kinds=("md5",),
)
