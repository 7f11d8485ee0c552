"""Reference tables for the scaling laws and a reader for users' run tables.

Reference data come from the data zoo (``fmlab.data.load_dataset``) when it provides them, else
straight from the read-only reference folder (``fmlab._paths.shared_dir``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from fmlab.exceptions import DataUnavailableError

__all__ = ["chinchilla_runs", "load_reference_table", "openclip_curves", "read_runs"]

_FILES = {
    "chinchilla": ("scaling-law-fitting", "epoch_chinchilla_svg_extracted_data.csv"),
    "chinchilla-kyo": ("scaling-law-fitting", "kyo_takano_chinchilla_llm_df.csv"),
    "openclip-curves": ("data-filtering-scaling", "openclip_imagenet_zeroshot_learning_curves.csv"),
    "tmars-params": ("data-filtering-scaling", "parameter_values.jsonl"),
}


def _from_zoo(name: str) -> Any | None:
    try:
        from fmlab import data as zoo

        loader = getattr(zoo, "load_dataset", None)
        if loader is None:
            return None
        return loader(name).frame
    except Exception:  # the zoo is optional here: fall back to the shared file
        return None


def load_reference_table(name: str) -> Any:
    """A reference table: ``"chinchilla"``, ``"chinchilla-kyo"``, ``"openclip-curves"`` (pandas
    DataFrames) or ``"tmars-params"`` (a list of JSON records)."""
    import pandas as pd

    if name not in _FILES:
        raise ValueError(f"Unknown reference table {name!r}. Valid options are: {tuple(_FILES)}.")
    frame = _from_zoo(name)
    if frame is not None and len(frame):
        if name == "tmars-params":
            return _records_from_frame(frame)
        return frame
    from fmlab._paths import shared_dir

    path = shared_dir(*_FILES[name])
    if path is None or not path.is_file():
        raise DataUnavailableError(
            f"Reference table {name!r} not found (looked for {'/'.join(_FILES[name])} under the "
            "shared reference folder). Set FMLAB_SHARED to the folder holding "
            f"{_FILES[name][0]}/, or install the data zoo."
        )
    if name == "tmars-params":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return pd.read_csv(path)


def _is_missing(v: Any) -> bool:
    return isinstance(v, float) and np.isnan(v)


def _records_from_frame(frame: Any) -> list[dict[str, Any]]:
    """The data zoo's long table (one row per pool) back into the released record layout."""
    if "b_values" in frame.columns:  # already one row per record
        return [{k: v for k, v in r.items() if not _is_missing(v)}
                for r in frame.to_dict(orient="records")]
    records = []
    for rid, group in frame.groupby("id", sort=False):
        rec: dict[str, Any] = {
            "id": rid, "best_a": float(group["a"].iloc[0]),
            "b_values": group["b"].astype(float).tolist(),
            "c_values": group["tau"].astype(float).tolist(),
            "names": group["pool"].astype(str).tolist(),
        }
        if "d" in group and not group["d"].isna().all():
            rec["d_value"] = float(group["d"].dropna().iloc[0])
        records.append(rec)
    return records


def chinchilla_runs(source: str = "epoch", *, drop_highest: int = 5) -> Any:
    """The public Chinchilla runs as a DataFrame with ``n_params``, ``n_tokens``, ``flops``,
    ``loss``.

    Args:
        source: ``"epoch"`` (245 runs extracted by Epoch AI; ``D = FLOP / (6 N)``) or ``"kyo"``
            (234 runs from the ``chinchilla`` package's example).
        drop_highest: Drop this many highest-loss runs first (5 in the replication protocol).

    References:
        Besiroglu et al. 2024, arXiv 2404.10102.
    """
    import pandas as pd

    if source == "epoch":
        raw = load_reference_table("chinchilla")
        n = raw["Model Size"].to_numpy(float)
        c = raw["Training FLOP"].to_numpy(float)
        df = pd.DataFrame({"n_params": n, "n_tokens": c / (6 * n), "flops": c,
                           "loss": raw["loss"].to_numpy(float)})
    elif source == "kyo":
        raw = load_reference_table("chinchilla-kyo")
        df = pd.DataFrame({"n_params": raw["N"].to_numpy(float), "n_tokens": raw["D"].to_numpy(
            float), "flops": raw["C"].to_numpy(float), "loss": raw["loss"].to_numpy(float)})
    else:
        raise ValueError(f"Invalid source {source!r}. Valid options are: ('epoch', 'kyo').")
    if drop_highest:
        df = df.sort_values("loss", kind="stable").iloc[: len(df) - drop_highest]
    return df.reset_index(drop=True)


_NAME = re.compile(r"Model-(?P<model>[^_]+)_Data-(?P<data>\d+[MB])_Samples-(?P<samples>\d+[MB])"
                   r"_lr-(?P<lr>[^_]+)_bs-(?P<bs>[^.]+)")


def _count(tag: str) -> float:
    return float(tag[:-1]) * (1e6 if tag.endswith("M") else 1e9)


def openclip_curves() -> Any:
    """The OpenCLIP ImageNet zero-shot learning curves with parsed run names.

    Columns: ``run``, ``model``, ``pool_size`` (unique samples: 80M/400M/2B), ``total_samples``
    (3B/13B/34B), ``checkpoint``, ``samples_seen``, ``top1``, ``top5``, ``error`` (1 - top1).
    The ``epoch`` column of the file is a checkpoint number, not a pass: samples seen is
    ``checkpoint * total_samples / last checkpoint`` of that run.
    """
    raw = load_reference_table("openclip-curves")
    frame = raw.rename(columns={"imagenet-zeroshot-val-top1": "top1",
                                "imagenet-zeroshot-val-top5": "top5", "name": "run",
                                "epoch": "checkpoint"}).copy()
    parsed = frame["run"].str.extract(_NAME)
    frame["model"] = parsed["model"]
    frame["pool_size"] = parsed["data"].map(_count)
    frame["total_samples"] = parsed["samples"].map(_count)
    last = frame.groupby("run")["checkpoint"].transform("max")
    frame["samples_seen"] = frame["checkpoint"] * frame["total_samples"] / last
    frame["error"] = 1.0 - frame["top1"]
    return frame.sort_values(["run", "checkpoint"]).reset_index(drop=True)


def read_runs(path: str | Path) -> Any:
    """Read a table of runs from CSV, Parquet or JSON (records or columns) into a DataFrame.

    Errors name the file and what was expected (:func:`fmlab._io.read_table`): empty files,
    duplicate column names, non-UTF-8 text and JSON of the wrong shape are refused.
    """
    from fmlab._io import read_table

    return read_table(path, what="runs")
