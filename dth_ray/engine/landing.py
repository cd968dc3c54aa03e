"""Bytes of the objects still being copied that have already been read, for live progress.

A worker opens a Landing for each object it copies; the ranged reads under it (in that task and the tasks it
starts, which inherit the context) add what lands. Capped at the object's size, so a range read again after a
retry never counts twice over. Progress only: reports and metrics count an object when it completes.
"""

from __future__ import annotations

from contextvars import ContextVar


class Landing:
    """One object's bytes read so far."""

    __slots__ = ("size_bytes", "read_bytes")

    def __init__(self, size_bytes: int):
        self.size_bytes = size_bytes
        self.read_bytes = 0

    def add(self, n_bytes: int) -> None:
        self.read_bytes = min(self.size_bytes, self.read_bytes + n_bytes)


current: ContextVar[Landing | None] = ContextVar("dth_ray_landing", default=None)


def landed(n_bytes: int) -> None:
    """`n_bytes` of the current object have been read (no-op outside a worker's copy)."""
    landing = current.get()
    if landing is not None:
        landing.add(n_bytes)
