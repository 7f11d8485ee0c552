"""``fmlab agent``: thin commands over the library, with clear errors."""

from __future__ import annotations

import json

from fmlab.cli import main


def test_tasks_lists_the_shipped_set(capsys):
    assert main(["agent", "tasks", "--attack-type", "add_comment", "--json"]) == 0
    tasks = json.loads(capsys.readouterr().out)
    assert len(tasks) == 12 and {t["attack_type"] for t in tasks} == {"add_comment"}


def test_bad_input_is_a_usage_error(capsys):
    assert main(["agent", "tasks", "--attack-type", "nope"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    assert main(["agent", "tasks", "--file", "/nonexistent/tasks.json"]) == 2


def test_run_and_observe_end_to_end(tmp_path, capsys, browser, products):
    out = tmp_path / "records.json"
    assert main(["agent", "run", "--agent", "scripted", "--limit", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "benign success 3/3 = 100%" in text
    summary = json.loads(out.read_text())
    assert summary["benign_success"]["k"] == 3 and len(summary["records"]) == 3
    png = tmp_path / "page.png"
    assert main(["agent", "observe", "/product/12", "--out", str(png), "--json"]) == 0
    obs = json.loads(capsys.readouterr().out)
    assert obs["url"] == "/product/12" and '[6] button "Add to cart"' in obs["text"]
    assert "[image: slice of pizza]" in obs["text"] and png.stat().st_size > 1000
