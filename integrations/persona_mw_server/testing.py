"""Run the server for tests and benchmarks, public API: in a thread or as a process.

:class:`ServerThread` serves an app built by :func:`~persona_mw_server.create_app` with uvicorn
in a background thread of this process, on a free loopback port. :class:`ServerProcess` runs
``persona-mw serve`` as a subprocess (e.g. ``--workers 2``) and waits until ``/healthz`` answers.
Both expose ``base_url`` (``http://127.0.0.1:PORT``; OpenAI clients use ``base_url + "/v1"``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["ServerProcess", "ServerThread", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, deadline: float, alive: Any = None) -> None:
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if alive is not None and not alive():
            raise RuntimeError("the server exited before it became ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not become ready")
        time.sleep(0.05)


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 in a daemon thread; a context manager."""

    def __init__(self, app: Any, *, port: int | None = None, graceful_timeout: int = 5) -> None:
        import uvicorn

        self.port = port or free_port()
        self.config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=graceful_timeout,
        )
        self.server = uvicorn.Server(self.config)
        self._thread = threading.Thread(
            target=self.server.run, name="persona-mw-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> ServerThread:
        self._thread.start()
        _wait_ready(self.base_url, time.monotonic() + timeout, self._thread.is_alive)
        return self

    def stop(self, timeout: float = 20) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ServerProcess:
    """``persona-mw serve`` as a subprocess on a free port (or ``port``); a context manager.

    ``args`` are extra CLI arguments (e.g. ``["--workers", "2"]``); stderr (the JSON log) goes
    to ``log_path`` when given.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        *,
        args: list[str] | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        command = [
            sys.executable,
            "-c",
            "import sys; from persona_mw.cli import main; sys.exit(main())",
            "serve",
            "--port",
            str(self.port),
        ]
        if config is not None:
            command += ["--config", str(config)]
        self.command = command + list(args or [])
        self.env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})}
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, timeout: float = 180) -> ServerProcess:
        stderr: Any = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        if self.log_path:
            stderr.close()
        try:
            _wait_ready(
                self.base_url,
                time.monotonic() + timeout,
                lambda: self.proc is not None and self.proc.poll() is None,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def terminate(self) -> None:
        """Ask for a graceful shutdown (SIGTERM) without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
