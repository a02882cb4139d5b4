"""What a training step feeds the network, made on the host from the loader's batch.

The loader's batches are CPU tensors (page-locked when the device is a GPU). Everything here
is computed from them, with numpy (an order of magnitude cheaper than torch's CPU kernels at
these sizes), before they are copied to the device, so the step never asks the device
for a number: such a read makes the host wait until the device has run everything queued
before it (a "sync"), and the device then idles while the host prepares the next kernels.

Three layouts, by the ``train`` options:

* plain: the batch's model inputs as they are. An MLM model picks the labelled positions with
  a boolean index, whose size the host must read back from the device: one sync per micro-step.
* fixed predictions (``sync_free``, implied by ``static_shapes`` and ``unpad``):
  ``mlm_positions``, the flat indices of the labelled positions, padded to a capacity ``K``
  with index 0, and ``mlm_targets``, their labels with -100 on the padding. ``K`` is an upper
  bound of what token-level masking picks (``prediction_capacity``), so with a fixed
  sequence length every step has the same shapes; a batch with more labels (whole-word or
  span masking can exceed the bound by a word) gets a larger ``K``, never a dropped label.
* packed (``unpad``): the real tokens of all rows one after another (``trainer.models.unpadded``),
  with predictions indexed into them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mlm_data.config.preprocess import MaskingConfig
from mlm_data.dataset.schema import IGNORE_INDEX
from trainer.evaluation.language_model import MODEL_INPUTS
from trainer.models.unpadded import Packing

#: Prediction counts beyond the capacity are rounded up to a multiple of this.
_GROW = 64


def prediction_capacity(rows: int, width: int, masking: MaskingConfig) -> int:
    """An upper bound of the positions token-level masking labels in ``rows`` rows of
    ``width`` tokens (``mlm_data.masking.num_to_mask`` per row), rounded up to a multiple of 8.

    >>> prediction_capacity(256, 128, MaskingConfig())  # ceil(0.15 * 128) = 20 per row
    5120
    """
    per_row = max(1, math.ceil(masking.probability * width))
    if masking.max_predictions is not None:
        per_row = min(per_row, masking.max_predictions)
    return _round_up(rows * per_row, 8)


class StepInputs:
    """Turns a loader batch into ``(model inputs on the device, real tokens in it)``."""

    def __init__(self, device: torch.device, *, masking: MaskingConfig | None, sync_free: bool = False,
                 unpad: bool = False) -> None:
        """``masking`` sizes the prediction capacity: the loader's dynamic masking. Without it
        (rows read as stored, statically masked datasets) the default rate does; a batch with
        more labels only grows the capacity."""
        self.device = device
        self.masking = masking or MaskingConfig()
        self.sync_free = sync_free or unpad
        self.unpad = unpad
        # Copies from page-locked memory run asynchronously; tensors made here are pinned first.
        self.pin = device.type == "cuda"

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], int]:
        if self.unpad:
            inputs, tokens = self._packed(batch)
        else:
            inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
            tokens = int(np.count_nonzero(batch["attention_mask"].numpy()))
            if self.sync_free and "labels" in inputs:
                labels = inputs.pop("labels")
                inputs["mlm_positions"], inputs["mlm_targets"] = self._predictions(labels.numpy().reshape(-1),
                                                                                   *labels.shape)
        return {k: self._to_device(v) for k, v in inputs.items()}, tokens

    def _predictions(self, labels: np.ndarray, rows: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(K,)`` indices of the labelled entries of the flat ``labels`` and their targets."""
        where = np.flatnonzero(labels != IGNORE_INDEX)  # (n,)
        n = where.size
        capacity = prediction_capacity(rows, width, self.masking)
        if n > capacity:
            capacity = _round_up(n, _GROW)
        positions = np.zeros(capacity, dtype=np.int64)
        positions[:n] = where
        targets = np.full(capacity, IGNORE_INDEX, dtype=np.int64)
        targets[:n] = labels[where]
        return torch.from_numpy(positions), torch.from_numpy(targets)

    def _packed(self, batch: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], int]:
        mask = batch["attention_mask"].numpy().astype(bool, copy=False)  # (B, T)
        B, T = mask.shape
        lengths = np.count_nonzero(mask, axis=1)  # (B,)
        if lengths.min() < 1:
            raise ValueError("train.unpad: a batch row has no tokens; packed rows must be non-empty")
        index = np.flatnonzero(mask)  # (N,) flat positions of the real tokens
        offsets = np.zeros(B + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])

        def packed(key: str) -> torch.Tensor:
            return torch.from_numpy(batch[key].numpy().reshape(-1)[index])  # (N,)

        inputs: dict[str, Any] = {"input_ids": packed("input_ids")}
        if "token_type_ids" in batch:
            inputs["token_type_ids"] = packed("token_type_ids")
        if "next_sentence_label" in batch:
            inputs["next_sentence_label"] = batch["next_sentence_label"]
        if "labels" in batch:
            inputs["mlm_positions"], inputs["mlm_targets"] = self._predictions(
                batch["labels"].numpy().reshape(-1)[index], B, T)
        # Rows are right-padded, so a token's column is its position in its row.
        positions = torch.from_numpy(index % T)
        inputs["packing"] = Packing(torch.from_numpy(offsets), positions, int(lengths.max()), int(lengths.min()))
        return inputs, index.size

    def _to_device(self, value: Any) -> Any:
        if isinstance(value, Packing):
            return value._replace(offsets=self._to_device(value.offsets), positions=self._to_device(value.positions))
        if self.pin and not value.is_pinned():
            value = value.pin_memory()
        return value.to(self.device, non_blocking=True)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
