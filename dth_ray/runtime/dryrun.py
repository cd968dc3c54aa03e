"""A dry run's changes: the sample its summary shows and, with `dry_run_list=PATH`, every one as JSON lines."""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterable

from dth_ray.errors import ConfigError
from dth_ray.model import Change
from dth_ray.settings import DRY_RUN_SAMPLE, Settings


class DryRunChanges:
    """Collects the changes shard results carry. The list is written as results arrive (a dry run of billions
    of keys never holds them all) to PATH.tmp, renamed to PATH when the run finishes, removed otherwise."""

    def __init__(self, path: str = "", sample: int = DRY_RUN_SAMPLE):
        self.path = path
        self.sample_size = sample
        self._sample: dict[str, list[Change]] = {"copy": [], "delete": []}
        self.written = 0
        self._file = None
        if path:
            try:
                self._file = open(path + ".tmp", "w", encoding="utf-8")  # noqa: SIM115 - open for the whole run
            except OSError as exc:
                raise ConfigError(f"dry_run_list={path!r} cannot be written: {exc.strerror}") from None

    @classmethod
    def of(cls, settings: Settings) -> DryRunChanges | None:
        """The collector a dry run needs (None otherwise). Raises ConfigError when dry_run_list cannot be
        written (checked before anything is listed)."""
        if not settings.dry_run:
            return None
        if settings.dry_run_list and os.path.isdir(settings.dry_run_list):
            raise ConfigError(f"dry_run_list={settings.dry_run_list!r} is a directory; give a file path")
        return cls(settings.dry_run_list)

    def add(self, changes: Iterable[Change]) -> None:
        changes = list(changes)
        if self._file is not None and changes:
            self._file.writelines(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in changes)
            self.written += len(changes)
        for action, kept in self._sample.items():
            mine = [c for c in changes if c.action == action]
            if mine:
                self._sample[action] = heapq.nsmallest(self.sample_size, kept + mine, key=lambda c: c.key)

    @property
    def sample(self) -> list[Change]:
        """The first keys (in key order) of each action, up to the sample size."""
        return self._sample["copy"] + self._sample["delete"]

    def close(self, keep: bool) -> None:
        """Publish the list (`keep`), or remove its partial file."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if keep:
            os.replace(self.path + ".tmp", self.path)
        else:
            os.unlink(self.path + ".tmp")
