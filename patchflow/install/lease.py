"""One install job, one driver: a lease in the database.

The install flow is started by `install … --wait`, by `jobs resume`, by the admin API and by
`patchflow serve` when it resumes jobs after a restart. Two flows driving one job would both
dispatch, sweep and finish it. So a flow first takes the job's lease with one conditional
UPDATE (free, expired, already its own, or held by a process of this host that is gone), renews
it while it runs and releases it at the end. A driver killed without a chance to release it
leaves a lease that expires after LEASE_SECONDS (or at once for a process of this host known to
be dead), and only then can another flow take the job over.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update

from models import InstallJob
from models.base import utcnow
from models.db import session_scope
from patchflow.errors import NotFoundError
from patchflow.ops.childproc import ended

LEASE_SECONDS = 90.0
logger = logging.getLogger("patchflow.install")


class JobLeased(Exception):
    """Another live flow drives the job."""

    def __init__(self, job_id: int, owner: str, until: dt.datetime | None) -> None:
        when = until.strftime("%Y-%m-%d %H:%M:%S UTC") if until else "?"
        super().__init__(f"install job {job_id} is being driven by another flow ({owner}, "
                         f"lease until {when}); not starting a second one")
        self.owner, self.until = owner, until


def new_owner() -> str:
    """host:pid:token; the token tells two leases of one process apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:128]


def owner_is_dead(owner: str | None) -> bool:
    """True only when `owner` names a process of this host that no longer exists."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return pid.isdigit() and ended(host, int(pid))


def acquire(job_id: int, owner: str, seconds: float = LEASE_SECONDS,
            database_url: str | None = None) -> bool:
    """Take the lease atomically; False when another live driver holds it."""
    now = utcnow()
    until = now + dt.timedelta(seconds=seconds)
    takeable = or_(InstallJob.lease_owner.is_(None), InstallJob.lease_owner == owner,
                   InstallJob.lease_expires_at.is_(None), InstallJob.lease_expires_at < now)
    with session_scope(database_url) as session:
        row = session.execute(select(InstallJob.lease_owner)
                              .where(InstallJob.id == job_id)).one_or_none()
        if row is None:
            raise NotFoundError(f"no install job {job_id}")
        current = row[0]
        if current and current != owner and owner_is_dead(current):
            # The previous driver died on this host: its lease is void before it expires.
            takeable = or_(takeable, InstallJob.lease_owner == current)
        result = session.execute(
            update(InstallJob).where(and_(InstallJob.id == job_id, takeable))
            .values(lease_owner=owner, lease_expires_at=until)
            .execution_options(synchronize_session=False))
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def renew(job_id: int, owner: str, seconds: float = LEASE_SECONDS,
          database_url: str | None = None) -> bool:
    """Extend a lease still held; False when it was lost (expired and taken over)."""
    with session_scope(database_url) as session:
        result = session.execute(
            update(InstallJob).where(InstallJob.id == job_id, InstallJob.lease_owner == owner)
            .values(lease_expires_at=utcnow() + dt.timedelta(seconds=seconds))
            .execution_options(synchronize_session=False))
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def release(job_id: int, owner: str, database_url: str | None = None) -> None:
    with session_scope(database_url) as session:
        session.execute(
            update(InstallJob).where(InstallJob.id == job_id, InstallJob.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False))


def holder(job_id: int, database_url: str | None = None) -> tuple[str | None, dt.datetime | None]:
    with session_scope(database_url) as session:
        row = session.execute(select(InstallJob.lease_owner, InstallJob.lease_expires_at)
                              .where(InstallJob.id == job_id)).one_or_none()
    return (row[0], row[1]) if row else (None, None)


def is_free(owner: str | None, until: dt.datetime | None, now: dt.datetime | None = None) -> bool:
    """Whether a job with this lease may be resumed by someone else."""
    now = now or utcnow()
    return owner is None or until is None or until < now or owner_is_dead(owner)


@dataclass
class Held:
    job_id: int
    owner: str
    lost: bool = False


@contextmanager
def hold(job_id: int, seconds: float = LEASE_SECONDS,
         database_url: str | None = None) -> Iterator[Held]:
    """Hold the job's lease for the block, renewed every third of its length; JobLeased when
    another live driver has it."""
    owner = new_owner()
    if not acquire(job_id, owner, seconds, database_url):
        current, until = holder(job_id, database_url)
        raise JobLeased(job_id, current or "?", until)
    held = Held(job_id, owner)
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(seconds / 3):
            try:
                if not renew(job_id, owner, seconds, database_url):
                    held.lost = True
                    logger.warning("install job %d: lease lost to another driver", job_id)
                    return
            except Exception as exc:  # the database is briefly away: try again next time
                logger.warning("install job %d: could not renew the lease: %s", job_id, exc)

    thread = threading.Thread(target=keep, daemon=True, name=f"install-lease-{job_id}")
    thread.start()
    try:
        yield held
    finally:
        stop.set()
        thread.join(5)
        try:
            release(job_id, owner, database_url)
        except Exception as exc:  # it expires on its own
            logger.warning("install job %d: could not release the lease: %s", job_id, exc)
