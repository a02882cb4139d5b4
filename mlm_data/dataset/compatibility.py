"""Are these datasets made alike? One answer, worded one way, for every place that asks.

Four places put the question, each with its own strictness:

* mixing datasets into one training stream (``MIX``): a batch holds rows of each, so they need
  one tokenizer, one batch layout, one masking mode and one label list;
* evaluating on other datasets (``EVALUATE``): scores compare like with like only for the same
  task, tokenizer and labels;
* resuming a run (``RESUME``): the datasets must be made like the ones the checkpoint was
  trained on (its ``dataset`` record), or the weights would be fed other ids or labels;
* starting from trained weights (``INIT``): token ids must mean the same tokens.

``check_alike`` compares each dataset with a reference and raises one ``ConfigError`` listing
every difference, each in the same words wherever it was found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlm_data.dataset.manifest import Manifest
from mlm_data.errors import ConfigError

#: Tasks whose batches share one layout and may be mixed; any other task mixes only with itself.
_LAYOUT = {"mlm_fullsent": "packed_mlm", "mlm_docsent": "packed_mlm"}


@dataclass(frozen=True)
class Made:
    """How a dataset was made, as far as datasets read together must agree on it.

    ``None`` means "not recorded" (an older checkpoint, weights from elsewhere): it is never a
    difference.
    """

    where: str
    """What to call it in a message: the dataset's path or URL, or what recorded it."""
    task: str | None
    tokenizer_sha256: str | None
    labels: tuple[str, ...] | None
    static_masking: bool | None = None

    @classmethod
    def of(cls, manifest: Manifest) -> Made:
        labels = manifest.labels
        return cls(manifest.root, manifest.task, _text(manifest.tokenizer.get("sha256")),
                   tuple(labels) if labels is not None else None, manifest.static_masking)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, where: str) -> Made:
        """From the ``dataset`` record a checkpoint keeps: ``task``, ``labels`` and ``tokenizer``."""
        labels = record.get("labels")
        return cls(where, record.get("task"), _text((record.get("tokenizer") or {}).get("sha256")),
                   tuple(labels) if labels is not None else None)


@dataclass(frozen=True)
class Purpose:
    heading: str
    """The first line of the error: what cannot be done, and why."""
    aspects: tuple[str, ...]
    """What must agree, among ``task``, ``layout``, ``tokenizer``, ``static_masking``, ``labels``."""
    fix: str
    """The last line: what to do; ``{reference}`` is replaced by the reference's ``where``."""


MIX = Purpose("cannot mix these datasets: a batch holds rows of each, so they must share a tokenizer, a batch layout, "
              "a masking mode and labels", ("tokenizer", "layout", "static_masking", "labels"),
              "mix datasets preprocessed with the same tokenizer.json and config (labelled ones with "
              "`--labels-from {reference}`)")
EVALUATE = Purpose("--eval-data must be made like --data (same task, tokenizer and labels), or the scores compare "
                   "unlike things", ("task", "tokenizer", "labels"),
                   "preprocess it with the training data's tokenizer.json and config (labelled data with "
                   "`mlm-data preprocess ... --labels-from {reference}`)")
RESUME = Purpose("cannot resume on these datasets: they are not made like the data the checkpoint was trained on",
                 ("task", "tokenizer", "labels"),
                 "resume with that data (at any path), or start a new run (another --output, or --overwrite)")
INIT = Purpose("--init: the weights were trained with another tokenizer, so the token ids would mean other tokens",
               ("tokenizer",), "preprocess the dataset with the init's tokenizer (its run folder's tokenizer.json)")


def differences(reference: Made, other: Made, aspects: Sequence[str]) -> list[str]:
    """Each way ``other`` is not made like ``reference``, one phrase each (empty when alike).

    >>> a = Made("out/a", "mlm_fullsent", "ab" * 32, None, False)
    >>> differences(a, Made("out/b", "mlm_docsent", "ab" * 32, None, True), ("layout", "static_masking"))
    ['out/b is statically masked, out/a is not']
    """
    ref, o = reference, other
    found = []
    for aspect in aspects:
        if aspect in ("task", "layout"):
            if ref.task is None or o.task is None:
                continue
            same = o.task == ref.task if aspect == "task" else _LAYOUT.get(o.task, o.task) == _LAYOUT.get(ref.task,
                                                                                                         ref.task)
            if not same:
                found.append(f"{o.where} has task {o.task!r}, {ref.where} has {ref.task!r}"
                             + (" (only mlm_fullsent and mlm_docsent share a batch layout)" if aspect == "layout"
                                else ""))
        elif aspect == "tokenizer":
            if ref.tokenizer_sha256 and o.tokenizer_sha256 and o.tokenizer_sha256 != ref.tokenizer_sha256:
                found.append(f"{o.where} was tokenized with sha256 {_short(o.tokenizer_sha256)}, {ref.where} with "
                             f"{_short(ref.tokenizer_sha256)}")
        elif aspect == "static_masking":
            if ref.static_masking is not None and o.static_masking is not None \
                    and o.static_masking != ref.static_masking:
                masked, plain = (o, ref) if o.static_masking else (ref, o)
                found.append(f"{masked.where} is statically masked, {plain.where} is not")
        elif aspect == "labels":
            if o.labels != ref.labels:
                found.append(f"{o.where} has labels {_labels(o.labels)}, {ref.where} has {_labels(ref.labels)}")
        else:
            raise ValueError(f"unknown aspect {aspect!r}")
    return found


def check_alike(reference: Made, others: Sequence[Made], *, purpose: Purpose) -> None:
    """Raise one ``ConfigError`` listing every difference of ``others`` from ``reference``."""
    problems = [p for other in others for p in differences(reference, other, purpose.aspects)]
    if problems:
        raise ConfigError(f"{purpose.heading}:\n" + "".join(f"  - {p}\n" for p in problems)
                          + f"  {purpose.fix.format(reference=reference.where)}")


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _short(sha: str) -> str:
    return f"{sha[:12]}…"


def _labels(labels: Sequence[str] | None) -> str:
    if labels is None:
        return "none"
    return f"[{', '.join(labels[:6])}{', …' if len(labels) > 6 else ''}] ({len(labels)})"
