"""Checkpoints: plain dicts of tensors and Python values, published atomically to any fsspec URL.

A checkpoint is ``RUN/checkpoints/step-00001000.pt`` holding::

    format, format_version     what this file is, so an unrelated .pt is refused clearly
    sha256                     of everything else in the file (``content_sha256``), checked on
                               every load: a flipped bit is refused, never trained on
    step                       optimizer steps completed
    model, optimizer           state_dicts (the learning rate is ``optim.lr_at(step)``, so no
                               scheduler state is needed)
    loader                     the loader's ``state_dict`` (its position is global, the same on
                               every rank), so resumed batches are identical
    config                     the resolved training config (plain data)
    dataset                    what the weights are tied to: the training data's task, label
                               names and tokenizer record (path, sha256, vocab size, special
                               ids), so a warm start or an export can check and describe them
    dataset_schema_version     the Arrow schema version this mlm_data reads (it refuses datasets
                               of any other, so it is the version the run was trained on)
    torch_version              for the curious; not checked

There are no RNG states: dropout draws are re-seeded before every micro-step from
``(seed, step, micro-step, rank)`` (see ``train.dropout_seed``), so they are derived, not stored.

Everything inside is a tensor or a plain Python value, so ``torch.load(weights_only=True)``
reads it: loading a checkpoint never runs code from it, and a file that asks to (a pickled
``posix.system``) is refused as "not a checkpoint written by mlm-train", never with torch's
advice to load it unsafely. The bytes are built in memory and published with
``storage.write_bytes`` (temp file + rename locally, one PUT on object stores), so a name under
``checkpoints/`` always holds a complete checkpoint, and older ones are deleted only after the
new one is in place.

``--resume`` reads ``resume_point``: it removes temporary files a killed writer left behind,
and when the newest checkpoint is damaged (checksum mismatch, truncated) it says so in one
line and resumes from the newest intact one. Checkpoints of format 1, written before
checkpoints carried a checksum, are still read, with a one-line notice: refusing them would
strand every earlier run, and the safe unpickler still guards them against running code; only
silent damage goes unnoticed in them, as it always did.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections import OrderedDict
from typing import Any

import torch

from mlm_data import storage
from mlm_data.dataset.schema import SCHEMA_VERSION
from mlm_data.errors import MARKER, MlmDataError

FORMAT = "mlm-train-checkpoint"
FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (1, 2)
#: The first format whose files carry ``sha256``.
CHECKSUM_SINCE = 2
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"step-(\d{8,})\.pt")
log = logging.getLogger(__name__)


class CheckpointError(MlmDataError):
    """A checkpoint is missing, unreadable or of a format this trainer does not know."""


class DamagedCheckpoint(CheckpointError):
    """A file under a checkpoint's name that is not an intact checkpoint: truncated, changed
    since it was written, or not written by mlm-train at all."""


def checkpoint_url(run: str, step: int) -> str:
    return storage.join(run, CHECKPOINT_DIR, f"step-{step:08d}.pt")


def build_state(*, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                loader: dict[str, Any], config: dict[str, Any],
                dataset: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "loader": loader,
        "config": config,
        "dataset": dataset,
        "dataset_schema_version": SCHEMA_VERSION,
        "torch_version": str(torch.__version__),  # a str subclass the safe unpickler refuses
    }


def save(run: str, state: dict[str, Any], *, keep_last: int) -> str:
    """Publish ``state`` with its checksum as the checkpoint of its step, then delete the older
    ones beyond the newest ``keep_last``. Newer ones (a damaged checkpoint a resume skipped) are
    left alone: the run overwrites them when it gets there."""
    _check_plain(state, "state")
    state = {**state, "sha256": content_sha256(state)}
    buf = io.BytesIO()
    torch.save(state, buf)
    url = checkpoint_url(run, state["step"])
    storage.write_bytes(url, buf.getvalue())
    older = [old for step, old in list_checkpoints(run) if step < state["step"]]
    for old in older[:max(0, len(older) - (keep_last - 1))]:
        storage.remove(old)
    return url


def content_sha256(state: dict[str, Any]) -> str:
    """sha256 of everything in ``state`` but its ``sha256`` entry: every key and value in
    order, tensors by dtype, shape and bytes, so any changed bit changes it.

    It hashes the contents rather than the file's bytes so that the checksum travels inside
    the one file a plain ``torch.load`` still reads.
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != "sha256"})
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    else:  # str, int, float, bool, None: the type's name keeps 1, 1.0, True and "1" apart
        text = repr(obj).encode()
        h.update(f"{type(obj).__name__}{len(text)}:".encode() + text)


_PLAIN = (torch.Tensor, int, float, str, bool, type(None))


