"""Slows down guessing of enrollment tokens and console passwords.

Failures count per (client address, subject), the subject being a short hash of what was tried
(the token, the user name): an agent stuck on a revoked token, or a mistyped password, blocks
only itself, not every enrolment or login from the same NAT. A second, looser cap per address
(ADDRESS_FACTOR times the first) still brakes someone who tries a new subject each time.

The failures live in the database (`auth_failures`), so all server workers share one count and a
restart does not wipe it; rows older than the window are deleted as new failures arrive.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import threading

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from models import AuthFailure
from models.base import utcnow
from models.db import get_engine

# An address may fail this many times the per-subject limit, over all subjects, per window.
ADDRESS_FACTOR = 10
ANY_SUBJECT = "*"
SUBJECT_CHARS = 16
# Stored addresses are cut to the column; an IPv6 address with a zone id is the longest form.
ADDRESS_CHARS = 64

log = logging.getLogger("patchflow.server")
_TABLE = AuthFailure.__table__


def subject_of(value: str | None) -> str:
    """A short, stable stand-in for what was tried: never the token or name itself, and enough
    bits that two agents' tokens (or two users) do not share a bucket."""
    digest = hashlib.sha256((value or "").encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:SUBJECT_CHARS]


class FailureLimiter:
    """One limit (`scope`: enroll, login) over the database at each call's `database_url`."""

    def __init__(self, scope: str, max_failures: int, window_seconds: float = 60.0,
                 address_factor: int = ADDRESS_FACTOR) -> None:
        self.scope = scope
        self.max_failures = max_failures
        self.window = dt.timedelta(seconds=window_seconds)
        self.max_per_address = max_failures * address_factor
        self._urls: set[str] = set()
        self._lock = threading.Lock()

    def retry_after(self, database_url: str, address: str, subject: str) -> int:
        """Seconds until (`address`, `subject`) may try again; 0 when it is not blocked."""
        now = utcnow()
        cutoff = now - self.window
        recent = (_TABLE.c.scope == self.scope) & (_TABLE.c.address == address[:ADDRESS_CHARS]) \
            & (_TABLE.c.failed_at > cutoff)
        by_subject = select(func.count(), func.min(_TABLE.c.failed_at)).where(
            recent & (_TABLE.c.subject == subject))
        by_address = select(func.count(), func.min(_TABLE.c.failed_at)).where(recent)
        with get_engine(database_url).connect() as conn:
            waits = []
            for query, limit in ((by_subject, self.max_failures),
                                 (by_address, self.max_per_address)):
                count, oldest = conn.execute(query).one()
                if count >= limit and oldest is not None:
                    waits.append(self._wait(oldest, now))
        return max(waits, default=0)

    def record_failure(self, database_url: str, address: str, subject: str) -> None:
        now = utcnow()
        engine = get_engine(database_url)
        with self._lock:
            self._urls.add(database_url)
        with engine.begin() as conn:
            conn.execute(insert(_TABLE).values(scope=self.scope, subject=subject,
                                               address=address[:ADDRESS_CHARS], failed_at=now))
        try:
            with engine.begin() as conn:
                conn.execute(delete(_TABLE).where(_TABLE.c.scope == self.scope,
                                                  _TABLE.c.failed_at <= now - self.window))
        except SQLAlchemyError as exc:  # housekeeping only: the next failure prunes again
            log.info("auth_failures cleanup skipped: %s", str(exc).splitlines()[0])

    def reset(self, database_url: str | None = None) -> None:
        """Forget this limit's failures (in `database_url`, or every database it recorded in)."""
        with self._lock:
            urls = [database_url] if database_url else sorted(self._urls)
        for url in urls:
            with get_engine(url).begin() as conn:
                conn.execute(delete(_TABLE).where(_TABLE.c.scope == self.scope))

    def _wait(self, oldest: dt.datetime, now: dt.datetime) -> int:
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=dt.UTC)
        return max(1, math.ceil((oldest + self.window - now).total_seconds()))
