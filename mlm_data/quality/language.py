"""Language identification without downloads: py3langid, whose model ships inside the wheel.

py3langid is an optional dependency (the ``quality`` extra). Enabling ``filters.languages``
without it installed is a configuration error, raised before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _load_module() -> Any:
    try:
        from py3langid import langid
    except ImportError:
        return None
    return langid


def language_problems(languages: Sequence[str]) -> list[str]:
    """Config problems of ``filters.languages``: the detector missing, or codes it does not know."""
    langid = _load_module()
    if langid is None:
        return ["languages: needs the py3langid package, which is not installed; "
                "pip install 'mlm-data[quality]' (or py3langid), or remove filters.languages"]
    known = set(_known_languages())
    unknown = [code for code in languages if code not in known]
    if unknown:
        return [f"languages: unknown language code(s) {', '.join(map(repr, unknown))}; py3langid knows "
                f"{len(known)} ISO 639-1 codes such as 'en', 'de', 'fr', 'zh'"]
    return []


_KNOWN: list[str] = []


def _known_languages() -> list[str]:
    if not _KNOWN:
        _KNOWN.extend(LanguageDetector().labels)
    return _KNOWN


class LanguageDetector:
    """Most likely language and its probability, from the start of a text.

    Loading the model takes about 2 s (it is xz-compressed in the package): build one per
    worker, in ``DoFn.setup``.
    """

    def __init__(self) -> None:
        langid = _load_module()
        self._identifier = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)

    @property
    def labels(self) -> list[str]:
        return list(self._identifier.labels)

    def detect(self, text: str) -> tuple[str, float]:
        """The language code and its probability for ``text``.

        >>> LanguageDetector().detect("Der schnelle braune Fuchs springt über den faulen Hund")[0]
        'de'
        """
        lang, prob = self._identifier.classify(text)
        return str(lang), float(prob)
