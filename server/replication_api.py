"""The replication API another patchflow instance pages through (a branch office, an
air-gapped site, the next level of a hierarchy). Authenticated with a replication token from
`patchflow server token create`; every route calls patchflow.catalog.replication or
patchflow.catalog.content_source, like the CLI does."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from models.db import get_engine
from patchflow.catalog import replication
from patchflow.catalog.content import ContentError
from patchflow.catalog.content_source import ensure_content
from server.auth import settings_of
from server.deps import SessionDep
from server.params import MAX_DB_ID

_token = HTTPBearer(
    auto_error=False, scheme_name="ReplicationToken",
    description="A token from `patchflow server token create` on this instance.",
)


def replica_name(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_token)
) -> str:
    """The replication token's name; 401 unknown, 403 revoked."""
    token = credentials.credentials if credentials else None
    return replication.token_name(get_engine(settings_of(request).database_url), token)


router = APIRouter(prefix="/api/v1/replication", tags=["replication"],
                   dependencies=[Depends(replica_name)])

_PAGE_DOC = """\
Catalog changes of one patch server in revision order: the patches offered with a revision above
`since`, whole (products, CVEs, installers, supersedence, EULA acceptance), at most `limit`.
Ask again with `since` = `next` while `more` is true. Shape: `{"format":
"patchflow-replication/1", "server", "since", "next", "latest", "more", "patches": [...]}`."""


@router.get("/patches", summary="Catalog changes since a revision", description=_PAGE_DOC,
            response_class=Response,
            responses={200: {"content": {"application/json": {}}},
                       404: {"description": "no such patch server"}})
def patches(
    session: SessionDep,
    since: int = Query(0, ge=0, le=MAX_DB_ID, description="The last revision already applied"),
    limit: int = Query(replication.DEFAULT_PAGE, ge=1, le=replication.MAX_PAGE),
    server: str | None = Query(None, description="Patch server (default: local, else first)"),
) -> Response:
    # Encoded here rather than by FastAPI: a page of 1,000 patches is ~1 MB, and the generic
    # encoder would walk it a second time.
    page = replication.changes_page(session, replication.served_server(session, server),
                                    since, limit)
    return Response(replication.encode_page(page), media_type="application/json")


@router.get("/content/{sha256}", summary="A content file by SHA-256 (fetched on demand)",
            response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}},
                       404: {"description": "no patch has this file"},
                       424: {"description": "the file could not be fetched from its source"}})
def content(
    request: Request,
    sha256: str = PathParam(pattern=r"^[0-9a-f]{64}$", description="lowercase hex"),
) -> FileResponse:
    try:
        path = ensure_content(sha256, settings_of(request).database_url)
    except ContentError as exc:
        raise HTTPException(status_code=424, detail=str(exc)) from None
    return FileResponse(path, media_type="application/octet-stream",
                        headers={"Cache-Control": "private, max-age=31536000, immutable"})
