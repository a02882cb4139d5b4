"""Where the benchmarks find the shared material (real corpora, the BERT uncased tokenizer).

``$MLM_SHARED`` if set, else a ``shared/`` folder beside the checkout or above it (a git
worktree sits one level deeper). Every bench script asks here, so one variable moves them all.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: The test vocabulary, for machines without the shared material.
SMALL_TOKENIZER = REPO / "tests" / "data" / "wordpiece-2k.json"


def shared_dir() -> Path:
    """The shared folder (it may not exist: callers check the files they need)."""
    if os.environ.get("MLM_SHARED"):
        return Path(os.environ["MLM_SHARED"])
    for parent in REPO.parents:
        if (parent / "shared" / "corpora").is_dir():
            return parent / "shared"
    return REPO.parent / "shared"


SHARED = shared_dir()
BERT_TOKENIZER = SHARED / "tokenizers" / "bert-base-uncased.tokenizer.json"


def default_tokenizer() -> Path:
    """The real BERT uncased tokenizer where the shared material is, else the test vocabulary."""
    return BERT_TOKENIZER if BERT_TOKENIZER.exists() else SMALL_TOKENIZER
