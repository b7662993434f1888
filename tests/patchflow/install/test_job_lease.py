"""One install job, one driver: the lease on install_jobs, on SQLite and MariaDB.

Two drivers racing for a job: exactly one gets it. A lease is renewed while held and released
at the end; an expired lease, or one held by a process of this host that is gone, can be taken
over; `serve`'s resume launches only jobs whose lease is free; the install flow for a job that
a live driver holds ends at once with a clear message instead of driving it too.
"""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import update

from models import InstallJob
from models.base import utcnow
from models.db import session_scope
from patchflow.errors import NotFoundError
from patchflow.install import launch, lease


def _job(status: str = "running") -> int:
    with session_scope() as session:
        job = InstallJob(created_by="tests", status=status)
        session.add(job)
        session.flush()
        return job.id


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_two_drivers_race_and_only_one_acquires(home: Path) -> None:
    job_id = _job()
    owners = [f"host-{n}:{1000 + n}:tok{n}" for n in range(6)]
    results: dict[str, bool] = {}
    barrier = threading.Barrier(len(owners))

    def drive(owner: str) -> None:
        barrier.wait()
        results[owner] = lease.acquire(job_id, owner)

    threads = [threading.Thread(target=drive, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [o for o, ok in results.items() if ok]
    assert len(results) == len(owners) and len(winners) == 1
    assert lease.holder(job_id)[0] == winners[0]
    # The holder may renew (and re-acquire); the others still may not take it.
    assert lease.renew(job_id, winners[0]) and lease.acquire(job_id, winners[0])
    loser = next(o for o in owners if o != winners[0])
    assert not lease.acquire(job_id, loser) and not lease.renew(job_id, loser)


def test_an_expired_lease_can_be_taken_over(home: Path) -> None:
    job_id = _job()
    assert lease.acquire(job_id, "elsewhere:1:a", seconds=60)
    assert not lease.acquire(job_id, "elsewhere:2:b")
    with session_scope() as session:  # as if the first driver stopped renewing 2 min ago
        session.execute(update(InstallJob).where(InstallJob.id == job_id).values(
            lease_expires_at=utcnow() - dt.timedelta(seconds=30)))
    assert lease.is_free(*lease.holder(job_id))
    assert lease.acquire(job_id, "elsewhere:2:b")
    assert not lease.renew(job_id, "elsewhere:1:a")  # the old driver learns it lost the job
    lease.release(job_id, "elsewhere:1:a")  # a stale release does not free the new lease
    assert lease.holder(job_id)[0] == "elsewhere:2:b"


def test_a_dead_local_driver_frees_its_lease_before_expiry(home: Path) -> None:
    job_id = _job()
    dead = f"{socket.gethostname()}:{_dead_pid()}:dead"
    assert lease.acquire(job_id, dead, seconds=3600)
    assert lease.is_free(*lease.holder(job_id))
    assert lease.acquire(job_id, "next:1:x")
    # A live process of this host (this one) keeps its lease.
    alive = lease.new_owner()
    job2 = _job()
    assert lease.acquire(job2, alive, seconds=3600)
    assert not lease.is_free(*lease.holder(job2)) and not lease.acquire(job2, "next:1:x")


def test_hold_renews_and_releases(home: Path) -> None:
    job_id = _job()
    with lease.hold(job_id, seconds=1.5) as held:
        first = lease.holder(job_id)[1]
        threading.Event().wait(1.2)  # more than a third of the lease: renewed meanwhile
        owner, later = lease.holder(job_id)
        assert owner == held.owner and first and later and later > first
        with pytest.raises(lease.JobLeased, match="being driven by another flow"), \
                lease.hold(job_id):
            pass
    assert lease.holder(job_id) == (None, None)
    with pytest.raises(NotFoundError):
        lease.acquire(99999, "x:1:y")


def test_resume_launches_only_jobs_with_a_free_lease(home: Path) -> None:
    leased, expired, free, done = _job(), _job(), _job("pending"), _job("done")
    assert lease.acquire(leased, lease.new_owner(), seconds=3600)  # a live `install --wait`
    assert lease.acquire(expired, "gone:1:z", seconds=60)
    with session_scope() as session:
        session.execute(update(InstallJob).where(InstallJob.id == expired).values(
            lease_expires_at=utcnow() - dt.timedelta(seconds=1)))
    launched: list[int] = []
    original = launch.LAUNCHER[0]
    launch.LAUNCHER[0] = lambda job_id: launched.append(job_id) or 0  # type: ignore[func-returns-value]
    try:
        assert launch.resume_unfinished() == [expired, free]
    finally:
        launch.LAUNCHER[0] = original
    assert launched == [expired, free] and done not in launched


@pytest.mark.usefixtures("prefect")
def test_a_second_flow_for_a_driven_job_stops_at_once(home: Path) -> None:
    from flows.install import install

    job_id = _job()
    other = lease.new_owner()  # this process stands for a live `install now --wait`
    assert lease.acquire(job_id, other, seconds=3600)
    summary = install(job_id, poll_seconds=0.1)
    assert summary["status"] == "busy"
    assert "being driven by another flow" in summary["summary"]
    assert lease.holder(job_id)[0] == other
    with session_scope() as session:
        job = session.get(InstallJob, job_id)
        assert job is not None and job.status == "running" and job.flow_run_id is None
