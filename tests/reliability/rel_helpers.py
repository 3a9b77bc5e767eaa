"""Helpers for the reliability tests: real Redis processes (single and a 3-master cluster), a
finish stage that keeps the books, and resource counters (file descriptors, asyncio tasks).

Everything here runs on loopback; nothing is a mock of persona_mw's own code.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from persona_mw import CallContext
from tests.conftest import RedisServer, free_port

__all__ = [
    "Books",
    "RedisCluster3",
    "RedisServer",
    "fd_count",
    "live_tasks",
    "wait_until",
]


def fd_count() -> int:
    """Open file descriptors of this process (sockets included)."""
    return len(os.listdir("/proc/self/fd"))


def live_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if not t.done() and t is not asyncio.current_task()}


async def wait_until(check: Any, *, within_s: float = 10.0, every: float = 0.02) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s} s")
        await asyncio.sleep(every)


@dataclass
class Record:
    request_id: str
    user_id: str
    outcome: str
    profile_source: str
    own_rules: str
    rules: tuple[tuple[str, int], ...]
    output: str


@dataclass
class Books:
    """A finish stage that writes down every call the middleware finished: the ledger that
    "every request is accounted for" is checked against."""

    name: str = "books"
    records: list[Record] = field(default_factory=list)

    async def __call__(self, ctx: CallContext) -> None:
        self.records.append(
            Record(
                ctx.request_id,
                ctx.user_id,
                ctx.outcome,
                ctx.profile_source,
                ctx.profile.own_rules,
                tuple((d.rule_id, d.tier) for d in ctx.decisions),
                ctx.output_text,
            )
        )

    def outcomes(self) -> Counter[str]:
        return Counter(r.outcome for r in self.records)


class RedisCluster3:
    """Three ``redis-server --cluster-enabled yes`` masters on free loopback ports, joined with
    ``redis-cli --cluster create ... --cluster-replicas 0``. Stop with :meth:`stop`."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="persona-cluster-")
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        for i in range(3):
            port = free_port()
            node_dir = os.path.join(self.dir, str(i))
            os.makedirs(node_dir)
            self.ports.append(port)
            self.procs.append(
                subprocess.Popen(
                    [
                        binary,
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--cluster-enabled",
                        "yes",
                        # The bus port defaults to port + 10000, past 65535 for a high free port.
                        "--cluster-port",
                        str(free_port()),
                        "--cluster-config-file",
                        os.path.join(node_dir, "nodes.conf"),
                        "--dir",
                        node_dir,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            _wait_ping(port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        for port in self.ports:
            client = redis.Redis(port=port, host="127.0.0.1")
            while client.cluster("info")["cluster_state"] != "ok":
                if time.monotonic() > deadline:
                    raise TimeoutError("the local Redis Cluster did not reach cluster_state:ok")
                time.sleep(0.05)
            client.close()

    @property
    def host_port(self) -> tuple[str, int]:
        return "127.0.0.1", self.ports[0]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_ping(port: int, timeout: float = 10.0) -> None:
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
    finally:
        client.close()
