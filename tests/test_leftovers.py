"""Nothing left behind: workers die with the process they work for, a killed run's scratch
directories go at the next start, and unfinished multipart uploads are aborted.

The kill tests start real process trees (a ``multi_processing`` preprocess, a training run
with two DataLoader workers), SIGKILL the top process mid-run and check that every
descendant recorded before the kill is gone within seconds and nothing is written after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from mlm_data import lifetime, scratch
from mlm_data.lifetime import ProcessId
from mlm_data.storage.uploads import abort_unfinished_uploads

from conftest import DEMO_CORPUS, REPO, TOKENIZER

if TYPE_CHECKING:
    from servers import MotoS3, ObjectStore

pytest_plugins = ["servers"]

#: How long the descendants of a killed process may take to go.
GRACE_SECONDS = 5.0


# --------------------------------------------------------------------------------------------
# Helpers


def start(argv: list[str], log: Path, **env: str) -> subprocess.Popen:
    environ = {**os.environ, "PYTHONPATH": str(REPO), **env}
    environ.pop(lifetime.DRIVER_ENV, None)
    return subprocess.Popen([sys.executable, *argv], cwd=REPO, env=environ, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
        time.sleep(0.2)


def kill_and_watch(proc: subprocess.Popen, descendants: list[psutil.Process]) -> list[psutil.Process]:
    """SIGKILL ``proc``; the descendants still alive ``GRACE_SECONDS`` later (then killed, so a
    failing test leaves nothing running)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(descendants, timeout=GRACE_SECONDS)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return alive


