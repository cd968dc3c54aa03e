"""Local syncs over trees with symlinks on both sides: nothing outside the roots is read or written."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from dth_ray.compose import load_settings
from dth_ray.runtime.driver import run_sync
from dth_ray.runtime.verify import run_verify
from tests.contract.linktree import SECRET, link_tree, never_read

MiB = 1024 * 1024


def _settings(tmp_path: Path, src: Path, dst: Path, *extra: str):
    roots = ["source=local", f"source.path={src}", "destination=local", f"destination.path={dst}"]
    return load_settings([*roots, f"manifest.path={tmp_path / 'manifest.sqlite'}", "progress=off",
                          "transfer.multipart_threshold=5MiB", "transfer.part_size=5MiB", *extra])


def _tree(root: Path) -> dict[str, str]:
    """Every entry below `root` (links not followed): relative path -> 'link', 'dir' or 'file'."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            out[str(path.relative_to(root))] = kind
    return out


def _files_holding(base: Path, needle: bytes, *, skip: Path) -> list[str]:
    """Regular files under `base` (not under `skip`, links not followed) whose bytes contain `needle`."""
    found = []
    for dirpath, _, filenames in os.walk(base):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink() and skip not in path.parents and needle in path.read_bytes():
                found.append(str(path))
    return found


def test_a_source_with_links_copies_its_files_and_reports_each_link_skipped(tmp_path):
    src, outside, links = link_tree(tmp_path)
    dst = tmp_path / "dst"
    settings = _settings(tmp_path, src, dst)
    expected_reasons = {f"unreadable:{cls}": n for cls, n in Counter(links.values()).items()}

    with never_read(outside / "secret.txt", outside / "sub" / "secret.txt"):
        first = run_sync(settings, in_process=1).to_json()
        second = run_sync(settings, in_process=1).to_json()

    assert first["status"] == "succeeded", first["failures"]
    assert first["objects"] == {"listed": 2 + len(links), "copied": 2, "skipped": len(links), "failed": 0}
    assert first["skipped_reasons"] == expected_reasons
    assert expected_reasons == {"unreadable:symlink_inside_root": 4, "unreadable:symlink_outside_root": 7,
                                "unreadable:symlink_dangling": 3}
    assert _tree(dst) == {"a.txt": "file", "dir": "dir", "dir/b.txt": "file"}
    assert (dst / "a.txt").read_bytes() == b"a" and (dst / "dir" / "b.txt").read_bytes() == b"b"
    # The secret is nowhere but where it was: not at the destination, the manifest or any other file we wrote.
    assert _files_holding(tmp_path, SECRET, skip=outside) == []
    assert second["status"] == "succeeded"
    assert second["objects"] == {"listed": 2 + len(links), "copied": 0, "skipped": 2 + len(links),
                                 "failed": 0}
    reasons = second["skipped_reasons"]
    assert {k: v for k, v in reasons.items() if k.startswith("unreadable:")} == expected_reasons
    with never_read(outside / "secret.txt", outside / "sub" / "secret.txt"):
        checked = run_verify(settings)
    assert checked["status"] == "ok", checked
    assert checked["counts"]["unreadable_at_source"] == len(links) and checked["missing_on_destination"] == []


def test_a_destination_with_links_is_never_written_through(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    sentinel, target = tmp_path / "sentinel", tmp_path / "target.txt"
    big = bytes(range(256)) * (6 * MiB // 256)  # above the 5 MiB threshold: a multipart upload, staged
    files = {"ok.txt": b"ok", "file_link": b"replaces the link", "escape/pwned.txt": b"pwned",
             "escape/big.bin": big, "rel_escape/pwned.txt": b"pwned", "chain/pwned.txt": b"pwned",
             "inner/pwned.txt": b"pwned"}
    for rel, body in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(body)
    (dst / "real").mkdir(parents=True)
    sentinel.mkdir()
    target.write_bytes(b"keep")
    os.symlink(sentinel, dst / "escape")  # absolute, outside
    os.symlink("../sentinel", dst / "rel_escape")  # relative, outside
    os.symlink("escape", dst / "chain")  # a link to a link
    os.symlink("real", dst / "inner")  # inside the root: never written through either
    os.symlink(target, dst / "file_link")  # a file outside, at the very key being written

    report = run_sync(_settings(tmp_path, src, dst), in_process=1).to_json()

    crossing = {"escape/pwned.txt", "escape/big.bin", "rel_escape/pwned.txt", "chain/pwned.txt",
                "inner/pwned.txt"}
    assert report["status"] == "failed"
    assert report["objects"] == {"listed": len(files), "copied": 2, "skipped": 0, "failed": len(crossing)}
    assert {f["key"] for f in report["failures"]} == crossing
    assert all("symbolic link" in f["error"] for f in report["failures"]), report["failures"]
    assert os.listdir(sentinel) == [] and os.listdir(dst / "real") == [] and target.read_bytes() == b"keep"
    assert (dst / "ok.txt").read_bytes() == b"ok"
    assert not (dst / "file_link").is_symlink() and (dst / "file_link").read_bytes() == b"replaces the link"
    assert all((dst / name).is_symlink() for name in ("escape", "rel_escape", "chain", "inner"))
    assert os.listdir(dst / ".dth-uploads") == []  # the refused multipart upload was aborted


def test_sync_delete_removes_destination_links_and_never_what_they_point_to(tmp_path):
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    src.mkdir()
    (src / "ok.txt").write_bytes(b"ok")
    outside.mkdir()
    (outside / "victim.txt").write_bytes(b"victim")
    dst.mkdir()
    os.symlink(outside, dst / "escape")
    os.symlink(outside / "victim.txt", dst / "file_link")

    report = run_sync(_settings(tmp_path, src, dst, "sync.delete=true"), in_process=1).to_json()

    assert report["status"] == "succeeded", (report["failures"], report["errors"])
    assert report["objects"]["copied"] == 1 and report["objects"]["deleted"] == 2
    assert _tree(dst) == {"ok.txt": "file"}
    assert _tree(outside) == {"victim.txt": "file"} and (outside / "victim.txt").read_bytes() == b"victim"
