"""In-process ceiling: how many request bodies one core can parse and score with no HTTP at all."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import joblib


def measure(model_path: Path, bodies: list[bytes], seconds: float) -> dict[str, float]:
    """Loop json.loads + predict_proba over the bodies for about `seconds`; calls/s, rows/s, CPU/call."""
    model = joblib.load(model_path)
    for body in bodies[:3]:  # warm caches and lazy imports outside the timed loop
        model.predict_proba(json.loads(body)["instances"])
    calls = rows = 0
    cpu_start = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for body in bodies:
            instances = json.loads(body)["instances"]
            model.predict_proba(instances)
            calls += 1
            rows += len(instances)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start  # robust to other work on the core, unlike elapsed
    return {
        "calls_per_s": calls / elapsed,
        "rows_per_s": rows / elapsed,
        "cpu_ms_per_call": cpu * 1000 / calls,
        "seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="path to model.joblib")
    parser.add_argument("bodies", type=Path, help="JSON file holding a list of request bodies (strings)")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    bodies = [body.encode() for body in json.loads(args.bodies.read_text())]
    print(json.dumps(measure(args.model, bodies, args.seconds)))


if __name__ == "__main__":
    main()
