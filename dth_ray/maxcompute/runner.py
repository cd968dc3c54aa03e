"""`source=maxcompute`: export a MaxCompute table to S3 in the configured mode (direct or unload)."""

from __future__ import annotations

from dth_ray.config import MaxComputeMode
from dth_ray.maxcompute.direct import run_direct
from dth_ray.maxcompute.unload import run_unload
from dth_ray.runtime.interrupts import Interrupts
from dth_ray.settings import Settings


def run_maxcompute(settings: Settings, interrupts: Interrupts | None = None) -> dict:
    """Export the table (resuming the job's interrupted export) and return the report.

    Raises ConfigError before anything is written when the table, the credentials or the destination are
    wrong."""
    if settings.config.maxcompute.mode == MaxComputeMode.unload:
        return run_unload(settings, interrupts)
    return run_direct(settings, interrupts)
