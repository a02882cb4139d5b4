"""Unfinished multipart uploads: the invisible, billed leftovers of a killed writer.

An object larger than about 100 MB (a big shard, a checkpoint) goes to S3 as a multipart
upload; a writer killed halfway leaves the parts stored and billed, yet invisible to every
listing (151.7 MB of them after one killed run). A run that takes over an output therefore
aborts the unfinished uploads under its prefix first: they belong to writers that are gone
(the writer lease or ``--resume`` says so). Anything this misses (a bucket nobody writes to
again) is what a lifecycle rule is for: ``AbortIncompleteMultipartUpload`` after a day or two
(docs/dataflow.md shows one).

GCS needs nothing: its resumable uploads expire a week after they start, unbilled, and local
files have no such thing.
"""

from __future__ import annotations

import logging

from mlm_data.storage import _limited, _refusals_named, retry, url_to_fs

log = logging.getLogger(__name__)


def abort_unfinished_uploads(url: str) -> list[str]:
    """Abort every unfinished S3 multipart upload of an object under ``url``; the keys.

    A no-op (``[]``) for other stores.
    """
    if url.split("://", 1)[0] not in ("s3", "s3a"):
        return []
    fs, path = url_to_fs(url)
    bucket, _, key = path.partition("/")
    prefix = key.rstrip("/") + "/" if key else ""
    uploads: list[tuple[str, str]] = []
    with _refusals_named(url, "listing unfinished uploads"):
        markers: dict[str, str] = {}
        while True:
            page = retry(lambda m=dict(markers): _limited(fs, "call_s3", "list_multipart_uploads", Bucket=bucket,
                                                           Prefix=prefix, **m),
                         what=f"listing unfinished uploads under {url}")
            uploads += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]  # type: ignore[union-attr]
            if not page.get("IsTruncated"):  # type: ignore[union-attr]
                break
            markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}  # type: ignore[index]
        for key_, upload_id in uploads:
            try:
                retry(lambda k=key_, u=upload_id: _limited(fs, "call_s3", "abort_multipart_upload", Bucket=bucket,
                                                            Key=k, UploadId=u),
                      what=f"aborting the unfinished upload of s3://{bucket}/{key_}")
            except FileNotFoundError:
                pass  # completed or aborted meanwhile
    if uploads:
        log.info("%s: aborted %d unfinished multipart upload(s) of earlier runs", url, len(uploads))
    return [f"s3://{bucket}/{k}" for k, _ in uploads]
