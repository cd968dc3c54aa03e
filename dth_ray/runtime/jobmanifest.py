"""A job's manifest as one run uses it: in this process (the driver lane, the driver's own reads and writes)
and, once Ray is up, as an actor on the driver's node (a SQLite manifest is a file local to the driver) that
transfer actors find by its unique name, so a restarted actor finds it again."""

from __future__ import annotations

import uuid
from typing import Any

from dth_ray.runtime.manifest import Manifest
from dth_ray.runtime.manifests import manifest_factory, open_manifest
from dth_ray.settings import ManifestSpec


class JobManifest:
    """`local` always exists; `actor` once `actor_name()` made it (calls go to the actor from then on)."""

    def __init__(self, spec: ManifestSpec, job: str):
        self.spec = spec
        self.job = job
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
            self.actor = scheduler.named_actor(cls, args, self.name, ray.get_runtime_context().get_node_id())
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
                finally:
                    self._scheduler.kill_actor(actor)
        finally:
            if not self._closed:
                self._closed = True
                self.local.close()
