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


def test_every_cli_command_with_no_progress_hides_transformers_bars(monkeypatch, capsys):
    # the CLI's main() applies --no-progress around the whole command: before, `fmlab attack gcg
    # --no-progress` still printed transformers' "Loading weights" bar while loading the model
    from transformers.utils import logging

    from fmlab.cli import main
    from fmlab.cli._jailbreak import AttackCommand

    def run(self, args):  # what loading a model inside the command does
        list(logging.tqdm(range(3), desc="Loading weights"))
        return 0

    monkeypatch.setattr(AttackCommand, "run", run)
    argv = ["attack", "gcg", "--model", "tiny-llama", "--prompt", "hi", "--target", "Purple"]
    assert main([*argv, "--no-progress"]) == 0
    assert "Loading weights" not in capsys.readouterr().err
    assert main(argv) == 0
    assert "Loading weights" in capsys.readouterr().err
