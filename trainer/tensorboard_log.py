"""TensorBoard event files beside ``metrics.jsonl``: the same records, as scalars.

Each record's numbers go under ``<split>/<key>`` at the record's step: ``train/loss``,
``train/mlm_accuracy``, ``train/lr``, ``train/tokens_per_s``, ``train/grad_norm``, ... and
``validation/mlm_loss``, ``validation/perplexity``, ... for evaluations, so ``tensorboard
--logdir RUN`` (or the folder holding several runs) draws the curves ``mlm-train plot`` draws.

A resumed run opens a new event file that tells TensorBoard to drop what earlier files logged
after the checkpoint (``purge_step``), so the curves read as if the run had never stopped, as
metrics.jsonl does. In a local run folder the file is written in place; on an object store,
which has no append, it is written to a local temporary folder and uploaded whole at every
flush (evaluations, checkpoints, the end), like metrics.jsonl.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs

from mlm_data import storage
from mlm_data.errors import ConfigError

#: Record keys that are coordinates, not curves.
_NOT_SCALARS = frozenset({"step", "split"})


def wanted(setting: bool | None) -> bool:
    """``train.tensorboard`` resolved: null means "when the tensorboard package is installed"."""
    installed = importlib.util.find_spec("tensorboard") is not None
    if setting and not installed:
        raise ConfigError("train.tensorboard: true, but the tensorboard package is not installed; install it "
                          "(pip install tensorboard, or the mlm-data[train] extra) or set train.tensorboard: false")
    return installed if setting is None else setting


class TensorBoardLog:
    """The run's event file, written by rank 0 only (``enabled=False`` on the others)."""

    def __init__(self, run: str, *, resume_step: int | None, enabled: bool = True) -> None:
        self.run = run
        self.enabled = enabled
        self.local = storage.is_local(run)
        self._writer: Any = None
        self._scratch: str | None = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        if self.local:
            log_dir = url_to_fs(run)[1]
        else:
            log_dir = self._scratch = tempfile.mkdtemp(prefix="mlm-train-tensorboard-")
        purge = None if resume_step is None else resume_step + 1
        self._writer = SummaryWriter(log_dir=log_dir, purge_step=purge, flush_secs=30)

    def append(self, record: dict[str, Any]) -> None:
        if self._writer is None:
            return
        split, step = record["split"], record["step"]
        for key, value in record.items():
            if key not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{split}/{key}", value, global_step=step)

    def flush(self) -> None:
        if self._writer is None:
            return
        self._writer.flush()
        if self._scratch is not None:
            for path in Path(self._scratch).iterdir():
                storage.write_bytes(storage.join(self.run, path.name), path.read_bytes())

    def close(self) -> None:
        if self._writer is None:
            return
        self.flush()
        self._writer.close()
        self._writer = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
