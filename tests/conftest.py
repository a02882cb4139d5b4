"""Shared fixtures: a small real corpus, the test tokenizer, a one-call preprocess helper, and
the small per-task datasets the loader tests read."""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent
#: A 2,000-entry WordPiece vocabulary trained by `mlm-data train-tokenizer` on the demo corpus.
TOKENIZER = DATA / "wordpiece-2k.json"
DEMO_CORPUS = REPO / "mlm_data" / "demo" / "python-docs-sample.txt.gz"
#: Optional shared material (real corpora, a real BERT vocabulary; never required): $MLM_SHARED,
#: or a shared/ folder beside the checkout or above it (a git worktree), as bench/shared.py finds it.
SHARED = next((p for p in [*([Path(os.environ["MLM_SHARED"])] if os.environ.get("MLM_SHARED") else []),
                           *(q / "shared" for q in REPO.resolve().parents)] if (p / "corpora").is_dir()),
              REPO.parent / "shared")
SHARED_BERT = SHARED / "tokenizers" / "bert-base-uncased.tokenizer.json"


def demo_documents(n: int, *, start: int = 0) -> list[str]:
    """The first ``n`` documents (pages) of the bundled corpus, blank-line separated text each."""
    with gzip.open(DEMO_CORPUS, "rt", encoding="utf-8") as f:
        docs = [d for d in f.read().split("\n\n") if d.strip()]
    return docs[start:start + n]


def write_corpus(root: Path, docs_per_file: Sequence[Sequence[str]], *, names: Sequence[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, docs in enumerate(docs_per_file):
        name = names[i] if names else f"part-{i}.txt"
        data = ("\n\n".join(docs) + "\n").encode("utf-8")
        path = root / name
        if name.endswith(".gz"):
            with gzip.GzipFile(path, "wb", mtime=0) as f:
                f.write(data)
        else:
            path.write_bytes(data)
    return root


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three files (one gzipped) holding 60 real documentation pages."""
    docs = demo_documents(60)
    root = tmp_path_factory.mktemp("corpus")
    return write_corpus(root, [docs[:25], docs[25:45], docs[45:]], names=["a.txt", "b.txt.gz", "c.txt"])


@pytest.fixture(scope="session")
def preprocess() -> Callable[..., Any]:
    """``preprocess(inputs, output, beam_args=(), **{'section.field': value})`` → Manifest."""
    from mlm_data.config.loading import load
    from mlm_data.config.preprocess import PreprocessConfig
    from pipelines.preprocess import run

    def _run(inputs: Sequence[str] | str, output: Path | str, *, beam_args: Sequence[str] = (),
             config: str | None = None, **fields: Any) -> Any:
        extra: dict[str, Any] = {
            "input.paths": [inputs] if isinstance(inputs, str) else list(inputs),
            "output.path": str(output),
            "tokenizer.path": str(TOKENIZER),
        }
        extra.update({k.replace("__", "."): v for k, v in fields.items()})
        cfg = load(PreprocessConfig, config, settings=extra)
        return run(cfg, beam_args=list(beam_args), echo=lambda _msg: None)

    return _run


def _loader_dataset(name: str) -> Any:
    @pytest.fixture(scope="session", name=name)
    def fixture(tmp_path_factory: pytest.TempPathFactory, preprocess: Callable[..., Any]) -> Path:
        from test_loader_support import dataset

        return dataset(name, tmp_path_factory, preprocess)

    fixture.__doc__ = f"The small {name!r} dataset of test_loader_support.DATASETS, built once per session."
    return fixture


nsp, fullsent, docsent, causal, static = map(_loader_dataset, ("nsp", "fullsent", "docsent", "causal", "static"))


@pytest.fixture(scope="module")
def dask_scheduler() -> Iterator[str]:
    """A ``LocalCluster`` of two single-threaded worker processes; its scheduler's address.

    Workers are forked rather than spawned: a spawned worker spends 5-15 s on this machine
    importing Beam before it runs anything, a forked one starts with it imported. They are still
    separate processes that receive every DoFn pickled, which is what this test is about (fresh
    interpreters are covered by the multi-processing DirectRunner test).
    """
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    quiet = ("distributed", "apache_beam.runners.dask", "apache_beam.options.pipeline_options")
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
        try:
            yield cluster.scheduler_address
        finally:
            # DaskRunner opens a Client it never closes; close it before the cluster goes.
            for client in list(distributed.client._global_clients.values()):
                client.close()
            cluster.close()
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
