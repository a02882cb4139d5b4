"""Checkpoints: plain dicts of tensors and Python values, published atomically to any fsspec URL.

A checkpoint is ``RUN/checkpoints/step-00001000.pt`` holding::

    format, format_version     what this file is, so an unrelated .pt is refused clearly
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
reads it: loading a checkpoint never runs code from it. The bytes are built in memory and
published with ``storage.write_bytes`` (temp file + rename locally, one PUT on object stores),
so a name under ``checkpoints/`` always holds a complete checkpoint, and older ones are deleted
only after the new one is in place.
"""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from typing import Any

import torch

from mlm_data import storage
from mlm_data.dataset.schema import SCHEMA_VERSION
from mlm_data.errors import MlmDataError

FORMAT = "mlm-train-checkpoint"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"step-(\d{8,})\.pt")


class CheckpointError(MlmDataError):
    """A checkpoint is missing, unreadable or of a format this trainer does not know."""


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
    """Publish ``state`` as the checkpoint of its step, then delete all but the newest ``keep_last``."""
    _check_plain(state, "state")
    buf = io.BytesIO()
    torch.save(state, buf)
    url = checkpoint_url(run, state["step"])
    storage.write_bytes(url, buf.getvalue())
    for _, old in list_checkpoints(run)[:-keep_last]:
        storage.remove(old)
    return url


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
    """Read a checkpoint (tensors on the CPU) and check that it is one this trainer can resume."""
    try:
        raw = storage.read_bytes(url)
    except FileNotFoundError:
        raise CheckpointError(f"{url}: checkpoint not found") from None
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError or EOFError by damage type
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or ["truncated"]
        reason = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")), lines[0])
        raise CheckpointError(f"{url}: not a readable checkpoint ({type(e).__name__}: {reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{url}: not an {FORMAT} file")
    if state.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
        raise CheckpointError(f"{url}: checkpoint format version {state.get('format_version')!r} is not "
                              f"supported (this trainer reads {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})")
    return state


def load_latest(run: str) -> dict[str, Any]:
    """The newest complete checkpoint of ``run``."""
    found = list_checkpoints(run)
    if not found:
        raise CheckpointError(f"{run}: no checkpoints to resume from (looked in {storage.join(run, CHECKPOINT_DIR)})")
    return load(found[-1][1])


def load_path(path: str) -> tuple[dict[str, Any], str]:
    """A checkpoint named by a ``.pt`` file or by its run folder (the newest one), and the run
    folder it belongs to (where its config.yaml and tokenizer.json are)."""
    if path.endswith(".pt"):
        parent = path.rstrip("/").rsplit("/", 1)[0] if "/" in path else "."
        head, _, name = parent.rpartition("/")
        return load(path), (head or ".") if name == CHECKPOINT_DIR else parent
    return load_latest(path), path
