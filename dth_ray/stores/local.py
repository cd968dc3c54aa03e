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
- File names that are not valid UTF-8 and special files are left out of listings.
- A missing root lists as empty (a destination directory need not exist yet; the first write creates it).
  Checking that a *source* directory exists is the caller's job (the driver's preflight does it).
- Writes are atomic (a '.dth-tmp-*' file in the target directory, then a rename) but not fsync'ed.
- Multipart uploads are staged in `<root>/.dth-uploads/` (stores/localstage.py), hidden from listings.

Symbolic links: the store never follows one below its root, as a source or as a destination (the configured
root path itself is trusted and may be a link). Every call walks from a descriptor of the root, one name at a
time, with O_NOFOLLOW (stores/localfs.py), so there is no window between a check and a use.
- A link is never an object: listings report it (its own lstat: size and mtime of the link, no version
  token) with `storage_class` 'symlink_outside_root', 'symlink_inside_root' or 'symlink_dangling' (also a
  loop), telling where it leads; `head` reports the same. These classes are in
  `FEATURES.unreadable_storage_classes`, so the diff skips them and the report counts them under
  `skipped_reasons` as 'unreadable:symlink_outside_root' etc. Links inside the root are skipped too (not
  copied as their target): the target is copied under its own key anyway, S3 has no links, and a directory
  link could alias or loop over the tree. Where a link leads is found by reading links inside the root only; a
  target outside it is never opened or even stat'ed.
- `get` of a key that is a link raises Unreadable (never read); `get`/`head` of a key whose path crosses a
  link ('linkdir/x') raise NotFound, as the listing shows nothing under a link.
- Writes (`put`, multipart staging, `complete_multipart`) refuse a link in the key's path or in place of
  '.dth-uploads' with Fatal; a link at the key's own name is replaced by the new file (a rename replaces the
  link itself), never written through.
- `delete` of a key that is a link removes the link only; a key whose path crosses a link is missing (nothing
  deleted); emptied directories are pruned relative to their parent's descriptor, never through a link.
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
import stat
import time
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
    Unreadable,
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
from dth_ray.stores import localfs
from dth_ray.stores.base import GiB, MiB, StoreFeatures, TiB
from dth_ray.stores.localstage import TMP_PREFIX, UPLOADS_DIR, Staging

log = logging.getLogger(__name__)

VERSION_KIND = "mtime_ns"  # the kind of the version token in ObjectMeta.checksum
# The storage class a listed link gets, by where it leads (localfs.link_target); the diff skips them all.
LINK_CLASSES = {localfs.OUTSIDE: "symlink_outside_root", localfs.INSIDE: "symlink_inside_root",
                localfs.DANGLING: "symlink_dangling"}
_INLINE_BYTES = 256 * 1024  # smaller reads and writes run inline; larger ones in a worker thread
_CHUNK_BYTES = 8 * MiB
_MAX_PART_NUMBER = 10_000
_DIR_RACE_ATTEMPTS = 3  # a concurrent delete may prune the parent directory between its mkdir and our write


def _map_error(exc: OSError, key: str) -> DthError:
    """Turn an OSError about `key` into the taxonomy (the message names the key, never the root path)."""
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"local {key!r}: not found")
    if isinstance(exc, PermissionError):
        return PermissionDenied(f"local {key!r}: permission denied")
    if exc.errno == errno.ELOOP:
        return Fatal(f"local {key!r}: a symbolic link is in the way (links are never followed)")
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


