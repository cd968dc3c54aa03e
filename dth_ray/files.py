"""dth_ray's own state on disk (manifests, reports, export state, the Ray token): files 0600 in 0700 directories."""

from __future__ import annotations

import os
import stat

FILE_MODE = 0o600
DIR_MODE = 0o700
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def private_dir(path: str, own: bool = False) -> str:
    """Create `path` and its missing parents 0700; returns it, absolute. Directories that already exist keep
    their mode (they may be the user's: the working directory, a shared state folder), except `path` itself
    when it is dth_ray's `own` (the default state folder), which is tightened to 0700.

    Raises OSError when a directory cannot be created.
    """
    path = os.path.abspath(path)
    missing = []
    here = path
    while not os.path.isdir(here):
        missing.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:  # created meanwhile by a concurrent run: not ours to change
            continue
        os.chmod(folder, DIR_MODE)  # mkdir's mode passes through the umask
    if own and path not in missing:
        st = os.lstat(path)  # a symlink there is the user's redirection: its target is left alone
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o777 != DIR_MODE and st.st_uid == os.geteuid():
            os.chmod(path, DIR_MODE)
    return path


def private_opener(path: str, flags: int) -> int:
    """An `open(..., opener=)` that creates the file 0600 and tightens one that exists (O_CREAT keeps the
    mode of an existing file, e.g. a temp file left by a crash)."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        _tighten(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: str, text: str) -> None:
    """Write `text` to `path` atomically (a temp file beside it, then os.replace), the file 0600.

    Raises OSError.
    """
    tmp = f"{path}.tmp"
    # Never through a symlink planted at the temp name: its target would be truncated and overwritten.
    with open(tmp, "w", encoding="utf-8", opener=lambda p, f: private_opener(p, f | _NOFOLLOW)) as handle:
        handle.write(text)
    os.replace(tmp, path)


def private_file(path: str) -> None:
    """Make `path` exist with mode 0600 before another library opens it. For SQLite: its -wal, -shm and
    journal files take the main file's mode when SQLite creates them, but ones left by an earlier release
    keep theirs, so those are tightened too.

    Raises OSError when the file cannot be created.
    """
    os.close(private_opener(path, os.O_RDONLY | os.O_CREAT))
    for suffix in SQLITE_SIDE_FILES:
        try:
            fd = os.open(path + suffix, os.O_RDONLY | _NOFOLLOW)
        except OSError:
            continue  # absent (the usual case)
        try:
            _tighten(fd)
        finally:
            os.close(fd)


def _tighten(fd: int) -> None:
    st = os.fstat(fd)
    if st.st_mode & 0o777 != FILE_MODE and st.st_uid == os.geteuid():  # another user's file is left as it is
        os.fchmod(fd, FILE_MODE)
