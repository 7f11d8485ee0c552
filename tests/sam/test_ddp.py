"""SAM under DistributedDataParallel: two gloo processes on CPU (torch.multiprocessing.spawn)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_ddp_two_gloo_processes_match_the_local_eps_reference(tmp_path):
    script = Path(__file__).with_name("ddp_worker.py")
    out = tmp_path / "result.txt"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "init"), str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    status, replica_gap, ref_err, moved = out.read_text().split()
    assert status == "OK"
    assert float(replica_gap) == 0.0  # replicas stay bitwise identical
    assert float(ref_err) < 1e-12  # = mean over ranks of grad L_r(w + eps_r), eps_r local
    assert float(moved) > 1e-3  # the check is not vacuous
