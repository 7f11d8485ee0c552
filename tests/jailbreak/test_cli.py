"""``fmlab attack`` and ``fmlab jailbreak`` on the tiny random model."""

from __future__ import annotations

import json

import pytest

from fmlab.cli import main


def test_judge_and_list(capsys):
    assert main(["jailbreak", "judge", "p u r p l e!", "purplish", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [v["unsafe"] for v in out] == [True, False]
    assert main(["jailbreak", "list"]) == 0
    assert "output_filter" in capsys.readouterr().out
    assert main(["attack", "list"]) == 0
    assert "gcg" in capsys.readouterr().out


def test_attack_gcg_resumes_from_snapshot(tmp_path, capsys):
    args = ["attack", "gcg", "--model", "tiny-llama", "--prompt", "Name a colour.",
            "--target", "Purple", "--num-steps", "3", "--search-width", "8", "--topk", "8",
            "--optim-str-init", "x x x", "--snapshot-dir", str(tmp_path / "s"), "--json",
            "--no-progress"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["n_steps"] == 3 and first["best_string"]
    assert main(args) == 0  # finished snapshot: the same answer, no new work
    assert json.loads(capsys.readouterr().out)["best_string"] == first["best_string"]


def test_jailbreak_eval_with_yaml_task(tmp_path, capsys):
    task = tmp_path / "t.yaml"
    task.write_text("name: t\njudge: contains:purple\nprompts: {test: ['Name a colour.', 'Hi.']}\n")
    assert main(["jailbreak", "eval", "--model", "tiny-llama", "--task", str(task),
                 "--defense", "none,output_filter", "--max-new-tokens", "4",
                 "--out", str(tmp_path / "o"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["defense"] for r in rows] == ["none", "output_filter"] and rows[1]["dsr"] == 1.0
    assert len((tmp_path / "o" / "records.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize(("argv", "msg"), [
    (["jailbreak", "eval", "--defense", "dp0"], "Did you mean: dpo"),
    (["jailbreak", "eval", "--attack", "gcgg"], "Unknown jailbreak attack 'gcgg'"),
    (["jailbreak", "eval", "--attack", "suffix"], "required with --attack suffix"),
    (["jailbreak", "eval", "--limit", "0"], "--limit"),
    (["jailbreak", "eval", "--model", "nope"], "unknown model 'nope'"),
    (["attack", "gcg", "--prompt", "hi", "--target", ""], "--target: must be a non-empty"),
    (["attack", "gcg", "--prompt", "hi", "--target", "x", "--optim-str-init", " "],
     "length 0"),
    (["attack", "gcg", "--prompt", "hi", "--target", "x", "--search-width", "0"],
     "--search-width"),
])
def test_usage_errors_exit_2(argv, msg, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks exit; fmlab's UsageError returns 2
        code = exc.code
    assert code == 2
    assert msg in capsys.readouterr().err


def test_non_causal_model_is_a_clear_error(capsys):
    assert main(["attack", "gcg", "--model", "all-minilm-l6-v2", "--prompt", "hi",
                 "--target", "x", "--num-steps", "1"]) == 1
    err = capsys.readouterr().err
    assert "causal" in err and "Traceback" not in err
