"""The requests a fleet makes most, answered before routing.

At fleet scale nearly every agent request is a poll with nothing to do or an upload of the
inventory already stored (`If-None-Match` naming it). Both can be answered from the in-process
credential cache and work index alone, and for those FastAPI's routing and dependency solving
cost more than the answer itself (measured: about 150 µs of a 250 µs request in process). This
ASGI middleware answers them when memory alone does, exactly as the routes would (same checks,
same bodies).

An unchanged upload due its once-a-second touch is answered here too, the touch awaited
through the inventory writer. A changed inventory from an agent memory knows is stored here,
without FastAPI's routing, dependency solving and route layers (~5-10% of the server's samples
under a burst of changed uploads, py-spy), on the event loop, awaiting the inventory writer (no
worker thread per request; patchflow/fleet/group_commit.py): whole (PUT) by
`store_known_upload`, as changes (PATCH) by `store_known_changes`. A whole upload naming the
digest memory holds, which memory could not answer (counts unknown after a restart), is left to
the route's own `store_upload` in a worker thread: it reads the stored digest first, which
may block. Success is answered here, and changes that do not apply (412, as every route
answers it). When storing raises anything else, the request goes on to the route with its
body, which does it again and answers the error as every route does (errors are rare; a
failed store rolled back, so a second attempt is harmless).

Anything else, including every request it has a doubt about, goes on to the routes in
server/agent_api.py, which authenticate the slow way and answer errors.

Memory answers only while what it was read from is less than CACHE_SECONDS old (the
credentials generation and the work index, patchflow.fleet.agent_cache). Left to expire, every
CACHE_SECONDS a burst of requests (all 64 of the bench's agents) found them stale at once and
went the slow way, through routing, worker threads and a query each: the p99 of polls and
uploads. So the first request to find them within REFRESH_AHEAD of expiring starts one read of
both in a worker thread and is answered from memory meanwhile; a request that finds them
expired (a server idle for a while) awaits that one read instead of taking the route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.base import utcnow
from models.db import get_engine
from patchflow import fleet
from server.agent_api import store_known_changes, store_known_upload, store_upload
from server.auth import AgentCredentials, presented_credentials
from server.errors import user_error_response
from server.settings import ServerSettings

log = logging.getLogger("patchflow.server")

INVENTORY_PATH = "/api/v1/agent/inventory"
JOBS_PATH = "/api/v1/agent/jobs"
AGENT_PATHS = frozenset({INVENTORY_PATH, JOBS_PATH})
# How long before the caches expire the fast path starts reading them again: well above a
# read's time under load (a query or two, milliseconds), well below CACHE_SECONDS.
REFRESH_AHEAD = 1.0


class AgentFastPath:
    """Sits inside BodyLimitMiddleware, so an upload's body is already read (and its size
    checked) when an unchanged one is answered: the connection stays clean for the next request."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings
        self._refreshing: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in AGENT_PATHS:
            await self._keep_fresh()
            answer, receive = await self._answer(scope, receive)
            if answer is not None:
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[Response | None, Receive]:
        """(the answer, or None and the `receive` that gives the route the body)."""
        method, path = scope["method"], scope["path"]
        if method == "GET" and path == JOBS_PATH:
            entry = cached(self._credentials(scope, Headers(scope=scope)))
            if entry is not None and fleet.known_idle(self.settings.database_url,
                                                      entry.endpoint_id):
                return Response(b"[]", media_type="application/json"), receive
        elif method == "PUT" and path == INVENTORY_PATH:
            headers = Headers(scope=scope)
            credentials = self._credentials(scope, headers)
            entry = cached(credentials)
            if entry is not None:
                wanted = fleet.requested_digest(headers.get("if-none-match"))
                now = utcnow()
                ack = fleet.unchanged_ack(entry, wanted, now)
                if ack is None and fleet.touch_answers(entry, wanted, now):
                    ack = await self._touch(credentials, entry)
                if ack is not None:
                    return JSONResponse(ack), receive
                if entry.pending:
                    return None, receive  # the route refuses it (409)
                if wanted is not None and wanted == entry.inventory_sha256:
                    return await self._store_threaded(credentials, wanted, receive)
                return await self._store_whole(credentials, fleet.agent_identity(entry),
                                               receive)
        elif method == "PATCH" and path == INVENTORY_PATH:
            headers = Headers(scope=scope)
            credentials = self._credentials(scope, headers)
            entry = cached(credentials)
            base = fleet.requested_digest(headers.get("if-match"))
            if entry is not None and not entry.pending and base is not None:
                return await self._store_changes(credentials, fleet.agent_identity(entry), base,
                                                 receive)
        return None, receive

    async def _keep_fresh(self) -> None:
        """Start reading the caches when they expire within REFRESH_AHEAD (one read at a time),
        and wait for that read when they have expired."""
        url = self.settings.database_url
        if not fleet.caches_due(url, REFRESH_AHEAD):
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(
                run_in_threadpool(fleet.refresh_caches, url, REFRESH_AHEAD))
            self._refreshing.add_done_callback(_log_failure)
        if fleet.caches_due(url):
            # Failed reads are logged once, by the callback; the route reads for itself.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._refreshing)

    async def _touch(self, credentials: AgentCredentials,
                     entry: fleet.CachedAgent) -> dict[str, Any] | None:
        """An unchanged upload whose touch is due or whose digest memory read too long ago,
        touched (and confirmed) with the writer's next batch; None when that failed or the
        digest is no longer the stored one (the upload goes on to be stored the slow way)."""
        settings = credentials.settings
        assert credentials.agent_id is not None  # memory knew it
        try:
            await fleet.touch_unchanged(settings.database_url, credentials.agent_id, entry,
                                        fleet.Sighting(credentials.ip, settings.internal))
        except Exception as exc:
            log.debug("unchanged upload's touch handed to the route: %s", type(exc).__name__)
            return None
        return fleet.unchanged_ack_for(entry)

    async def _store_threaded(self, credentials: AgentCredentials, tag: str,
                              receive: Receive) -> tuple[Response | None, Receive]:
        """A whole upload of an agent memory knows, naming the inventory memory holds but
        could not answer, stored by the route's own `store_upload` in a worker thread: it
        reads the stored digest first."""
        return await _answered(receive, lambda body: run_in_threadpool(
            store_upload, body, credentials, tag))

    async def _store_whole(self, credentials: AgentCredentials, agent: fleet.AgentIdentity,
                           receive: Receive) -> tuple[Response | None, Receive]:
        """A changed whole inventory from an agent memory authenticated, stored from the event
        loop."""
        return await _answered(receive, lambda body: store_known_upload(body, credentials,
                                                                        agent))

    async def _store_changes(self, credentials: AgentCredentials, agent: fleet.AgentIdentity,
                             base: str, receive: Receive) -> tuple[Response | None, Receive]:
        """Changes from an agent memory authenticated, stored from the event loop."""
        return await _answered(receive, lambda body: store_known_changes(
            body, credentials, agent, base))

    def _credentials(self, scope: Scope, headers: Headers) -> AgentCredentials:
        client = scope.get("client")
        return presented_credentials(headers, client[0] if client else None, self.settings)


