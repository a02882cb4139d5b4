"""One timed pass in a fresh process, for ``bench/scale.py``; and the process-tree memory probe.

Run by the driver, never by hand:
  python bench/scale_runs.py raw TXT_DIR TOKENIZER
      ``Tokenizer.encode_batch`` (its own threads: both cores here) over every paragraph of
      the corpus in batches of 1,024, text loaded before the clock starts
  python bench/scale_runs.py construction N_FILES SCRATCH TOKENIZER
      ``run`` over N one-document files on a runner that only records the graph: seconds
      from the call to the graph being handed to the runner, and the graph's size
  python bench/scale_runs.py pipeline INPUT OUTPUT TOKENIZER [--dask-workers N] [BEAM_ARGS...]
      ``pipelines.preprocess.run`` with the default config (BERT pairs) from pipeline
      construction to manifest; with ``--dask-workers`` on Beam's DaskRunner over a
      ``LocalCluster`` of that many single-threaded worker processes started first
Each prints one JSON line: seconds, plus tokens (raw) or the process's own peak RSS (pipeline).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [p for p in (str(HERE), str(REPO)) if p not in sys.path]

from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState  # noqa: E402

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def own_peak_kib() -> int:
    """VmHWM of this process (not ru_maxrss, which Linux carries over fork + exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except OSError:
        return 0


class TreePeak:
    """Samples the summed RSS of a process and all its descendants every ``interval`` s.

    Catches the memory of runner worker processes (multi-processing, Dask) that a single
    process's VmHWM misses; a spike shorter than the interval can slip through, so the driver
    also takes the main process's own VmHWM, which cannot.
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval, self.peak_kib = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            tree, todo = [], [self.pid]
            while todo:
                pid = todo.pop()
                tree.append(pid)
                todo += _children(pid)
            self.peak_kib = max(self.peak_kib, sum(map(_rss_kib, tree)))
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kib


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def raw_pass(txt_dir: Path, tokenizer_path: Path) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_truncation()
    tok.no_padding()
    paragraphs = [line for p in sorted(txt_dir.glob("*.txt"))
                  for line in p.read_text(encoding="utf-8").split("\n") if line.strip()]
    started, cpu = time.perf_counter(), _cpu_seconds()
    tokens = 0
    for i in range(0, len(paragraphs), 1024):
        tokens += sum(len(e.ids) for e in tok.encode_batch(paragraphs[i:i + 1024], add_special_tokens=False))
    return {"seconds": time.perf_counter() - started, "cpu_seconds": _cpu_seconds() - cpu, "tokens": tokens,
            "paragraphs": len(paragraphs)}


def pipeline_pass(corpus: str, out: str, tokenizer_path: str, beam_args: list[str], dask_workers: int) -> dict:
    from mlm_data.config.loading import load
    from mlm_data.config.preprocess import PreprocessConfig
    from pipelines.preprocess import run

    cfg = load(PreprocessConfig, settings={"input.paths": [corpus], "output.path": out,
                                              "tokenizer.path": tokenizer_path, "output.overwrite": True})
    cluster = None
    if dask_workers:
        import dask
        import distributed

        for name in ("distributed", "apache_beam.runners.dask", "apache_beam.options.pipeline_options"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # Forked workers start with Beam imported; spawned ones spend seconds importing it.
        with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
            cluster = distributed.LocalCluster(n_workers=dask_workers, threads_per_worker=1, processes=True,
                                               dashboard_address=None, silence_logs=logging.ERROR)
        beam_args = ["--runner", DASK_RUNNER, "--dask_client_address", cluster.scheduler_address, *beam_args]
    try:
        started, cpu = time.perf_counter(), _cpu_seconds()
        run(cfg, beam_args=beam_args, echo=lambda _m: None)
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    finally:
        if cluster is not None:
            for client in list(distributed.client._global_clients.values()):
                client.close()
            cluster.close()
    return {"seconds": seconds, "cpu_seconds": cpu, "own_peak_kib": own_peak_kib()}


GRAPH: dict[str, float] = {}


class GraphOnlyRunner(PipelineRunner):
    """Records when the graph arrives and how big it is; runs nothing."""

    def run_pipeline(self, pipeline: object, options: object) -> PipelineResult:
        GRAPH["seconds"] = time.perf_counter() - GRAPH["started"]
        proto = pipeline.to_runner_api()  # type: ignore[attr-defined]
        GRAPH.update(transforms=len(proto.components.transforms), graph_bytes=proto.ByteSize())
        return PipelineResult(PipelineState.DONE)


def construction_pass(n_files: int, scratch: Path, tokenizer_path: str) -> dict:
    from mlm_data.config.loading import load
    from mlm_data.config.preprocess import PreprocessConfig
    from mlm_data.errors import DatasetError
    from pipelines.preprocess import run

    corpus = scratch / f"files-{n_files}"
    corpus.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (corpus / f"doc-{i:05d}.txt").write_text(f"Document {i} holds one sentence. And a second one.\n")
    cfg = load(PreprocessConfig, settings={"input.paths": [str(corpus)], "output.path": str(scratch / "out"),
                                              "tokenizer.path": tokenizer_path, "output.overwrite": True})
    # Beam imports the runner by name, as module ``scale_runs`` (this file runs as __main__).
    import scale_runs

    graph = scale_runs.GRAPH
    graph["started"] = time.perf_counter()
    try:
        run(cfg, beam_args=["--runner", "scale_runs.GraphOnlyRunner"], echo=lambda _m: None)
    except DatasetError:
        pass  # nothing ran, so there is no manifest
    return {"seconds": graph["seconds"], "transforms": graph["transforms"], "graph_bytes": graph["graph_bytes"]}


def main(argv: list[str]) -> None:
    if argv[0] == "construction":
        result = construction_pass(int(argv[1]), Path(argv[2]), argv[3])
    elif argv[0] == "raw":
        result = raw_pass(Path(argv[1]), Path(argv[2]))
    elif argv[0] == "pipeline":
        rest = argv[4:]
        workers = 0
        if rest[:1] == ["--dask-workers"]:
            workers, rest = int(rest[1]), rest[2:]
        result = pipeline_pass(argv[1], argv[2], argv[3], rest, workers)
    else:
        raise SystemExit(f"scale_runs: unknown pass {argv[0]!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
