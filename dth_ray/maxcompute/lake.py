"""The destination side of a table export, shared by both modes: list a partition's folder, check the files
a partition should hold, clear what an interrupted attempt left, and write the `_SUCCESS` manifest last.
Runs on the driver (blocking calls over a LoopThread)."""

from __future__ import annotations

import hashlib
import json
import logging

from dth_ray.errors import IntegrityError, NotFound
from dth_ray.maxcompute.parquet_sink import LoopThread
from dth_ray.maxcompute.plan import SUCCESS_NAME, FileInfo
from dth_ray.model import ObjectHeaders, ObjectMeta

log = logging.getLogger(__name__)


class Lake:
    """A destination store seen as partition folders."""

    def __init__(self, store, loop: LoopThread):
        self.store = store
        self._loop = loop

    def list_folder(self, prefix: str) -> dict[str, ObjectMeta]:
        """The objects directly in the folder `prefix` (not in sub-folders), by key."""
        return self._list(prefix, "/")

    def list_all(self, prefix: str) -> dict[str, ObjectMeta]:
        """Every object under `prefix`, by key."""
        return self._list(prefix, "")

    def _list(self, prefix: str, delimiter: str) -> dict[str, ObjectMeta]:
        out: dict[str, ObjectMeta] = {}
        token = ""
        while True:
            page = self._loop.run(self.store.list_page(prefix, token=token, delimiter=delimiter, max_keys=1000))
            out.update((o.key, o) for o in page.objects)
            if not page.next_token:
                return out
            token = page.next_token

    def has_success(self, folder: str) -> bool:
        try:
            self._loop.run(self.store.head(folder + SUCCESS_NAME))
            return True
        except NotFound:
            return False

    def delete(self, keys) -> int:
        count = 0
        for key in keys:
            self._loop.run(self.store.delete(key))
            count += 1
        return count

    def abort_uploads(self, folder: str) -> int:
        """Abort multipart uploads left open under the folder (an interrupted shard's file)."""
        uploads = [u for u in self._loop.run(self.store.list_uploads(folder)) if u.key.startswith(folder)]
        for upload in uploads:
            self._loop.run(self.store.abort_multipart(upload.key, upload.upload_id))
        return len(uploads)

    def check_files(self, folder: str, files: list[FileInfo]) -> dict[str, ObjectMeta]:
        """Raise IntegrityError unless every file is in the folder with its size (and its ETag, where both
        are known); returns the folder listing."""
        listed = self.list_folder(folder)
        for f in files:
            meta = listed.get(f.key)
            if meta is None or meta.size != f.size:
                raise IntegrityError(f"{f.key}: expected {f.size} bytes at the destination, found "
                                     f"{meta.size if meta else 'nothing'}")
            if f.etag and meta.etag and meta.etag != f.etag:
                raise IntegrityError(f"{f.key}: the destination holds another version (ETag differs)")
        return listed

    def write_success(self, folder: str, manifest: dict) -> str:
        """Write `folder/_SUCCESS` holding the manifest (JSON); returns its key. Raises IntegrityError if the
        stored ETag is not the MD5 of what was sent (where the store's ETags are MD5s)."""
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        digest = hashlib.md5(body).digest()
        key = folder + SUCCESS_NAME
        result = self._loop.run(self.store.put(key, body, ObjectHeaders(content_type="application/json"), digest))
        if self.store.features.single_put_etag_is_md5 and result.etag and result.etag != digest.hex():
            raise IntegrityError(f"{key}: ETag does not match the MD5 of the manifest sent")
        return key

    def remove_success(self, folder: str) -> None:
        """Withdraw a partition's marker before its files change (a rewrite at the source)."""
        self._loop.run(self.store.delete(folder + SUCCESS_NAME))
