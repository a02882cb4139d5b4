"""Package boundaries: the core stays free of Beam and torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import mlm_data


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
