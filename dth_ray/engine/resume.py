"""What an interrupted multipart upload left behind: an upload to continue part by part, or ones to abort.

The journal records an intent before CreateMultipartUpload and the upload id after it, so after a crash every
upload is either recorded (resumed or aborted here) or found by listing the key's uploads (swept).
"""

from __future__ import annotations

from dataclasses import replace

from dth_ray.engine.context import CopyContext
from dth_ray.errors import DthError, NotFound
from dth_ray.model import ObjectMeta, PartInfo, PartPlan
from dth_ray.plan.parts import choose_part_size
from dth_ray.stores.base import StoreFeatures, Writer


async def sweep_intent(dst: Writer, dst_key: str, known_ids: set[str]) -> int:
    """Abort uploads of exactly `dst_key` that a crash left unrecorded (Create ran, its record did not);
    returns how many were aborted. Raises DthError if listing or an abort fails."""
    aborted = 0
    for upload in await dst.list_uploads(dst_key):
        if upload.key == dst_key and upload.upload_id not in known_ids:  # exact key, never a prefix match
            await dst.abort_multipart(dst_key, upload.upload_id)
            aborted += 1
    return aborted


async def resumable(ctx: CopyContext, meta: ObjectMeta, dst_key: str,
                    plan: PartPlan) -> tuple[str, dict[int, PartInfo], PartPlan]:
    """An interrupted upload of this very source version to continue, the parts to keep from it, and the
    plan to go on with: the upload's own part size where it differs from `plan`'s (a run beside Ray cuts
    smaller parts, see context.auto_part_bytes, and a run without it must not start those uploads again).

    Only an upload recorded for exactly `dst_key` with the same source ETag and size, and a part size the
    destination takes for it, qualifies, and only parts that the manifest recorded (our MD5, or the server's ETag where CRC64NVME
    replaced it) and the server's ListParts shows with that ETag and the planned size are kept (with the
    CRC64NVME it lists); where the destination checks CRC64NVME, an upload whose parts carry none is aborted; any other part is sent again (a re-sent part replaces the
    server's), so an upload is never completed with bytes nobody checked. Other recorded uploads of the
    key are for another source version and are aborted (all of them with `resume_parts` off, a diagnostic
    switch that tests use to show what a build without part reuse would send). Returns ("", {}, plan) when
    there is none. Raises DthError when the journal, listing the uploads or ListParts fails.
    """
    journal = ctx.journal
    if journal is None or not meta.etag:
        return "", {}, plan
    keep_id, keep_parts = "", {}
    recorded = await journal.find_uploads(dst_key)
    if any(not u.upload_id for u in recorded):
        await sweep_intent(ctx.dst, dst_key, {u.upload_id for u in recorded})
        await journal.upload_closed(dst_key, "")
    for upload in recorded:
        if not upload.upload_id:
            continue
        same = (upload.src_etag, upload.size) == (meta.etag, meta.size) and usable_part_size(
            meta.size, upload.part_size_bytes, ctx.dst_features)
        if keep_id or not same or not ctx.settings.resume_parts:
            await ctx.abort(dst_key, upload.upload_id)
            continue
        try:
            listed = await ctx.limits.call(lambda u=upload: ctx.dst.list_parts(dst_key, u.upload_id))
        except NotFound:  # completed or aborted behind our back: nothing to continue
            await journal.upload_closed(dst_key, upload.upload_id)
            continue
        if ctx.crc.checked and not all(part.checksum for part in listed or [PartInfo(0, "")]):
            # Not a FULL_OBJECT CRC64NVME upload (or none of its parts to tell): its Complete could not carry
            # the object's CRC; start again.
            await ctx.abort(dst_key, upload.upload_id)
            continue
        plan = PartPlan(meta.size, upload.part_size_bytes)
        lengths = {number: byte_range.length for number, byte_range in plan.ranges()}
        keep_id = upload.upload_id
        for part in listed:
            mine = upload.parts.get(part.part_number)
            if (mine is not None and part.etag.strip('"').lower() == mine.etag.lower()
                    and part.size == mine.size == lengths.get(part.part_number)):
                keep_parts[part.part_number] = replace(mine, checksum=part.checksum)
    return keep_id, keep_parts, plan


def usable_part_size(size_bytes: int, part_bytes: int, features: StoreFeatures) -> bool:
    """Whether the destination takes an object of `size_bytes` in parts of `part_bytes`."""
    try:
        return choose_part_size(size_bytes, features, part_bytes) == part_bytes
    except DthError:
        return False
