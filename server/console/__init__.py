"""The web console: server-rendered pages on the API's app and port, under /console.

One module per page family; this package's `router` (one of server.app.ROUTERS)
gathers them. Templates are in server/console/templates, the hand-written stylesheet and
script in server/console/static: nothing is fetched from a CDN, so the console works
air-gapped. The pages call the same service functions as the admin API and the CLI.
"""

from __future__ import annotations

from fastapi import APIRouter

from server.console import (
    admin,
    approvals,
    backups,
    cycle,
    dashboard,
    endpoints,
    groups,
    install,
    jobs,
    login,
    policies,
    reports,
    servers,
)

router = APIRouter()
for _module in (login, dashboard, servers, groups, endpoints, install, policies, approvals,
                cycle, reports, jobs, admin, backups):
    router.include_router(_module.router, prefix="/console", include_in_schema=False)
router.include_router(login.favicon_router, include_in_schema=False)

__all__ = ["router"]
