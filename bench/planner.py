"""Rules planner benchmark: latency per prompt and accuracy on each test corpus.

    python bench/planner.py [--repeat 50]

A prompt is right when its plan has the expected trigger, cron (and time zone),
connectors in order and the details it must ask for (`inputs`), with nothing left not
understood. The corpora (tests/workflows/): `planner_corpus` is the one the rules were
first written against; `planner_corpus_fresh` (88 requests in varied wording) was written
before the rules were widened; `planner_corpus_blind` was written after and read once.
Latency is per `plan_with_rules` call, validation included. Prints JSON.
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

from levqor.workflows.planner import NotUnderstood, plan_with_rules

CORPORA = Path(__file__).parent.parent / "tests" / "workflows"
NAMES = ("planner_corpus", "planner_corpus_fresh", "planner_corpus_blind")


def matches(case: dict[str, Any]) -> bool:
    try:
        drafted = plan_with_rules(case["prompt"])
    except NotUnderstood:
        return False
    trigger = drafted.definition["trigger"]
    zone_ok = case["trigger"] != "schedule" or trigger["timezone"] == case.get("timezone", "UTC")
    return (
        trigger["type"] == case["trigger"]
        and trigger.get("cron") == case.get("cron")
        and zone_ok
        and [step["connector"] for step in drafted.definition["steps"]] == case["connectors"]
        and sorted(n.name for n in drafted.inputs) == sorted(case.get("inputs", []))
        and not drafted.not_understood
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    corpora = {name: json.loads((CORPORA / f"{name}.json").read_text()) for name in NAMES}
    accuracy = {
        name: {
            "prompts": len(cases),
            "right": sum(matches(case) for case in cases),
            "accuracy": round(sum(matches(case) for case in cases) / len(cases), 3),
        }
        for name, cases in corpora.items()
    }
    corpus = [case for cases in corpora.values() for case in cases]
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
                "corpora": accuracy,
                "calls": len(timings),
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
