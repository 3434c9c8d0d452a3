"""Serve an ASGI app on a free 127.0.0.1 port inside the running event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn swaps the process's SIGINT/SIGTERM handlers while it serves and puts them back when it
        # stops; with several servers stopping in any order that leaves a dead server owning Ctrl-C.
        yield


class LoopbackServer:
    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        # Binding the socket ourselves gives us the port before uvicorn starts and avoids races on it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", ws="none", timeout_graceful_shutdown=2)
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"loopback-{self.name}")
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # surfaces the start-up error
                raise RuntimeError(f"{self.name} server exited before it started")
            await asyncio.sleep(0.005)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
