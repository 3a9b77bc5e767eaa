"""Cost of the dependence stage's pure part per request: compute_signals + run_ladder.

Three users side by side in one run (light, regular, very heavy), medians over repeated runs.
Run: .venv/bin/python benchmarks/bench_signals_compute.py
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from persona_mw.signals import UsageEvent, compute_signals, run_ladder

T0 = datetime(2025, 1, 1, 20, tzinfo=UTC)
CASES = {
    "light (1 day x 10 msgs)": (1, 10),
    "regular (28 days x 20)": (28, 20),
    "very heavy (60 days x 100)": (60, 100),
}


def timeline(days: int, per_day: int) -> list[UsageEvent]:
    events = []
    for d in range(days):
        for m in range(per_day):
            ts = T0 + timedelta(days=d, minutes=2 * m)
            events.append(UsageEvent("u", ts, "user", tz="Europe/Berlin"))
            events.append(
                UsageEvent("u", ts + timedelta(seconds=20), "assistant", tz="Europe/Berlin")
            )
    return events


def main(rounds: int = 15) -> None:
    base = None
    for name, (days, per_day) in CASES.items():
        events = timeline(days, per_day)
        now = events[-1].ts
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            run_ladder(compute_signals(events, now))
            times.append(time.perf_counter() - start)
        median = statistics.median(times) * 1000
        base = base or median
        print(f"{name:28s} {len(events):6d} events  median {median:7.2f} ms  x{median / base:6.1f}")


if __name__ == "__main__":
    main()