def files_below(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# Workers die with their driver


def test_a_killed_multi_processing_preprocess_leaves_no_workers_and_no_late_shards(tmp_path):
    out, log = tmp_path / "out", tmp_path / "preprocess.log"
    proc = start(["-m", "pipelines.cli", "preprocess", "--input", str(DEMO_CORPUS), "--output", str(out),
                  "--tokenizer", str(TOKENIZER), "--direct_running_mode=multi_processing",
                  "--direct_num_workers=2"], log, TMPDIR=str(tmp_path))
    driver = psutil.Process(proc.pid)

    def workers() -> list[psutil.Process]:
        return [p for p in driver.children(recursive=True)
                if p.cmdline()[-1:] == ["apache_beam.runners.worker.sdk_worker_main"]]

    def spilled() -> bool:  # mid-run: the first stage has handed data to the shuffle (not just progress files)
        return any(any(f.is_file() for f in d.iterdir()) for d in tmp_path.glob(f"mlm-data-shuffle-*.{proc.pid}.*"))

    try:
        wait_for(lambda: len(workers()) == 2 and spilled(), timeout=180, what="two busy SDK workers", log=log)
        descendants = driver.children(recursive=True)
    except BaseException:
        proc.kill()
        raise
    assert len(descendants) >= 4   # /bin/sh -c + sdk_worker_main, twice
    alive = kill_and_watch(proc, descendants)
    assert not alive, f"survived their driver: {[p.pid for p in alive]}"
    before = files_below(out)
    time.sleep(1.0)
    assert files_below(out) == before   # nothing written after the driver died
    assert "manifest.json" not in before


def test_a_killed_training_run_leaves_no_dataloader_workers(nsp, tmp_path):
    log = tmp_path / "train.log"
    proc = start(["-m", "trainer.cli", "pretrain", "--config", str(REPO / "configs" / "train" / "bert-tiny.yaml"),
                  "--data", str(nsp), "--output", str(tmp_path / "run"), "--num-workers", "2",
                  "--max-steps", "100000", "--eval-every", "0", "--save-every", "0"], log)
    trainer = psutil.Process(proc.pid)
    try:
        wait_for(lambda: len(trainer.children()) >= 2 and (tmp_path / "run" / "metrics.jsonl").exists(),
                 timeout=120, what="training with two DataLoader workers", log=log)
        time.sleep(1.0)   # let the workers fill their queues
        descendants = trainer.children(recursive=True)
    except BaseException:
        proc.kill()
        raise
    assert len(descendants) >= 2
    assert not kill_and_watch(proc, descendants)


def test_a_grandchild_bound_to_the_driver_dies_with_it(tmp_path):
    # The shape of Beam's SDK workers: driver → /bin/sh -c → worker, the worker binding itself
    # to the driver named in the environment it inherited.
    bound = tmp_path / "bound"
    (tmp_path / "worker.py").write_text("import sys, time\nfrom mlm_data import lifetime\nlifetime.bind_to_driver()\n"
                                        "open(sys.argv[1], 'w').close()\ntime.sleep(60)\n")
    (tmp_path / "driver.py").write_text(
        "import subprocess, sys, time\nfrom mlm_data import lifetime\nwith lifetime.as_driver():\n"
        "    subprocess.Popen(['/bin/sh', '-c', ' '.join([sys.executable, *sys.argv[1:]])])\ntime.sleep(60)\n")
    proc = start([str(tmp_path / "driver.py"), str(tmp_path / "worker.py"), str(bound)], tmp_path / "driver.log")
    try:
        wait_for(bound.exists, timeout=60, what="the worker to bind", log=tmp_path / "driver.log")
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except BaseException:
        proc.kill()
        raise
    assert descendants   # the worker (and the shell, unless it exec'd the worker)
    assert not kill_and_watch(proc, descendants)


def test_bind_to_is_a_no_op_for_the_owner_itself_and_for_other_machines():
    me = ProcessId.current()
    lifetime.bind_to(me)
    lifetime.bind_to(ProcessId(pid=1, started="1", machine="elsewhere", host="far"))
    lifetime.exit_if_orphaned(me)
    assert me.alive() is True
    assert ProcessId(pid=me.pid, started="1", machine=me.machine, host="").alive() is False   # pid reused
    assert ProcessId(pid=me.pid, started=me.started, machine="elsewhere", host="").alive() is None


# --------------------------------------------------------------------------------------------
# Scratch directories of dead runs


def dead_process() -> ProcessId:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    who = ProcessId.of(proc.pid)
    proc.kill()
    proc.wait()
    assert who is not None and who.alive() is False
    return who


def test_stale_scratch_directories_of_dead_runs_are_removed_at_the_next_start(tmp_path):
    prefix = "mlm-data-shuffle-"
    me, dead = ProcessId.current(), dead_process()

    def make(owner: ProcessId, suffix: str) -> Path:
        path = tmp_path / f"{prefix}{owner.machine}.{owner.pid}.{owner.started}-{suffix}"
        path.mkdir()
        (path / "0123.arrow").write_bytes(b"spilled")
        return path

    stale = make(dead, "a1")
    reused = make(ProcessId(pid=me.pid, started="1", machine=me.machine, host=""), "b2")   # our pid, not us
    live = make(me, "c3")
    elsewhere = make(ProcessId(pid=dead.pid, started=dead.started, machine="0badc0de", host=""), "d4")
    legacy = tmp_path / f"{prefix}k2j4_x9q"
    legacy.mkdir()
    other = tmp_path / f"mlm-data-shards-{dead.machine}.{dead.pid}.{dead.started}-e5"
    other.mkdir()

    new = Path(scratch.make_dir(prefix, parent=str(tmp_path)))
    assert scratch.owner_of(new.name, prefix) == ProcessId(pid=me.pid, started=me.started, machine=me.machine,
                                                           host="")
    assert not stale.exists() and not reused.exists()
    assert live.exists() and elsewhere.exists() and legacy.exists() and other.exists() and new.exists()


def test_preprocess_and_the_loader_clear_scratch_left_by_killed_runs(tmp_path, monkeypatch, small_corpus, preprocess,
                                                                     nsp):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = dead_process()
    left = [tmp_path / f"{prefix}{dead.machine}.{dead.pid}.{dead.started}-zz"
            for prefix in ("mlm-data-shuffle-", "mlm-data-shards-")]
    for path in left:
        path.mkdir()
    preprocess(str(small_corpus), tmp_path / "out", **{"output.num_buckets": 1})
    assert not left[0].exists() and left[1].exists()

    from trainer.loading.loader import ShardLoader

    loader = ShardLoader([str(nsp)], batch_size=4, seed=0)
    try:
        assert not left[1].exists()
        cache = Path(loader._owned_cache)  # the loader's own, marked with this process
        assert scratch.owner_of(cache.name, "mlm-data-shards-").pid == os.getpid()
    finally:
        loader.close()


# --------------------------------------------------------------------------------------------
# Unfinished multipart uploads


def test_a_run_aborts_unfinished_multipart_uploads_under_its_output(s3: ObjectStore, moto_server: MotoS3,
                                                                    small_corpus, preprocess):
    client = moto_server.client()
    mine = client.create_multipart_upload(Bucket=s3.bucket, Key="ds/train/shard-00000-000-killed.arrow")
    client.upload_part(Bucket=s3.bucket, Key="ds/train/shard-00000-000-killed.arrow", PartNumber=1,
                       UploadId=mine["UploadId"], Body=b"x" * (5 << 20))
    client.create_multipart_upload(Bucket=s3.bucket, Key="dsx/not-below-the-output")

    preprocess(str(small_corpus), s3.url("ds"), **{"output.num_buckets": 1})

    left = client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["dsx/not-below-the-output"]
    assert abort_unfinished_uploads(s3.url("ds")) == []
    assert abort_unfinished_uploads(str(small_corpus)) == []   # nothing of the kind elsewhere
