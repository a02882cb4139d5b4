"""The package Dataflow workers install holds every module the pipeline imports.

With ``--setup_file ./setup.py`` Beam builds an sdist of this project (``python -m build
--no-isolation --sdist``) and every worker pip-installs it, i.e. builds a wheel from that sdist.
So this test builds the sdist and, from it, the wheel, then checks both against the pipeline's
import graph (static: every first-party import anywhere in the code, function bodies included;
and dynamic: what importing the entry points loads), installs the wheel on its own and imports
the pipeline from there, far from this checkout.
"""

from __future__ import annotations

import ast
import json
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("mlm_data", "pipelines", "trainer")
#: What the ``mlm-data`` command and the Beam workers import first.
PIPELINE_ENTRY_POINTS = ("pipelines.cli", "pipelines.preprocess", "pipelines.read", "pipelines.document_stages",
                         "pipelines.write")
PACKAGE_DATA = ("mlm_data/py.typed", "pipelines/py.typed", "trainer/py.typed", "mlm_data/demo/README.md",
                "mlm_data/demo/LICENSE-PSF.txt", "mlm_data/demo/python-docs-sample.txt.gz")


@dataclass(frozen=True)
class Built:
    sdist: set[str]     # member paths, without the "mlm_data-0.1.0/" prefix
    wheel: set[str]
    wheel_path: Path
    entry_points: str


def _checkout_copy(dest: Path) -> Path:
    """The project as a checkout has it: no virtualenv, caches or build output (.gitignore)."""
    ignored = [line.strip().rstrip("/") for line in (REPO / ".gitignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(".git", *ignored))
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    src = _checkout_copy(tmp_path_factory.mktemp("checkout") / "mlm-data")
    out = tmp_path_factory.mktemp("dist")
    # Neither --sdist nor --wheel: the sdist first, then the wheel built from the unpacked sdist, as
    # pip does on a worker. ``--no-isolation`` as Beam's stager runs it (no network needed).
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation",
                           "--outdir", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    with tarfile.open(sdist) as tar:
        sdist_names = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile() and "/" in m.name}
    with zipfile.ZipFile(wheel) as zf:
        wheel_names = set(zf.namelist())
        [ep] = [n for n in wheel_names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = zf.read(ep).decode()
    return Built(sdist=sdist_names, wheel=wheel_names, wheel_path=wheel, entry_points=entry_points)


def _module_file(name: str) -> Path | None:
    """The repository file that defines module ``name``, if it is one of ours."""
    base = REPO / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def static_import_closure(roots: tuple[str, ...]) -> dict[str, Path]:
    """Every first-party module reachable from ``roots`` through any import statement.

    Imports inside functions count (the CLI imports lazily), so this is more than importing the
    roots would load. A name that resolves to a file of this repository outside the packages
    (a top-level helper, ``tests/...``) is kept too, and fails the test below.
    """
    found: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = _module_file(name)
        if path is None:
            continue
        found[name] = path
        parents = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*parents[:len(parents) - node.level + 1], base]).strip(".")
                todo.append(base)
                todo += [f"{base}.{a.name}" for a in node.names]
        for i in range(1, len(name.split("."))):   # importing a.b.c runs a/__init__ and a/b/__init__
            todo.append(".".join(name.split(".")[:i]))
    return found


def test_pipeline_import_graph_is_packaged(built):
    closure = static_import_closure(PIPELINE_ENTRY_POINTS)
    rel = {name: path.relative_to(REPO).as_posix() for name, path in closure.items()}
    outside = sorted(f"{n} ({p})" for n, p in rel.items() if n.split(".")[0] not in PACKAGES)
    assert not outside, f"the pipeline imports repository modules that are not packaged: {outside}"
    assert {"pipelines.cli", "mlm_data.storage", "mlm_data.dataset.shards", "mlm_data.dataset.manifest"} <= set(rel)
    assert not sorted(set(rel.values()) - built.wheel), "modules missing from the wheel"
    assert not sorted(set(rel.values()) - built.sdist), "modules missing from the sdist"


