"""Documents as the quality stages see them: cleaned exactly as ``CleanAndSplit`` will clean them."""

from __future__ import annotations

from mlm_data.config.preprocess import CleanConfig
from mlm_data.text.cleaning import clean_text


def cleaned_text(text: str, clean: CleanConfig) -> str | None:
    """``text`` as ``CleanAndSplit`` cleans it, or None if cleaning will drop it (empty, too
    short or too long), in which case it is left for that stage to count."""
    out = clean_text(text, normalization=clean.unicode_normalization, remove_control_chars=clean.remove_control_chars)
    if not out.strip() or not clean.min_document_chars <= len(out) <= clean.max_document_chars:
        return None
    return out
