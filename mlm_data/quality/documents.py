"""Cleaning as one rule for every stage that reads document text: ``CleanAndSplit`` and the
quality stages before it (filters, near-dedup) clean and length-check a document the same
way. When a quality stage runs, it cleans each document once and hands the batch on marked
``Batch.cleaned``; later stages then only check lengths. ``clean_text`` is a fixed point, so
the dataset is byte for byte the one cleaning again would give (tested)."""

from __future__ import annotations

from mlm_data import accounting
from mlm_data.config.preprocess import CleanConfig
from mlm_data.text.cleaning import clean_text


def clean(text: str, cfg: CleanConfig) -> str:
    return clean_text(text, normalization=cfg.unicode_normalization, remove_control_chars=cfg.remove_control_chars)


def cleaning_drop(text: str, cfg: CleanConfig) -> str | None:
    """Why a cleaned text is dropped (``empty``, too short, too long), or None if it is kept."""
    if not text.strip():
        return accounting.EMPTY
    if len(text) < cfg.min_document_chars:
        return accounting.DOCUMENT_TOO_SHORT
    if len(text) > cfg.max_document_chars:
        return accounting.DOCUMENT_TOO_LONG
    return None


def cleaned_text(text: str, cfg: CleanConfig, *, already_clean: bool = False) -> str | None:
    """``text`` as ``CleanAndSplit`` cleans it, or None if cleaning will drop it, in which case
    it is left for that stage to count."""
    out = text if already_clean else clean(text, cfg)
    return None if cleaning_drop(out, cfg) else out