def test_every_module_and_package_data_file_is_packaged(built):
    sources = {p.relative_to(REPO).as_posix() for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
               if "__pycache__" not in p.parts}
    for name in (*sorted(sources), *PACKAGE_DATA):
        assert name in built.wheel, f"{name} is not in the wheel"
        assert name in built.sdist, f"{name} is not in the sdist"
    assert {"setup.py", "pyproject.toml", "README.md"} <= built.sdist
    assert "mlm-data = pipelines.cli:main" in built.entry_points
    assert "mlm-train = trainer.cli:main" in built.entry_points
    assert not [n for n in built.wheel if n.startswith(("tests/", "bench/", "docs/"))]


def test_pipeline_imports_from_the_installed_wheel_alone(built, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "--target", str(target), str(built.wheel_path)],
                   check=True, timeout=120)
    probe = (
        "import importlib, json, sys\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        f"for name in {PIPELINE_ENTRY_POINTS!r}:\n"
        "    importlib.import_module(name)\n"
        "from importlib.resources import files\n"
        "demo = files('mlm_data').joinpath('demo/python-docs-sample.txt.gz').read_bytes()\n"
        "print(json.dumps({'demo_bytes': len(demo), 'modules': {n: m.__file__ for n, m in sys.modules.items()\n"
        f"    if n.split('.')[0] in {PACKAGES!r}}}}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["demo_bytes"] > 1000
    assert "pipelines.write" in report["modules"] and "mlm_data.storage" in report["modules"]
    elsewhere = {n: f for n, f in report["modules"].items() if not f.startswith(str(target))}
    assert not elsewhere, f"imported from outside the installed wheel: {elsewhere}"


class _Submitted(Exception):
    """Raised by the stand-in for ``pipelines.preprocess.run``: nothing is submitted."""


def test_documented_dataflow_command_parses(monkeypatch):
    """The command in docs/dataflow.md reaches the pipeline as documented: our flags build the
    config, every other flag is a Beam option Beam knows, and the runner is Dataflow's."""
    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        PipelineOptions,
        SetupOptions,
        WorkerOptions,
    )

    import pipelines.preprocess
    from pipelines.cli import main
    from pipelines.runner import make_runner

    text = (REPO / "docs" / "dataflow.md").read_text(encoding="utf-8")
    block = text.split("```\nmlm-data preprocess", 1)[1].split("```", 1)[0]
    argv = ["preprocess", *shlex.split(block.replace("\\\n", " "))]
    seen = {}

    def submit(cfg, *, beam_args, echo, progress=None):
        seen.update(cfg=cfg, beam_args=list(beam_args))
        raise _Submitted

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(pipelines.preprocess, "run", submit)
    with pytest.raises(_Submitted):
        main(argv)
    cfg, beam_args = seen["cfg"], seen["beam_args"]
    assert list(cfg.input.paths) == ["gs://BUCKET/wiki/*.jsonl.gz"]
    assert cfg.output.path == "gs://BUCKET/datasets/bert-wikipedia"
    assert cfg.instances.task == "mlm_nsp" and cfg.output.num_buckets == 256

    options = PipelineOptions(beam_args)
    known = options.get_all_options(retain_unknown_options=False)
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(known)
    assert not unknown, f"flags Beam does not know: {sorted(unknown)}"
    assert make_runner(options) == "DataflowRunner"
    gcp = options.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region, gcp.temp_location) == ("PROJECT", "REGION", "gs://BUCKET/tmp")
    workers = options.view_as(WorkerOptions)
    assert (workers.num_workers, workers.max_num_workers, workers.machine_type) == (8, 64, "n2-highmem-4")
    setup_file = options.view_as(SetupOptions).setup_file
    assert (REPO / setup_file).is_file()


def test_workers_get_the_gs_filesystem(built):
    """Dataflow installs the package without extras, so gcsfs must be a plain dependency."""
    with zipfile.ZipFile(built.wheel_path) as zf:
        [meta] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        requires = [x.split(":", 1)[1].strip() for x in zf.read(meta).decode().splitlines()
                    if x.startswith("Requires-Dist:")]
    assert any(r.startswith("gcsfs") and "extra ==" not in r for r in requires)
