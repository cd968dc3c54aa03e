"""Symlink trees for the local store's tests, and a check that files outside a root are never read."""

from __future__ import annotations

import contextlib
import os

SECRET = b"aws_secret_access_key = must-never-leave-its-folder\n"


def _age_atime(path) -> None:
    """Set the access time well before the mtime: under relatime, any read then updates it."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_mtime_ns - 86_400 * 10**9, st.st_mtime_ns))


def _atime_shows_reads(scratch) -> bool:
    probe = scratch / "atime-probe"
    probe.write_bytes(b"p")
    _age_atime(probe)
    before = os.stat(probe).st_atime_ns
    probe.read_bytes()
    shows = os.stat(probe).st_atime_ns != before
    probe.unlink()
    return shows


@contextlib.contextmanager
def never_read(*paths):
    """Assert that no file in `paths` is read inside the block (by its access time, where the filesystem keeps
    them: a probe read shows whether it does), nor changed."""
    checks = _atime_shows_reads(paths[0].parent)
    bodies = {path: path.read_bytes() for path in paths}
    for path in paths:
        _age_atime(path)
    atimes = {path: os.stat(path).st_atime_ns for path in paths}
    yield
    for path, body in bodies.items():
        if checks:  # before reading it here
            assert os.stat(path).st_atime_ns == atimes[path], f"{path} was read"
        assert path.read_bytes() == body, path


def link_tree(tmp_path):
    """A root with two files and links of every kind (relative and absolute, to files and directories, inside
    and outside it, to links, dangling, a loop), beside a folder outside holding secrets.
    Returns (root, outside, {link key: storage class it must list as})."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "sub" / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"a")
    (root / "dir" / "b.txt").write_bytes(b"b")
    links = {
        "rel_in": ("a.txt", "symlink_inside_root"),
        "abs_in": (str(root / "dir" / "b.txt"), "symlink_inside_root"),
        "dir_in": ("dir", "symlink_inside_root"),
        "chain_in": ("rel_in", "symlink_inside_root"),
        "rel_out": ("../outside/secret.txt", "symlink_outside_root"),
        "abs_out": (str(outside / "secret.txt"), "symlink_outside_root"),
        "dir_out": (str(outside), "symlink_outside_root"),
        "chain_out": ("rel_out", "symlink_outside_root"),
        "dir/up_out": ("../../outside/secret.txt", "symlink_outside_root"),
        "dir/in_then_out": ("../dir_in/../../outside/sub/secret.txt", "symlink_outside_root"),
        "dangling": ("missing", "symlink_dangling"),
        "dangling_out": ("/nonexistent-dth-test/x", "symlink_outside_root"),
        "loop_a": ("loop_b", "symlink_dangling"),
        "loop_b": ("loop_a", "symlink_dangling"),
    }
    for key, (target, _) in links.items():
        os.symlink(target, root / key)
    return root, outside, {key: cls for key, (_, cls) in links.items()}
