"""Bulk scoring: `skserve score` against a naive script, rows/s and peak RSS at two file sizes.

The naive script reads the whole CSV with pandas.read_csv, calls predict_proba once and writes the
predictions with DataFrame.to_csv. Both run as child processes on the same deterministic files
(made in a temporary directory) for the iris pipeline and a mixed-type DataFrame pipeline; their
outputs must be identical. Writes bench/results/bulk.{md,json}; exits 1 if an output differs.
Run alone with `.venv/bin/python bench/bulk_score.py`; `make bench` runs it after the servers.
Environment: BENCH_BULK_ROWS (comma list of file sizes, default "250000,1000000"), BENCH_BULK_ROUNDS
(default 2; the best time and the highest RSS of the rounds are kept).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path[:0] = [str(ROOT), str(ROOT / "src")]
import train  # noqa: E402 (the repository's own modules, found through the paths above)
from skserve.artifact import read_card, write_artifact  # noqa: E402
from skserve.features import features_from_card  # noqa: E402
from skserve.packaging import package  # noqa: E402

SIZES = tuple(int(size) for size in os.environ.get("BENCH_BULK_ROWS", "250000,1000000").split(","))
ROUNDS = int(os.environ.get("BENCH_BULK_ROUNDS", "2"))
TARGET_RATIO = 0.8
SKSERVE = Path(sys.executable).parent / "skserve"

NAIVE = """
import sys, joblib, pandas as pd
model = joblib.load(sys.argv[1] + "/model.joblib")
frame = pd.read_csv(sys.argv[2])
rows = frame if sys.argv[4] == "dataframe" else frame.to_numpy()
probabilities = model.predict_proba(rows)
out = pd.DataFrame(probabilities, columns=[f"probability_{name}" for name in model.classes_])
out.insert(0, "prediction", model.classes_[probabilities.argmax(axis=1)])
out.to_csv(sys.argv[3], index=False)
"""


def mixed_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tenure": rng.integers(0, 120, rows),
            "spend": np.where(rng.random(rows) < 0.05, np.nan, rng.gamma(2.0, 30.0, rows).round(2)),
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "device": pd.Series(rng.choice(["phone", "tablet", "desktop", None], rows)),
        }
    )


def models(into: Path) -> dict[str, tuple[Path, str]]:
    """The two benchmark models: train.py's iris pipeline, and a packaged DataFrame pipeline."""
    iris = into / "iris"
    write_artifact(iris, *train.train(train.load_bundled(), "linear", 0))
    frame = mixed_frame(5000, seed=0)
    churned = (frame["tenure"] < 24) ^ (frame["region"] == "west")
    columns = ColumnTransformer(
        [
            ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), ["tenure", "spend"]),
            ("categories", OneHotEncoder(handle_unknown="ignore"), ["region", "device"]),
        ]
    )
    pipeline = make_pipeline(columns, LogisticRegression()).fit(frame, churned)
    package(pipeline, frame.head(100), into / "mixed", name="churn")
    return {"iris pipeline": (iris, "array"), "mixed-type pipeline": (into / "mixed", "dataframe")}


def write_input(model: str, model_dir: Path, rows: int, path: Path) -> None:
    if model == "iris pipeline":
        names = [feature.name for feature in features_from_card(read_card(model_dir))]
        values = np.random.default_rng(rows).uniform(0, 8, size=(rows, len(names))).round(1)
        pd.DataFrame(values, columns=names).to_csv(path, index=False)
    else:
        mixed_frame(rows, seed=rows).to_csv(path, index=False)


def measure(argv: list[str]) -> dict[str, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one program run.

    GNU time reports the peak: a child's own ru_maxrss would count this large parent's memory
    at the fork, before the exec.
    """
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M %U %S", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited with {done.returncode}: {done.stderr[-500:]}")
    peak_kib, user, system = done.stderr.split()[-3:]
    return {"wall_s": wall, "cpu_s": float(user) + float(system), "peak_rss_mib": int(peak_kib) / 1024}


def run() -> int:
    records: list[dict[str, Any]] = []
    identical = True
    with tempfile.TemporaryDirectory(prefix="skserve-bench-bulk-") as tmp:
        work = Path(tmp)
        for model, (model_dir, input_kind) in models(work).items():
            for rows in SIZES:
                source = work / f"input-{rows}.csv"
                write_input(model, model_dir, rows, source)
                runs: dict[str, list[dict[str, float]]] = {"skserve score": [], "naive": []}
                for round_no in range(ROUNDS):
                    print(f"bench bulk: {model}, {rows:,} rows, round {round_no + 1}/{ROUNDS}", flush=True)
                    ours, naive = work / "ours.csv", work / "naive.csv"
                    score = [
                        str(Path(sys.executable).parent / "skserve"),
                        "score",
                        str(source),
                        "--model-dir",
                        str(model_dir),
                    ]
                    runs["skserve score"].append(measure([*score, "--output", str(ours)]))
                    runs["naive"].append(
                        measure(
                            [sys.executable, "-c", NAIVE, str(model_dir), str(source), str(naive), input_kind]
                        )
                    )
                    identical &= ours.read_bytes() == naive.read_bytes()
                for program, measured in runs.items():
                    best = min(measured, key=lambda m: m["wall_s"])
                    records.append(
                        {
                            "model": model,
                            "rows": rows,
                            "program": program,
                            "rows_per_s": rows / best["wall_s"],
                            "rows_per_cpu_s": rows / min(m["cpu_s"] for m in measured),
                            "peak_rss_mib": max(m["peak_rss_mib"] for m in measured),
                        }
                    )
                source.unlink()
    write_results(records, identical)
    return 0 if identical else 1


def write_results(records: list[dict[str, Any]], identical: bool) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    meta = {"finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit.stdout.strip()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bulk.json").write_text(
        json.dumps({**meta, "identical": identical, "records": records}, indent=2)
    )
    by_key = {(r["model"], r["rows"], r["program"]): r for r in records}
    lines = [
        "# Bulk scoring: `skserve score` against a naive script",
        "",
        f"{meta['finished_at']}, commit {meta['commit']}; best of {ROUNDS} rounds per cell, "
        "peak RSS the highest of them.",
        "The naive script is pandas.read_csv of the whole file, predict_proba, DataFrame.to_csv.",
        f"Outputs byte-identical: {'yes' if identical else 'NO'}.",
        "",
        "| model | rows | skserve rows/s | naive rows/s | ratio (>= 0.8x) | CPU-based ratio "
        "| skserve peak RSS | naive peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, rows in dict.fromkeys((r["model"], r["rows"]) for r in records):
        ours, naive = by_key[model, rows, "skserve score"], by_key[model, rows, "naive"]
        ratio = ours["rows_per_s"] / naive["rows_per_s"]
        cpu_ratio = ours["rows_per_cpu_s"] / naive["rows_per_cpu_s"]
        lines.append(
            f"| {model} | {rows:,} | {ours['rows_per_s']:,.0f} | {naive['rows_per_s']:,.0f} | {ratio:.2f}x "
            f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'} | {cpu_ratio:.2f}x "
            f"| {ours['peak_rss_mib']:,.0f} MiB | {naive['peak_rss_mib']:,.0f} MiB |"
        )
    (RESULTS / "bulk.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(run())
