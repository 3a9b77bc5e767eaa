"""Cost of the dependence stage's pure part per request, three users side by side (light,
regular, very heavy), medians over repeated runs:

- full recompute: ``compute_signals`` over every event + ``run_ladder`` (offline analysis, and
  what the live stage did per request before it kept a digest);
- digest: what the live stage does per request now — add the new message to the user's
  ``UsageDigest``, read the signals, ``run_ladder``.

Run: .venv/bin/python benchmarks/bench_signals_compute.py
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from persona_mw.signals import UsageDigest, UsageEvent, compute_signals, run_ladder

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
    print(f"{'user':28s} {'events':>6s}  {'full recompute':>15s}  {'digest':>10s}  ratio")
    for name, (days, per_day) in CASES.items():
        events = timeline(days, per_day)
        now = events[-1].ts
        full, digest_times = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            run_ladder(compute_signals(events, now))
            full.append(time.perf_counter() - start)
        digest = UsageDigest.of(events[:-1])
        for _ in range(rounds):
            start = time.perf_counter()
            digest.add(events[-1])
            run_ladder(digest.signals(now))
            digest_times.append(time.perf_counter() - start)
            digest = UsageDigest.of(events[:-1])  # undo the add; not timed
        f, d = statistics.median(full) * 1000, statistics.median(digest_times) * 1000
        print(f"{name:28s} {len(events):6d}  {f:12.3f} ms  {d:7.3f} ms  x{f / d:5.1f}")


if __name__ == "__main__":
    main()
