"""Rules planner benchmark: latency per prompt and accuracy on the test corpus.

    python bench/planner.py [--repeat 50]

Accuracy is the share of corpus prompts whose plan matches the expected trigger, cron
(and time zone) and connectors exactly, with nothing left not understood. Latency is per
`plan_with_rules` call, validation included. Prints JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

import argparse
import json
import statistics
import time
from typing import Any

from levqor.workflows.planner import plan_with_rules

CORPUS = Path(__file__).parent.parent / "tests" / "workflows" / "planner_corpus.json"


def matches(case: dict[str, Any]) -> bool:
    drafted = plan_with_rules(case["prompt"])
    trigger = drafted.definition["trigger"]
    zone_ok = case["trigger"] != "schedule" or trigger["timezone"] == case.get("timezone", "UTC")
    return (
        trigger["type"] == case["trigger"]
        and trigger.get("cron") == case.get("cron")
        and zone_ok
        and [step["connector"] for step in drafted.definition["steps"]] == case["connectors"]
        and not drafted.not_understood
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    corpus = json.loads(CORPUS.read_text())
    right = sum(matches(case) for case in corpus)
    timings = []
    for _ in range(args.repeat):
        for case in corpus:
            started = time.perf_counter()
            plan_with_rules(case["prompt"])
            timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    print(
        json.dumps(
            {
                "benchmark": "planner",
                "planner": "rules",
                "prompts": len(corpus),
                "calls": len(timings),
                "accuracy": round(right / len(corpus), 3),
                "latency_ms": {
                    "p50": round(statistics.median(timings), 3),
                    "p95": round(timings[int(len(timings) * 0.95)], 3),
                    "max": round(timings[-1], 3),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
