"""Who is calling: an enrolled agent (X-Agent-Id + Bearer secret) or an admin (Bearer token).
Both are FastAPI dependencies, so routes declare what they need and OpenAPI documents it."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers

from models.db import get_engine
from patchflow import fleet
from server.proxies import client_address
from server.settings import ServerSettings

# Agent routes need BOTH schemes: OpenAPI lists them in one security requirement object, which
# means "and" (see app.DESCRIPTION).
_agent_id = APIKeyHeader(
    name="X-Agent-Id", auto_error=False, scheme_name="AgentId",
    description="The agent id returned by enrollment. Required together with AgentSecret.",
)
_agent_secret = HTTPBearer(
    auto_error=False, scheme_name="AgentSecret",
    description="`Authorization: Bearer <secret>`, the per-agent secret returned by enrollment. "
                "Required together with AgentId.",
)
_admin_token = HTTPBearer(
    auto_error=False, scheme_name="AdminToken",
    description="A token from `patchflow admin token create`.",
)


def settings_of(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


def client_ip(request: Request) -> str | None:
    """The client's address: the peer, or what a trusted proxy says in X-Forwarded-For."""
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist("x-forwarded-for"),
                          settings_of(request).trusted_proxies)


@dataclass(frozen=True)
class AgentCredentials:
    """What an agent presented. Checking it needs the database, so `verify()` runs in the same
    worker thread as the route's own database work: one thread hop per request, not two."""

    agent_id: str | None
    secret: str | None
    ip: str | None
    settings: ServerSettings

    def verify(self) -> fleet.AgentIdentity:
        return fleet.authenticate_agent(get_engine(self.settings.database_url), self.agent_id,
                                        self.secret, self.ip, self.settings.internal)


def presented_credentials(headers: Headers, peer: str | None,
                          settings: ServerSettings) -> AgentCredentials:
    """The AgentId and AgentSecret schemes' reading of the headers, for the routes
    (`agent_credentials`) and for server.agent_fast_path, which answers before FastAPI solves
    dependencies."""
    scheme, secret = get_authorization_scheme_param(headers.get("authorization"))
    if not scheme or scheme.lower() != "bearer":
        secret = ""
    ip = client_address(peer, headers.getlist("x-forwarded-for"), settings.trusted_proxies)
    return AgentCredentials(headers.get("x-agent-id") or None, secret or None, ip, settings)


async def agent_credentials(
    request: Request,
    _id: str | None = Depends(_agent_id),
    _secret: HTTPAuthorizationCredentials | None = Depends(_agent_secret),
) -> AgentCredentials:
    # The two schemes are declared for OpenAPI; the headers are read once, as the fast path
    # reads them.
    return presented_credentials(request.headers, request.client.host if request.client else None,
                                 settings_of(request))


def admin_name(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_admin_token),
) -> str:
    """The admin token's name, for audit fields such as created_by."""
    if credentials is None:
        raise fleet.Unauthorized("admin token required (Authorization: Bearer <token>)")
    return fleet.admin_token_name(
        get_engine(settings_of(request).database_url), credentials.credentials
    )
