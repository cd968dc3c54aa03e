"""A job's manifest as one run uses it: in this process (the driver lane, the driver's own reads and writes)
and, once Ray is up, as an actor on the driver's node (a SQLite manifest is a file local to the driver) that
transfer actors find by its unique name, so a restarted actor finds it again."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from dth_ray.ops.logs import relayed_lines, setup_actor_logging, write_relayed
from dth_ray.runtime.manifest import Manifest
from dth_ray.runtime.manifests import manifest_factory, open_manifest
from dth_ray.runtime.rayhost import relays_logs
from dth_ray.settings import ManifestSpec


def hosted(cls: type) -> type:
    """The manifest backend as an actor: it logs like a transfer actor (redacted, at the run's level and
    format) and hands its lines to the driver where no log monitor copies them."""

    class Hosted(cls):
        def __init__(self, log_level: str, log_format: str, *args):
            setup_actor_logging(log_level, log_format)  # first: opening the backend may log
            super().__init__(*args)

        def log_lines(self) -> list[str]:
            return relayed_lines()

    Hosted.__name__ = Hosted.__qualname__ = f"{cls.__name__}Actor"
    return Hosted


class JobManifest:
    """`local` always exists; `actor` once `actor_name()` made it (calls go to the actor from then on)."""

    def __init__(self, spec: ManifestSpec, job: str, log: tuple[str, str] = ("WARNING", "text")):
        """`log`: the run's log level and format, for the actor."""
        self.spec = spec
        self.job = job
        self.log = log
        self.local: Manifest = open_manifest(spec, job)
        self.actor: Any = None
        self.name = ""
        self._scheduler = None
        self._closed = False

    def actor_name(self, scheduler, run_id: int) -> str:
        """The manifest actor's name, starting it on the driver's node the first time (Ray must be up)."""
        if self.actor is None:
            import ray

            cls, args = manifest_factory(self.spec, self.job, run_id)
            self.name = f"dth-manifest-{uuid.uuid4().hex}"
            self.actor = scheduler.named_actor(hosted(cls), (*self.log, *args), self.name,
                                               ray.get_runtime_context().get_node_id(), tag="manifest")
            self._scheduler = scheduler
        return self.name

    def call(self, method: str, *args):
        """A call to the manifest the run's workers write to (the actor once it exists)."""
        if self.actor is not None:
            return self._scheduler.call(self.actor, method, *args)
        return getattr(self.local, method)(*args)

    def both(self, method: str, *args) -> list:
        """The call on the local instance and, if it exists, the actor (each holds what it was sent)."""
        out = [getattr(self.local, method)(*args)]
        if self.actor is not None:
            out.append(self._scheduler.call(self.actor, method, *args))
        return out

    def close(self) -> None:
        """Flush and close both; the actor is stopped. Idempotent."""
        actor, self.actor = self.actor, None
        try:
            if actor is not None:
                try:
                    self._scheduler.call(actor, "close")
                    if relays_logs():  # what it logged up to its close (lines it cannot hand over stay in its file)
                        with contextlib.suppress(Exception):
                            write_relayed("manifest", self._scheduler.call(actor, "log_lines", timeout_s=5.0))
                finally:
                    self._scheduler.kill_actor(actor)
        finally:
            if not self._closed:
                self._closed = True
                self.local.close()
