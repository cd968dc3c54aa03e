"""The `report=PATH` file: checked writable before a command starts, written atomically, never left half-done."""

from __future__ import annotations

import contextlib
import json
import os

from dth_ray.errors import ConfigError, Fatal
from dth_ray.files import write_private


def _tmp(path: str) -> str:
    return f"{path}.tmp"


def check_report_path(path: str) -> None:
    """Fail now, not after the run, when `path` cannot take the report: it is a directory, its folder is
    missing, or nothing can be created there (tried for real: permission bits alone do not say what root, a
    read-only mount or an ACL allows). Raises ConfigError (one line). Leaves nothing behind."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"report={path!r} is a directory; give a file path (e.g. {os.path.join(path, 'report.json')})")
    if not os.path.isdir(folder):
        raise ConfigError(f"report={path!r}: folder {folder!r} does not exist")
    tmp = _tmp(path)
    try:
        with open(tmp, "x", encoding="utf-8"):
            pass
    except FileExistsError:
        if not os.access(tmp, os.W_OK):  # a leftover of an earlier run: write_report replaces it
            raise ConfigError(f"report={path!r}: {tmp!r} exists and cannot be replaced") from None
        return
    except OSError as exc:
        raise ConfigError(f"report={path!r} cannot be written in {folder!r} ({exc.strerror or type(exc).__name__})") \
            from None
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def write_report(path: str, report: dict) -> None:
    """Write `report` as JSON to `path` atomically (a temporary file renamed over it), 0600. Raises Fatal (one line)
    when it cannot, and leaves no temporary file behind."""
    tmp = _tmp(path)
    try:
        write_private(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")  # 0600, never via a symlink
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise Fatal(f"report={path!r} could not be written ({exc.strerror or type(exc).__name__})") from None


__all__ = ["check_report_path", "write_report"]