class LocalStore:
    """A directory tree holding one object per regular file."""

    def __init__(self, cfg: StoreConfig):
        if not localfs.SUPPORTED:
            raise Fatal("the local store needs openat() with O_NOFOLLOW (Linux, macOS, BSD)")
        self._cfg = cfg
        self._root = os.path.abspath(os.path.expanduser(cfg.path))
        self._staging = Staging(self._root)
        self.features = FEATURES

    def __reduce__(self):
        return (LocalStore, (self._cfg,))

    def __repr__(self) -> str:
        return f"LocalStore(path={self._cfg.path!r})"

    async def aclose(self) -> None:
        """Nothing to release: every call opens and closes its own files."""

    def link_rtt_s(self) -> float:
        """A disk on this machine: no link to wait on."""
        return 0.0

    # -- keys, directories and links ------------------------------------------------------------------------

    @staticmethod
    def _segments(key: str) -> list[str]:
        """The names `key` walks below the root. Raises Fatal for keys that would escape the root or alias
        another key."""
        if not key or key.startswith("/") or "\x00" in key:
            raise Fatal(f"local key {key!r} is not a relative path")
        segments = key.split("/")
        if key.endswith("/"):
            segments = segments[:-1]
        if not all(_valid_segment(s, i == 0) for i, s in enumerate(segments)):
            raise Fatal(f"local key {key!r} has an empty, '.', '..' or reserved segment")
        return segments

    def _read_dirs(self, key: str, names: Sequence[str]) -> list[int]:
        """Descriptors from the root down to directory `names`, to read `key`: a missing directory, or a file
        or a link in the way, means the key does not exist. Raises NotFound, PermissionDenied."""
        try:
            return localfs.open_chain(self._root, names)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"local {key!r}: not found") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotFound(f"local {key!r}: not found (its path crosses a symbolic link)") from None
            raise _map_error(exc, key) from exc

    def _link_class(self, root_fd: int, key: str) -> str:
        """The storage class of the link at `key`: where it leads, looking only inside the root."""
        roots = (self._root, os.path.realpath(self._root))
        return LINK_CLASSES[localfs.link_target(root_fd, roots, key.split("/"))]

    def _link_meta(self, root_fd: int, key: str, st: os.stat_result) -> ObjectMeta:
        """A link as listed: its own lstat, never its target's, and no version token (it is not an object)."""
        return ObjectMeta(key=key, size=st.st_size, etag="", mtime=st.st_mtime,
                          storage_class=self._link_class(root_fd, key), stored=st.st_ctime)

    # -- Lister ---------------------------------------------------------------------------------------------

    async def list_page(
        self, prefix: str, *, start_after: str = "", token: str = "", delimiter: str = "", max_keys: int = 1000
    ) -> ListPage:
        """One page of keys under `prefix` (plain string match), after max(start_after, token).

        `next_token` is the last key or common prefix returned. A missing root lists as empty, and so does a
        prefix whose directory path crosses a link. Raises PermissionDenied or Fatal when a directory cannot
        be read.
        """
        return await asyncio.to_thread(self._list_page, prefix, start_after, token, delimiter, max_keys)

    def _list_page(self, prefix: str, start_after: str, token: str, delimiter: str, max_keys: int) -> ListPage:
        dir_part, sep, name_prefix = prefix.rpartition("/")
        dir_key = dir_part + sep
        if max_keys <= 0 or not _valid_dir_key(dir_key):
            return ListPage(objects=[])
        try:
            fds = localfs.open_chain(self._root, dir_key.split("/")[:-1])
        except (FileNotFoundError, NotADirectoryError):
            return ListPage(objects=[])
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return ListPage(objects=[])  # nothing is listed through a link
            raise _map_error(exc, prefix) from exc
        after = max(start_after, token)
        skip = [""]  # the consumer sets a prefix whose keys the walk may skip (a common prefix already seen)
        objects: list[ObjectMeta] = []
        prefixes: list[str] = []
        last = ""
        more = False
        walk = self._walk(fds[-1], dir_key, name_prefix, after, skip)
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
                try:  # the walk keeps the entry's directory open while it waits here
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while we listed
                if stat.S_ISREG(st.st_mode):
                    objects.append(ObjectMeta(key=key, size=st.st_size, etag="", mtime=st.st_mtime,
                                              checksum=version_token(st), stored=st.st_ctime))
                elif stat.S_ISLNK(st.st_mode):
                    objects.append(self._link_meta(fds[0], key, st))
                else:
                    continue  # replaced by a directory or a special file since the scan
                last = key
        except OSError as exc:
            raise _map_error(exc, prefix) from exc
        finally:
            walk.close()
            localfs.close_all(fds)
        return ListPage(objects=objects, prefixes=prefixes, next_token=last if more else "")

    def _scan(self, dir_fd: int, dir_key: str) -> list[tuple[str, os.DirEntry, bool]]:
        """One directory's entries as (sort name, entry, is_dir), sorted so keys come out in global order.

        A directory 'a' sorts as 'a/': all its keys start with 'a/', so it goes after 'a-b' and before 'a0'.
        A link sorts as its own name, whatever it points to: it is one (skipped) key, never a directory.
        """
        entries = []
        with os.scandir(dir_fd) as scanner:
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
                    elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
                        entries.append((name, entry, False))
                except OSError:
                    continue
        entries.sort(key=lambda item: item[0])
        return entries

    def _walk(self, dir_fd: int, dir_key: str, name_prefix: str, after: str, skip: list[str]
              ) -> Iterator[tuple[str, os.DirEntry]]:
        """Yield (key, entry) for files and links under directory `dir_fd` (key `dir_key`) whose name starts
        with `name_prefix`, keys > `after`.

        Lazy and depth-first in key order; subtrees wholly at or before `after`, or under `skip[0]`, are
        never opened. Subdirectories are opened relative to `dir_fd`, never through a link.
        """
        if after > dir_key and not after.startswith(dir_key):
            return  # every key under dir_key sorts at or before `after`
        entries = self._scan(dir_fd, dir_key)
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
                try:
                    sub = localfs.open_dir(sort_name[:-1], dir_fd)
                except OSError as exc:
                    if isinstance(exc, (FileNotFoundError, NotADirectoryError)) or exc.errno == errno.ELOOP:
                        continue  # removed, or swapped for a file or a link, since the scan
                    raise
                try:
                    yield from self._walk(sub, full, "", after, skip)
                finally:
                    os.close(sub)
            elif full > after:
                yield full, entry

    # -- Reader ---------------------------------------------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo:
        """Size, mtime, version token, guessed Content-Type (etag ""); for a link, the link as listed (its
        storage class says where it leads). Raises NotFound (also for a path crossing a link), Fatal (bad
        key)."""
        segments = self._segments(key)
        if key.endswith("/"):
            raise NotFound(f"local {key!r}: not found")
        fds = self._read_dirs(key, segments[:-1])
        try:
            st = os.stat(segments[-1], dir_fd=fds[-1], follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                return ObjectInfo(self._link_meta(fds[0], key, st))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"local {key!r}: not found") from None
        except OSError as exc:
            raise _map_error(exc, key) from exc
        finally:
            localfs.close_all(fds)
        if not stat.S_ISREG(st.st_mode):
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

        Raises NotFound (also for a path crossing a link), Unreadable (`key` is a link: never read),
        PreconditionFailed (if_match differs from the file's MD5, or the range starts beyond the end of the
        file), Fatal for a bad key.
        """
        segments = self._segments(key)
        if key.endswith("/"):
            raise NotFound(f"local {key!r}: not found")
        f, st = self._open_read(key, segments)
        size = byte_range.length if byte_range is not None else st.st_size
        if if_match or size > _INLINE_BYTES:
            return await asyncio.to_thread(self._read, key, f, st, byte_range, if_match)
        return self._read(key, f, st, byte_range, if_match)

    def _open_read(self, key: str, segments: list[str]):
        """(file, fstat) of the regular file `key`, opened without following any link."""
        fds = self._read_dirs(key, segments[:-1])
        name, parent = segments[-1], fds[-1]
        try:
            # lstat first: a link is reported as such, and a special file is never opened.
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise Unreadable(f"local {key!r}: a symbolic link ({self._link_class(fds[0], key)}), "
                                 "never followed")
            if not stat.S_ISREG(st.st_mode):
                raise NotFound(f"local {key!r}: not found")
            fd = os.open(name, localfs.READ_FLAGS, dir_fd=parent)  # a link swapped in since is refused: ELOOP
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"local {key!r}: not found") from None
        except OSError as exc:
            raise _map_error(exc, key) from exc
        finally:
            localfs.close_all(fds)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise NotFound(f"local {key!r}: not found")
        return os.fdopen(fd, "rb"), st

    def _read(self, key: str, f, st: os.stat_result, byte_range: ByteRange | None, if_match: str) -> GetResult:
        try:
            with f:
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
        except OSError as exc:
            raise _map_error(exc, key) from exc
        return GetResult(data=data, info=self._info(key, st, etag))

    # -- Writer ---------------------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, headers: ObjectHeaders, md5: bytes) -> PutResult:
        """Write `key` atomically with `headers.mtime_ns` (if set); other headers are dropped.

        Raises IntegrityError if `md5` does not match; Fatal for a bad key or a link in the key's path.
        """
        segments = self._segments(key)
        digest = hashlib.md5(data).digest()
        if md5 and md5 != digest:
            raise IntegrityError(f"local {key!r}: Content-MD5 does not match the body")
        if not key.endswith("/"):
            if len(data) <= _INLINE_BYTES:
                self._write_atomic(key, segments, lambda f: f.write(data), headers.mtime_ns)
            else:
                await asyncio.to_thread(self._write_atomic, key, segments, lambda f: f.write(data),
                                        headers.mtime_ns)
        return PutResult(etag=digest.hex())

    def _create_temp(self, key: str, names: Sequence[str]) -> tuple[list[int], int, str]:
        """(descriptors of the directories down to `names`, made as needed; a new temp file open in the last;
        its name). Raises Fatal for a link or a file in the way."""
        for attempt in range(_DIR_RACE_ATTEMPTS):
            fds: list[int] = []
            try:
                fds = localfs.open_chain(self._root, names, create=True)
                fd, tmp = localfs.create_new(fds[-1], TMP_PREFIX)
                return fds, fd, tmp
            except FileNotFoundError as exc:  # pruned by a concurrent delete: make it again
                localfs.close_all(fds)
                if attempt + 1 == _DIR_RACE_ATTEMPTS:
                    raise _map_error(exc, key) from exc
            except OSError as exc:
                localfs.close_all(fds)
                raise _map_error(exc, key) from exc
        raise AssertionError("unreachable")

    def _write_atomic(self, key: str, segments: list[str], fill, mtime_ns: int = 0) -> None:
        """Write through a temp file in the target directory, then rename it onto the key's name, both
        relative to that directory's descriptor (a link at the name is replaced, never written through); the
        file appears with mtime `mtime_ns` when that is set."""
        fds, fd, tmp = self._create_temp(key, segments[:-1])
        parent = fds[-1]
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fchmod(f.fileno(), 0o644)
                if mtime_ns:
                    os.utime(f.fileno(), ns=(time.time_ns(), mtime_ns))
            os.replace(tmp, segments[-1], src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            if isinstance(exc, OSError):
                raise _map_error(exc, key) from exc
            raise
        finally:
            localfs.close_all(fds)

    async def create_multipart(self, key: str, headers: ObjectHeaders) -> str:
        """Open a staged upload (keeping `headers.mtime_ns` for the completed file); other headers are
        dropped. Raises Fatal for a bad key or a link in place of the uploads folder."""
        self._segments(key)
        try:
            return self._staging.create(key, headers.mtime_ns)
        except OSError as exc:
            raise _map_error(exc, key) from exc

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes, md5: bytes) -> str:
        """Stage one part; returns its MD5 hex. Raises NotFound, IntegrityError, Fatal (bad part number)."""
        if not 1 <= part_number <= _MAX_PART_NUMBER:
            raise Fatal(f"local {key!r}: part number {part_number} is outside 1..{_MAX_PART_NUMBER}")
        digest = hashlib.md5(data).digest()
        if md5 and md5 != digest:
            raise IntegrityError(f"local {key!r} part {part_number}: Content-MD5 does not match the body")
        await self._staged(key, self._staging.put_part, upload_id, key, part_number, data, digest.hex())
        return digest.hex()

    async def _staged(self, key: str, call, *args):
        """`call(*args)` of the staging area in a thread, its OSErrors mapped."""
        try:
            return await asyncio.to_thread(call, *args)
        except OSError as exc:
            raise _map_error(exc, key) from exc

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        """Parts staged so far, by part number. Raises NotFound if the upload is gone."""
        return await self._staged(key, self._staging.parts, upload_id, key)

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartInfo]) -> PutResult:
        """Concatenate the parts atomically into `key`; returns the S3-style multipart ETag.

        Raises NotFound (upload gone), Fatal (no parts, a part that was not staged with that ETag, or a link
        in the key's path).
        """
        return await self._staged(key, self._complete, key, upload_id, parts)

    def _complete(self, key: str, upload_id: str, parts: Sequence[PartInfo]) -> PutResult:
        segments = self._segments(key)
        ordered = sorted(parts, key=lambda p: p.part_number)
        if not ordered:
            raise Fatal(f"local {key!r}: a multipart upload needs at least one part")
        fds = self._staging.open(upload_id, key)
        staging = fds[-1]
        try:
            names = self._staging.part_names(staging, key, ordered)
            md5s = b"".join(bytes.fromhex(p.etag.strip('"')) for p in ordered)
            etag = f"{hashlib.md5(md5s).hexdigest()}-{len(ordered)}"
            if not key.endswith("/"):
                def fill(f) -> None:
                    self._staging.concat(f, staging, names, _CHUNK_BYTES)

                self._write_atomic(key, segments, fill, self._staging.mtime_ns(staging))
            localfs.remove_flat_dir(upload_id, fds[-2])
        finally:
            localfs.close_all(fds)
        return PutResult(etag=etag)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop a staged upload; one that is already gone (or belongs to another key) is not an error."""
        await self._staged(key, self._staging.remove, upload_id, key)

    async def list_uploads(self, prefix: str) -> list[UploadInfo]:
        """Staged uploads whose key starts with `prefix`, sorted by key then upload id."""
        return await self._staged(prefix, self._staging.uploads, prefix)

    async def delete(self, key: str) -> None:
        """Remove `key` and any directories it leaves empty; a missing key is not an error. A key that is a
        link loses the link only; a key whose path crosses a link is missing (nothing is deleted through it).
        """
        segments = self._segments(key)
        if key.endswith("/"):
            return
        try:
            fds = localfs.open_chain(self._root, segments[:-1])
        except OSError as exc:
            if isinstance(exc, (FileNotFoundError, NotADirectoryError)) or exc.errno == errno.ELOOP:
                return
            raise _map_error(exc, key) from exc
        try:
            try:
                os.unlink(segments[-1], dir_fd=fds[-1])  # unlink never follows: a link goes, its target stays
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return
            except OSError as exc:
                raise _map_error(exc, key) from exc
            # fds[i] is directory segments[i - 1]: remove it from its parent fds[i - 1] while it is empty.
            for i in range(len(segments) - 1, 0, -1):
                try:
                    os.rmdir(segments[i - 1], dir_fd=fds[i - 1])
                except OSError:
                    break
        finally:
            localfs.close_all(fds)


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
    # Links are listed under these classes and skipped by the diff (see the module docstring).
    unreadable_storage_classes=tuple(LINK_CLASSES.values()),
)
