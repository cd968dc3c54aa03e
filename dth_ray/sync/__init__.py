"""Keeping in sync: event parsing, per-key coalescing, scheduling (pure) and the `dth-ray watch` service."""
