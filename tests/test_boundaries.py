"""Package boundaries: the core stays free of Beam and torch."""

from __future__ import annotations

import ast
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import mlm_data

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("mlm_data", "pipelines", "trainer")


def test_core_imports_neither_beam_nor_torch():
    modules = sorted(m.name for m in pkgutil.walk_packages(mlm_data.__path__, "mlm_data."))
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('apache_beam', 'torch'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len(modules) > 10
    assert out.stdout.strip() == "", f"mlm_data pulled in: {out.stdout.strip()}"


def _table_rules() -> dict[str, set[str]]:
    """README's "Where things are" table: folder → the project packages it may import."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Where things are", 1)[1].split("\n\n", 2)[1]
    rules = {}
    for line in section.splitlines()[2:]:
        folder, _, may_import = (cell.strip() for cell in line.strip("|").split("|"))
        names = re.findall(r"`([a-z_.]+)`", may_import)
        rules[folder.strip("`")] = {n for n in names if n.split(".")[0] in PACKAGES}
    return rules


def _group(path: Path) -> str:
    rel = path.relative_to(REPO)
    return f"{rel.parts[0]}/*.py" if len(rel.parts) == 2 else f"{rel.parts[0]}/{rel.parts[1]}/"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{a.name}" for a in node.names)   # `from pkg import module`
    return {m for m in found if m.split(".")[0] in PACKAGES}


def test_the_readme_table_of_folders_matches_the_imports():
    rules = _table_rules()
    roots = {f"mlm_data.{p.stem}" for p in (REPO / "mlm_data").glob("*.py") if p.stem != "__init__"}
    roots.add("mlm_data.__version__")
    modules = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if "demo" not in p.parts]
    groups = {_group(p) for p in modules}
    # pipelines/ is one flat package: its row names the folder, not "pipelines/*.py".
    rules["pipelines/*.py"] = rules.pop("pipelines/")
    assert groups <= set(rules), f"folders missing from README's table: {sorted(groups - set(rules))}"
    broken = []
    for path in modules:
        group = _group(path)
        own = group.rstrip("/").removesuffix("/*.py").replace("/", ".")
        allowed = rules[group] | {own} | roots
        for module in _imports(path):
            if not any(module == a or module.startswith(a + ".") for a in allowed):
                broken.append(f"{path.relative_to(REPO)} imports {module}")
    assert not broken, "imports the README's table does not allow:\n" + "\n".join(broken)
