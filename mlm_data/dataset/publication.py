"""Replacing a dataset without ever leaving a broken one at its path.

``--overwrite`` used to delete the old manifest first and write the new shards over the old
ones, so any failure (a bad tokenizer, a binary input found an hour in, a kill) lost a good
dataset. Now the old dataset stays readable and valid until the new one is complete:

1. the driver checks everything it can (config, inputs, tokenizer, labels) before it writes;
2. the run takes the output's writer lease (``mlm_data.storage.lease``), which also proves
   the output writable;
3. every file the run writes is named by its content (``content_name``): shards
   ``train/shard-BBBBB-PPP-<hash>.arrow``, the tokenizer ``tokenizer-<hash>.json``. They land
   next to the old dataset's files without touching them; identical bytes get identical
   names, so a rerun of the same data rewrites the same files with the same bytes, and
   outputs stay byte-identical wherever and whenever they are written;
4. ``publish`` checks the lease, replaces ``manifest.json`` in one step (the moment readers
   switch from the old dataset to the new one), and only then removes what the new manifest
   does not list;
5. a run that fails removes what it wrote (``discard_unpublished``): the directory is the old
   dataset again, exactly.

Each shard is still one PUT (or one completed multipart upload) on an object store: nothing is
staged and copied.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mlm_data import storage
from mlm_data.dataset.manifest import MANIFEST_NAME, Manifest, remove_stale_files, write_manifest
from mlm_data.dataset.shards import content_name
from mlm_data.errors import ConfigError, MlmDataError, OutputBusyError
from mlm_data.storage.lease import LeaseTicket, WriterLease
from mlm_data.storage.uploads import abort_unfinished_uploads

log = logging.getLogger(__name__)


def check_output(root: str, *, overwrite: bool) -> None:
    """Refuse an output that already holds a dataset, unless told to replace it. Reads only."""
    if storage.exists(storage.join(root, MANIFEST_NAME)) and not overwrite:
        raise ConfigError(f"{root}: already holds a dataset ({MANIFEST_NAME}); pass --overwrite "
                          "(output.overwrite: true) to replace it, or choose another --output")


@dataclass(frozen=True)
class Output:
    """The output a run holds (see ``replacing``)."""

    root: str
    lease: WriterLease

    @property
    def ticket(self) -> LeaseTicket:
        """For the step that publishes: ``publish(..., lease=output.ticket)``."""
        return self.lease.ticket

    def published(self, *, config: Mapping[str, Any], tokenizer_sha256: str) -> Manifest:
        """The manifest this run published, after checking that it is this run's: the run still
        holds the lease, and the manifest records this run's config and tokenizer."""
        self.lease.verify("reporting success")
        manifest = Manifest.load(self.root)
        ours = (json.loads(json.dumps(config)) == manifest.data.get("config")
                and manifest.tokenizer.get("sha256") == tokenizer_sha256)
        if not ours:
            raise OutputBusyError(f"{self.root}: the manifest there is not the one this run wrote (another writer "
                                  "replaced it); this run's dataset was not kept. Run again once the output is free")
        return manifest


@contextmanager
def replacing(root: str, *, overwrite: bool, command: str,
              echo: Callable[[str], None] = log.warning) -> Iterator[Output]:
    """Hold ``root`` while a run writes a dataset there: take its writer lease, check again
    (under the lease) that it may be written, abort the unfinished uploads dead writers left,
    and, if the run fails, remove what it wrote so the old dataset (if any) is all there is."""
    with WriterLease(root, command=command, echo=echo) as lease:
        check_output(root, overwrite=overwrite)
        abort_unfinished_uploads(root)
        try:
            yield Output(root, lease)
        except BaseException:
            if lease.confirmed():   # never clear away what a run that took over has written
                try:
                    discard_unpublished(root)
                except (MlmDataError, OSError) as exc:
                    log.warning("%s: could not remove the files of this failed run (%s); the next run will", root,
                                exc)
            raise


def tokenizer_name(sha256: str) -> str:
    """The dataset's tokenizer file, named by its content: ``tokenizer-<hash>.json``."""
    return content_name("tokenizer", sha256, ".json")


def write_tokenizer(root: str, tokenizer_json: str) -> str:
    """Write the tokenizer next to any old dataset's files; its URL (workers load it from there)."""
    data = tokenizer_json.encode("utf-8")
    url = storage.join(root, tokenizer_name(hashlib.sha256(data).hexdigest()))
    storage.write_bytes(url, data)
    return url


def publish(root: str, manifest: Mapping[str, Any], *, lease: LeaseTicket | None) -> list[str]:
    """Make ``manifest`` the dataset at ``root``, then remove what it does not list.

    ``lease`` (the run's writer lease) is checked first: a run that lost it publishes nothing.
    Returns the removed paths.
    """
    if lease is not None:
        lease.check("publishing the manifest")
    write_manifest(root, manifest)
    return remove_stale_files(root, manifest)


def discard_unpublished(root: str) -> list[str]:
    """After a failed run: remove every file of ours that the manifest at ``root`` (the old
    dataset, if any) does not list. Returns the removed paths."""
    current = Manifest.load(root).data if storage.exists(storage.join(root, MANIFEST_NAME)) else None
    return remove_stale_files(root, current)
