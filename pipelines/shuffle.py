"""What crosses the GroupByKey: a bucket's share of a batch, as Arrow IPC bytes or a spill file.

Distributed runners (Dataflow, Dask) move GroupByKey data through their own shuffle, which is
built for it. Beam's local runners keep all of it in the runner's memory, and re-encode the
whole stage-two input at once, so a local run's memory would grow with the corpus. For local
runs the payloads are therefore spilled to files in a private scratch folder and only their
paths go through the GroupByKey: memory then depends on the bucket size alone. File names are
content hashes, so a retried bundle rewrites the same file.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import pyarrow as pa


def encode_payload(batch: pa.RecordBatch, *, spill_dir: str | None) -> bytes | str:
    """The record batch as IPC bytes, or the path of a spill file holding them."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    data = sink.getvalue()
    if spill_dir is None:
        return data.to_pybytes()
    path = os.path.join(spill_dir, hashlib.sha256(data).hexdigest()[:32] + ".arrow")
    if not os.path.exists(path):
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return path


def decode_payload(payload: bytes | str) -> pa.Table:
    if isinstance(payload, str):
        with open(payload, "rb") as f:
            payload = f.read()
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