def _log_failure(read: asyncio.Future[None]) -> None:
    if not read.cancelled() and read.exception() is not None:
        log.warning("reading the agent caches failed: %s", read.exception())


def cached(credentials: AgentCredentials) -> fleet.CachedAgent | None:
    """The agent from memory when that alone answers (see fleet.cached_agent); never queries."""
    return fleet.cached_agent(get_engine(credentials.settings.database_url),
                              credentials.agent_id, credentials.secret, credentials.ip)


async def _answered(receive: Receive, store: Callable[[bytes], Awaitable[dict[str, Any]]]
                    ) -> tuple[Response | None, Receive]:
    """The ack of `store(body)` (or the 412 of changes that do not apply), or None and the
    `receive` that gives the route the body when storing raised anything else: the route
    answers it, the way every route answers errors."""
    message = await receive()  # the whole body: BodyLimitMiddleware buffered it
    again = _replay(message, receive)
    if message["type"] != "http.request" or message.get("more_body", False):
        return None, again
    try:
        ack = await store(message.get("body", b""))
    except fleet.Stale as exc:
        # Changes that do not apply: answered as the route would, without the route applying
        # them again. After a restore every agent's next changes get this answer, at once.
        return user_error_response(exc), receive
    except Exception as exc:
        log.debug("inventory upload handed to the route: %s", type(exc).__name__)
        return None, again
    return JSONResponse(ack), receive


def _replay(first: Message, receive: Receive) -> Receive:
    """`receive` for the route: the message already read, then the connection's own."""
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return first
        return await receive()

    return again
