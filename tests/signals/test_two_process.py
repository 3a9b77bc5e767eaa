"""Two real processes record usage for the same users into the same Redis at the same time: the
counts come out exact (no lost or doubled event, one user listed once)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections import Counter
from pathlib import Path

from persona_mw.signals.usage_store import RedisUsageStore

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 400
USERS = 7

#: One writer process: waits at a Redis barrier so both write at once, then records REQUESTS
#: requests spread over USERS shared users through the real recorder, and closes gracefully.
WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    from datetime import UTC, datetime
    import redis
    from persona_mw.profile import Profile
    from persona_mw.signals.recorder import UsageRecorder
    from persona_mw.signals.usage_store import RedisUsageStore
    from persona_mw.types import CallContext

    url, prefix, name, requests, users = sys.argv[1:6]
    barrier = redis.Redis.from_url(url)
    barrier.incr(prefix + "barrier")
    while int(barrier.get(prefix + "barrier")) < 2:
        time.sleep(0.005)

    async def main() -> None:
        recorder = UsageRecorder(RedisUsageStore(url, prefix=prefix), batch_size=50)
        for n in range(int(requests)):
            user = f"user-{n % int(users)}"
            messages = [{"role": "user", "content": "hi"}]
            ctx = CallContext(
                request_id=f"{name}-{n}", user_id=user, user_hash="h", model="m",
                messages=messages, prompt_messages=messages, stream=False, llm_kwargs={},
                profile=Profile(user_id=user), profile_source="default",
                started_at=datetime.now(UTC),
            )
            ctx.output_text = "hello"
            await recorder(ctx)
            if n % 20 == 0:
                await asyncio.sleep(0)  # let the writer interleave with the other process
        await recorder.aclose()
        assert (recorder.stored, recorder.dropped, recorder.pending) == (2 * int(requests), 0, 0)
        print(recorder.stored)

    asyncio.run(main())
    """
)


async def test_two_processes_recording_at_once_give_exact_counts(
    redis_url: str, key_prefix: str
) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", WRITER, redis_url, key_prefix, name),
            *(str(REQUESTS), str(USERS)),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for name in ("p0", "p1")
    ]
    for proc in procs:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip().splitlines()[-1] == str(2 * REQUESTS)

    store = RedisUsageStore(redis_url, prefix=key_prefix)
    users = await store.users()
    assert users == sorted(f"user-{i}" for i in range(USERS))
    per_request: Counter[str] = Counter()
    total = 0
    for user in users:
        events = await store.events(user)
        total += len(events)
        per_request.update(e.request_id for e in events)
        expected = sum(1 for n in range(REQUESTS) if n % USERS == int(user.split("-")[1]))
        assert len(events) == 2 * 2 * expected  # two processes, two events per request
    await store.aclose()
    assert total == 2 * 2 * REQUESTS
    assert set(per_request.values()) == {2}  # each request: its user event and its reply
    assert {r.split("-")[0] for r in per_request} == {"p0", "p1"}
