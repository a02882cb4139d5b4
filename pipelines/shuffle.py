"""What crosses the GroupByKey: a bucket's share of a batch, as Arrow IPC bytes or a spill file.

Distributed runners (Dataflow, Dask) move GroupByKey data through their own shuffle, which is
built for it. Beam's local runners keep all of it in the runner's memory, and re-encode the
whole stage-two input at once, so a local run's memory would grow with the corpus. For local
runs the payloads are therefore spilled to files in a private scratch folder and only their
paths go through the GroupByKey: memory then depends on the window being made into rows
(``mlm_data.stages.write_bucket``), not on the corpus. File names are content hashes, so a
retried bundle rewrites the same file. On the other side, ``local_payloads`` gives the
per-bucket stage every payload as a local file, which it can read once per window.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pyarrow as pa

from mlm_data import scratch


def encode_payload(batch: pa.RecordBatch | pa.Table, *, spill_dir: str | None) -> bytes | str:
    """The record batch (or table) as IPC bytes, or the path of a spill file holding them."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write(batch)
    data = sink.getvalue()
    if spill_dir is None:
        return data.to_pybytes()
    return spill(data, spill_dir, ".arrow")


def spill(data: bytes | pa.Buffer, spill_dir: str, suffix: str) -> str:
    """Write ``data`` to a content-named file in ``spill_dir`` (a retry rewrites the same name)."""
    path = os.path.join(spill_dir, hashlib.sha256(data).hexdigest()[:32] + suffix)
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


@contextmanager
def local_payloads(payloads: Iterable[bytes | str]) -> Iterator[list[str]]:
    """A bucket's payloads as local files, for as long as the block runs.

    The per-bucket stage reads a bucket's payloads once per window. Spill files (local
    runners) are read where they are; payload bytes from a distributed runner's shuffle are
    written to a private temporary folder on the worker as they arrive, so the shuffle is read
    once and memory holds one payload at a time.
    """
    folder: str | None = None
    paths: list[str] = []
    try:
        for payload in payloads:
            if isinstance(payload, str):
                paths.append(payload)
                continue
            if folder is None:
                folder = scratch.make_dir("mlm-data-bucket-")
            path = os.path.join(folder, f"{len(paths):08d}.arrow")
            with open(path, "wb") as f:
                f.write(payload)
            paths.append(path)
        yield paths
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
