"""Calling the manifest from a transfer actor: an actor handle (an awaited ObjectRef, never ray.get) or, in
the driver's start-up worker and in tests, a local object."""

from __future__ import annotations

from typing import Any


async def call_manifest(target: Any, method: str, *args):
    fn = getattr(target, method)
    remote = getattr(fn, "remote", None)
    if remote is not None:
        return await remote(*args)
    return fn(*args)