def _check_plain(obj: Any, path: str) -> None:
    """Fail at save time, not at resume time, if something the safe unpickler refuses slipped
    in (a numpy scalar in a loader state, a ``TorchVersion``): exact types only, since
    subclasses of ``str`` or ``int`` are refused too."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN:
        return
    if type(obj) in (dict, OrderedDict):
        for k, v in obj.items():
            _check_plain(k, f"{path} key")
            _check_plain(v, f"{path}[{k!r}]")
    elif type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{path}[{i}]")
    else:
        raise TypeError(f"checkpoint {path} is a {type(obj).__module__}.{type(obj).__qualname__}; "
                        "torch.load(weights_only=True) could not read it back")


def list_checkpoints(run: str) -> list[tuple[int, str]]:
    """``(step, url)`` of every complete checkpoint of ``run``, oldest first.

    Only exact ``step-NNNNNNNN.pt`` names count: a temporary file left by a crash mid-write
    (``.tmp-…``) is never mistaken for a checkpoint.
    """
    found = []
    for rel in storage.list_files(storage.join(run, CHECKPOINT_DIR)):
        m = _NAME.fullmatch(rel)
        if m:
            found.append((int(m.group(1)), storage.join(run, CHECKPOINT_DIR, rel)))
    return sorted(found)


def load(url: str) -> dict[str, Any]:
    """Read a checkpoint (tensors on the CPU), verify its checksum and check that it is one this
    trainer can resume. A damaged or foreign file raises ``DamagedCheckpoint``."""
    try:
        raw = storage.read_bytes(url)
    except FileNotFoundError:
        raise CheckpointError(f"{url}: checkpoint not found") from None
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ValueError or EOFError by damage type
        raise DamagedCheckpoint(f"{url}: {_unreadable(e, len(raw))}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DamagedCheckpoint(f"{url}: not an {FORMAT} file")
    version = state.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise CheckpointError(f"{url}: checkpoint format version {version!r} is not supported (this trainer "
                              f"reads {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); use the mlm-train that "
                              "wrote it, or a newer one")
    if version >= CHECKSUM_SINCE:
        recorded, actual = state.get("sha256"), content_sha256(state)
        if recorded != actual:
            raise DamagedCheckpoint(f"{url}: checksum mismatch (the contents hash to {actual[:12]}…, the file "
                                    f"records {str(recorded)[:12]}…): the file changed after it was written")
    else:
        log.warning("%s: written before checkpoints carried a checksum (format %s); loaded unverified", url, version)
    return state


def _unreadable(e: Exception, size: int) -> str:
    """What a failed ``torch.load`` found, in our words: never torch's advice to retry with
    ``weights_only=False``, which would run whatever code the file holds."""
    text = str(e)
    unsafe = re.search(r"GLOBAL ([\w.]+)", text)
    if unsafe:
        return (f"unsupported global {unsafe.group(1)}: this file is not a checkpoint written by mlm-train; "
                "refusing to load it")
    if "WeightsUnpickler" in text or "Weights only load failed" in text:
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        found = f" ({detail.group(1).strip()})" if detail else ""
        return (f"holds data the safe unpickler does not read{found}: this file is not a checkpoint written "
                "by mlm-train; refusing to load it")
    return (f"truncated or damaged: not a complete checkpoint archive ({size:,} bytes; "
            f"{type(e).__name__} while reading it)")


def load_latest(run: str) -> dict[str, Any]:
    """The newest checkpoint of ``run`` (refused if damaged: see ``resume_point``)."""
    found = list_checkpoints(run)
    if not found:
        raise CheckpointError(f"{run}: no checkpoints to resume from (looked in {storage.join(run, CHECKPOINT_DIR)})")
    return load(found[-1][1])


def resume_point(run: str) -> dict[str, Any]:
    """The newest intact checkpoint of ``run``, to continue from.

    First removes the temporary files of checkpoint writes that were killed (never one a live
    process is still writing). A damaged newer checkpoint is named in one line and skipped,
    and the line after says which one the run resumes from instead.
    """
    for name in storage.remove_abandoned_temporaries(storage.join(run, CHECKPOINT_DIR)):
        log.warning("%s: removed %s, left by a checkpoint write that was killed", run, name)
    found = list_checkpoints(run)
    if not found:
        raise CheckpointError(f"{run}: no checkpoints to resume from (looked in {storage.join(run, CHECKPOINT_DIR)})")
    skipped = []
    for _, url in reversed(found):
        try:
            state = load(url)
        except DamagedCheckpoint as e:
            log.warning("%s", str(e).removeprefix(MARKER))
            skipped.append(url)
            continue
        if skipped:
            log.warning("%s: resuming from %s, the newest intact checkpoint", run, url.rsplit("/", 1)[-1])
        return state
    raise CheckpointError(f"{run}: none of its {len(found)} checkpoint(s) is intact (see above); start the run "
                          "again with --overwrite")


def tokenizer_text(state: dict[str, Any], url: str) -> str:
    """The tokenizer file at ``url`` (the run folder's copy, or one a user names), refused
    unless it is the one the checkpoint's model was trained with (checkpoints record its
    sha256; those that do not are not checked)."""
    from mlm_data.text.tokenizer import read_tokenizer_text

    recorded = ((state.get("dataset") or {}).get("tokenizer") or {}).get("sha256")
    return read_tokenizer_text(url, sha256=recorded, recorded_by="the checkpoint",
                               fix="use the tokenizer the model was trained with: the run folder's tokenizer.json, or "
                                   "the tokenizer-<hash>.json of its dataset")


def load_path(path: str) -> tuple[dict[str, Any], str]:
    """A checkpoint named by a ``.pt`` file or by its run folder (the newest one), and the run
    folder it belongs to (where its config.yaml and tokenizer.json are)."""
    if path.endswith(".pt"):
        parent = path.rstrip("/").rsplit("/", 1)[0] if "/" in path else "."
        head, _, name = parent.rpartition("/")
        return load(path), (head or ".") if name == CHECKPOINT_DIR else parent
    return load_latest(path), path
