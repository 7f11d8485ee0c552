"""The README's worked plugin, installed as a separate package, extends a registry.

The package's two files are taken verbatim from the README's "Extending fmlab" section, installed
with pip (``--no-deps --target``, no network) and used from a fresh interpreter, so the documented
example and the entry-point rule stay true.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from fmlab.testing import require_or_skip

ROOT = Path(__file__).resolve().parents[2]


def _readme_blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Extending fmlab", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_readme_plugin_installs_and_joins_the_registry(tmp_path: Path) -> None:
    blocks = _readme_blocks()
    files = {}
    for _lang, body in blocks:
        first = body.splitlines()[0]
        if first.startswith("# ") and ("/" in first or first.endswith(".toml")):
            files[first[2:].strip()] = body
    assert set(files) == {"pyproject.toml", "fmlab_confidence/__init__.py"}, files.keys()
    usage = next(body for lang, body in blocks if lang == "python" and body not in files.values())
    pkg = tmp_path / "fmlab-confidence"
    for rel, body in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(body)
    target = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--disable-pip-version-check", "--target", str(target), str(pkg)],
        capture_output=True, text=True, timeout=300,
    )
    if pip.returncode != 0 and "setuptools" in pip.stderr and "No module named" in pip.stderr:
        require_or_skip("setuptools is needed to build the example plugin: pip install setuptools")
    assert pip.returncode == 0, pip.stderr
    assert list(target.glob("fmlab_confidence-*.dist-info/entry_points.txt"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    run = subprocess.run([sys.executable, "-c", usage], capture_output=True, text=True,
                         env=env, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert re.search(r"\[\s*0\.\d+", run.stdout), run.stdout
    bad = subprocess.run(
        [sys.executable, "-c", "from fmlab.ood import create_estimator\n"
         "create_estimator('above-threshold', threshold=2)"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert "The 'threshold' parameter of AboveThreshold must be in (0, 1). Got 2" in bad.stderr
