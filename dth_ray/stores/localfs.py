"""File calls that never follow a symbolic link below a root: openat() one name at a time, O_NOFOLLOW."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import uuid
from collections.abc import Sequence

# Linux, macOS and the BSDs have these; without them LocalStore refuses to start (see SUPPORTED).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
SUPPORTED = (bool(_NOFOLLOW and _DIRECTORY)
             and {os.open, os.stat, os.mkdir, os.rmdir, os.unlink, os.rename, os.readlink}
             <= os.supports_dir_fd
             and {os.scandir, os.listdir, os.utime} <= os.supports_fd)
ROOT_FLAGS = os.O_RDONLY | _DIRECTORY | _CLOEXEC  # the configured root is trusted: it may itself be a link
DIR_FLAGS = ROOT_FLAGS | _NOFOLLOW
# O_NONBLOCK: a FIFO swapped in for a file must not hang the open (it is refused after fstat).
READ_FLAGS = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)
NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
# What opening a link with O_NOFOLLOW fails with: ELOOP (Linux, macOS), EMLINK (FreeBSD), ENOTDIR (with
# O_DIRECTORY on Linux).
_LINK_ERRNOS = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)
_MAX_LINK_HOPS = 40  # Linux's MAXSYMLINKS: a longer chain is a loop

INSIDE, OUTSIDE, DANGLING = "inside", "outside", "dangling"


def is_link(name: str, dir_fd: int) -> bool:
    """True if `name` in `dir_fd` is a symbolic link (False if it cannot be looked at)."""
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_dir(name: str, dir_fd: int) -> int:
    """Open directory `name` in `dir_fd`, never through a link.

    Raises FileNotFoundError, NotADirectoryError (a file), OSError with errno ELOOP (a symbolic link),
    PermissionError.
    """
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS and is_link(name, dir_fd):
            raise OSError(errno.ELOOP, "a symbolic link (never followed)", name) from None
        raise


def open_chain(root: str, names: Sequence[str], create: bool = False) -> list[int]:
    """Descriptors of `root` and of each directory `names` leads to below it (the last is the innermost), each
    opened relative to the one before without following a link. `create` makes the root and missing
    directories (mode 0o777 less the umask, as os.makedirs). The caller closes them (close_all).

    Raises as open_dir; FileNotFoundError when something is missing and not `create`.
    """
    if create:
        os.makedirs(root, exist_ok=True)
    fds = [os.open(root, ROOT_FLAGS)]
    try:
        for name in names:
            try:
                fd = open_dir(name, fds[-1])
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):  # a concurrent writer made it first
                    os.mkdir(name, dir_fd=fds[-1])
                fd = open_dir(name, fds[-1])  # a link swapped in since the mkdir is refused here
            fds.append(fd)
    except BaseException:
        close_all(fds)
        raise
    return fds


def close_all(fds: Sequence[int]) -> None:
    for fd in reversed(fds):
        os.close(fd)


def create_new(dir_fd: int, prefix: str) -> tuple[int, str]:
    """A new empty file (mode 0o600) with a fresh random name starting with `prefix` in `dir_fd`: (fd, name).
    O_EXCL: an existing name, a planted link included, is never opened."""
    name = prefix + uuid.uuid4().hex
    return os.open(name, NEW_FLAGS, 0o600, dir_fd=dir_fd), name


def write_new(dir_fd: int, name: str, text: str) -> None:
    """Create file `name` in `dir_fd` holding `text`. Raises FileExistsError if it exists (a link too)."""
    with open(os.open(name, NEW_FLAGS, 0o600, dir_fd=dir_fd), "w", encoding="utf-8") as f:
        f.write(text)


def read_text(name: str, dir_fd: int) -> str:
    """The text of file `name` in `dir_fd`, never through a link. Raises OSError (ELOOP for a link)."""
    with open(os.open(name, READ_FLAGS, dir_fd=dir_fd), encoding="utf-8") as f:
        return f.read()


def is_file(name: str, dir_fd: int) -> bool:
    """True if `name` in `dir_fd` is a regular file (not a link to one)."""
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def remove_flat_dir(name: str, dir_fd: int) -> None:
    """Remove directory `name` in `dir_fd` and the files in it (never through a link; unlink removes a link
    itself). A missing directory is not an error; one holding a subdirectory is left in place."""
    try:
        fd = open_dir(name, dir_fd)
    except OSError:
        return
    try:
        for entry in os.listdir(fd):
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=dir_fd)


def copy_into(dst, src_fd: int, chunk_bytes: int) -> None:
    """Append the open file `src_fd` (from its offset) to the open file `dst` (copy_file_range where the
    kernel has it)."""
    dst.flush()  # copy_file_range writes to the descriptor, past any buffered bytes
    size = os.fstat(src_fd).st_size
    try:
        while size > 0:
            copied = os.copy_file_range(src_fd, dst.fileno(), min(size, 1 << 30))
            if copied == 0:
                break
            size -= copied
    except (AttributeError, OSError):  # no copy_file_range here: continue from the current offsets
        with open(src_fd, "rb", closefd=False) as src:
            shutil.copyfileobj(src, dst, chunk_bytes)
        dst.flush()


def _below(target: str, roots: Sequence[str]) -> list[str] | None:
    """The names of absolute path `target` below one of `roots` (spellings of the root), or None."""
    for root in roots:
        base = root.rstrip("/")
        if target in (root, base):
            return []
        if target.startswith(base + "/"):
            return target[len(base) + 1:].split("/")
    return None


def link_target(root_fd: int, roots: Sequence[str], names: Sequence[str]) -> str:
    """Where the symbolic link at `names` below the root leads: INSIDE the root, OUTSIDE it, or DANGLING (to
    nothing, or a loop). Links are read (readlink) and resolved one name at a time inside the root only: a
    target outside the root is never looked at, not even with stat. `roots`: spellings of the root's path, to
    recognize absolute targets inside it. The answer is a label for the report; nothing is read through it.
    """
    todo = list(names)
    fds = [root_fd]
    hops = 0
    try:
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if len(fds) == 1:
                    return OUTSIDE
                os.close(fds.pop())
                continue
            try:
                st = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
            except OSError:
                return DANGLING
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    return DANGLING
                target = os.readlink(name, dir_fd=fds[-1])
                if target.startswith("/"):
                    rest = _below(target, roots)
                    if rest is None:
                        return OUTSIDE
                    while len(fds) > 1:
                        os.close(fds.pop())
                    todo[:0] = rest
                else:
                    todo[:0] = target.split("/")
                continue
            if not todo:
                return INSIDE
            if not stat.S_ISDIR(st.st_mode):
                return DANGLING
            try:
                fds.append(open_dir(name, fds[-1]))
            except OSError:
                return DANGLING
        return INSIDE  # the root itself
    finally:
        close_all(fds[1:])
