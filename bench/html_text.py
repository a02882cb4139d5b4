"""Documentation text the re-sampled corpora never saw: Debian doc packages' HTML as plain text.

``debian_documentation()`` installs a few documentation packages with apt-get when they are
missing (needs root and Debian's package servers; otherwise it returns nothing and the caller
falls back) and turns each HTML page into one document: one paragraph per line, code blocks,
scripts, styles and navigation dropped, as the shared corpora were made.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

#: Packages of English technical prose, ~60 MB of text together.
PACKAGES = ("postgresql-doc-15", "python-sympy-doc", "python-astropy-doc", "gimp-help-en", "python-scipy-doc",
            "python-pandas-doc", "octave-doc")

_BLOCKS = frozenset({"p", "div", "li", "dt", "dd", "td", "th", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                     "br", "section", "article", "table", "blockquote", "ul", "ol", "dl", "figcaption", "title"})
_SKIPPED = frozenset({"script", "style", "pre", "head", "nav", "footer", "noscript", "svg", "math"})
_SPACES = re.compile(r"\s+")


class _PageText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._current: list[str] = []
        self._skipping = 0

    def _end_paragraph(self) -> None:
        text = _SPACES.sub(" ", "".join(self._current)).strip()
        if text:
            self.paragraphs.append(text)
        self._current = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIPPED:
            self._skipping += 1
        elif tag in _BLOCKS:
            self._end_paragraph()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCKS:
            self._end_paragraph()

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self._current.append(data)


def html_to_text(html: str) -> str:
    """One paragraph per line; paragraphs of fewer than four words (menus, labels) dropped."""
    parser = _PageText()
    parser.feed(html)
    parser.close()
    parser._end_paragraph()
    return "\n".join(p for p in parser.paragraphs if len(p.split()) >= 4)


def _installed(package: str) -> bool:
    return subprocess.run(["dpkg", "-s", package], capture_output=True).returncode == 0


def _install(packages: list[str]) -> None:
    if not packages or shutil.which("apt-get") is None or os.geteuid() != 0:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                   capture_output=True, env=env)


def _html_files(package: str) -> list[Path]:
    res = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    return sorted(Path(p) for p in res.stdout.splitlines() if p.endswith((".html", ".html.gz")) and Path(p).is_file())


def debian_documentation() -> tuple[list[str], str]:
    """Pages of ``PACKAGES`` as text, and a description of the source; ``[]`` if none can be had."""
    if shutil.which("dpkg") is None:
        return [], ""
    _install([p for p in PACKAGES if not _installed(p)])
    present = [p for p in PACKAGES if _installed(p)]
    pages: list[str] = []
    for package in present:
        for path in _html_files(package):
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            if text := html_to_text(raw.decode("utf-8", errors="replace")):
                pages.append(text)
    return pages, f"Debian packages {', '.join(present)}"
