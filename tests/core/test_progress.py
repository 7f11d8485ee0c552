"""``--no-progress`` hides every bar, transformers' included."""

from __future__ import annotations

import subprocess
import sys


def test_progress_bars_hidden_for_tqdm_and_transformers_and_restored():
    code = (
        "import sys\n"
        "from fmlab._progress import progress_bars\n"
        "with progress_bars(False):\n"
        "    from tqdm.auto import tqdm\n"
        "    from transformers.utils import logging\n"
        "    list(tqdm(range(3), desc='HIDDEN-A'))\n"
        "    list(logging.tqdm(range(3), desc='HIDDEN-B'))\n"
        "list(tqdm(range(3), desc='SHOWN-C'))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "HIDDEN" not in res.stderr and "SHOWN-C" in res.stderr, res.stderr
