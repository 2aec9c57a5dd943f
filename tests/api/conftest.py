"""A real API server on 127.0.0.1 over a real SQLite file, a clock the test moves, and a test-only resource
(`/v2/test/things`) added through create_app's route hook that counts how often it executes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from helpers import free_port

from api.app import create_app
from api.auth import create_key
from api.http import RouteTable, decode_body, json_response
from softswitch import config
from softswitch.store import Store


class Clock:
    """Unix time that moves only when the test says."""

    def __init__(self, now: float = 1_750_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Thing(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    size: int = 1


@dataclass
class Things:
    """The test resource's state: executions counted, and a gate a test may hold closed."""

    executed: int = 0
    gate: asyncio.Event | None = None
    created: list[str] = field(default_factory=list)

    def routes(self) -> RouteTable:
        table = RouteTable()

        @table.route(
            "POST",
            "/v2/test/things",
            scope="calls:write",
            body=Thing,
            response=Thing,
            status=201,
            summary="Make a thing (test only)",
        )
        async def create_thing(request: web.Request) -> web.Response:
            body = await decode_body(request, Thing)
            self.executed += 1
            if self.gate is not None:
                await self.gate.wait()
            self.created.append(body.name)
            return json_response(body, status=201, headers={"Location": f"/v2/test/things/{body.name}"})

        @table.route("DELETE", "/v2/test/things/{name}", scope="calls:write", summary="Delete (test only)")
        async def delete_thing(request: web.Request) -> web.Response:
            self.executed += 1
            return json_response({"deleted": request.match_info["name"]})

        @table.route("GET", "/v2/test/boom", scope="calls:read", summary="Fails (test only)")
        async def boom(request: web.Request) -> web.Response:
            raise RuntimeError("secret internal detail")

        return table


@dataclass
class Reply:
    status: int
    headers: Any
    body: Any

    @property
    def error(self) -> dict:
        return self.body["error"]


@dataclass
class Api:
    url: str
    store: Store
    clock: Clock
    things: Things
    session: aiohttp.ClientSession
    admin: str  # an admin key's secret
    runner: web.AppRunner
    closed: bool = False

    async def close(self) -> None:
        """Stop the server and close its store (as a process exit would)."""
        if not self.closed:
            self.closed = True
            await self.session.close()
            await self.runner.cleanup()
            self.store.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.url + path, json=json, data=data, headers=hdrs) as resp:
            raw = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            body = msgspec.json.decode(raw) if ctype.startswith("application/json") else raw.decode()
            return Reply(resp.status, resp.headers, body)

    def key(self, *scopes: str, test: bool = False) -> str:
        """A new key's secret with these scopes."""
        return create_key(self.store, "test key", list(scopes), test, self.clock())[1]


Starter = Callable[..., Any]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Starter]:
    """`await start(config_text="", checks=None, db=None, clock=None, things=None)`: an API server on a free
    port over a store file in tmp_path; every one started is closed after the test."""
    started: list[Api] = []

    async def _start(
        config_text: str = "",
        checks: dict | None = None,
        db: Path | None = None,
        clock: Clock | None = None,
        things: Things | None = None,
    ) -> Api:
        cfg = config.parse(config_text)
        store = Store.open(db or tmp_path / "api.db")
        clock = clock or Clock()
        things = things or Things()
        app = create_app(store, cfg, checks=checks, routes=[things.routes().register], clock=clock)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        admin = create_key(store, "admin", ["admin"], False, clock())[1]
        server = Api(f"http://127.0.0.1:{port}", store, clock, things, aiohttp.ClientSession(), admin, runner)
        started.append(server)
        return server

    yield _start
    for server in started:
        await server.close()


@pytest.fixture
async def api(start: Starter) -> Api:
    return await start()
