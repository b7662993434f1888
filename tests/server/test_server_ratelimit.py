"""Failed enrollments and logins are braked per (client address, subject), in the database so
every worker shares the count, and X-Forwarded-For counts only from a configured trusted proxy.
On SQLite and MariaDB."""

from __future__ import annotations

import ipaddress
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from models.db import get_engine
from patchflow import config
from server.proxies import client_address, trusted_proxies
from server.ratelimit import ADDRESS_FACTOR, FailureLimiter, subject_of
from tests.fixtures.agent.harness import Api, running_api

LIMIT = 3


def _networks(*cidrs: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c) for c in cidrs]


# --- the limiter over a real database --------------------------------------------------------


def test_one_subject_does_not_block_another_from_the_same_address(db_url: str) -> None:
    limiter = FailureLimiter("enroll", LIMIT)
    stale, fresh = subject_of("pfe_revoked"), subject_of("pfe_good")
    for _ in range(LIMIT):
        assert limiter.retry_after(db_url, "198.51.100.7", stale) == 0
        limiter.record_failure(db_url, "198.51.100.7", stale)
    assert 1 <= limiter.retry_after(db_url, "198.51.100.7", stale) <= 60
    assert limiter.retry_after(db_url, "198.51.100.7", fresh) == 0
    assert limiter.retry_after(db_url, "203.0.113.9", stale) == 0


def test_an_address_trying_new_subjects_is_still_braked(db_url: str) -> None:
    limiter = FailureLimiter("enroll", LIMIT)
    for i in range(LIMIT * ADDRESS_FACTOR):
        limiter.record_failure(db_url, "198.51.100.7", subject_of(f"guess-{i}"))
    assert limiter.retry_after(db_url, "198.51.100.7", subject_of("never-tried")) >= 1
    assert limiter.retry_after(db_url, "198.51.100.8", subject_of("never-tried")) == 0


def test_two_workers_share_the_count(db_url: str) -> None:
    """Two limiters, as two server processes would hold, over one database."""
    worker_a, worker_b = FailureLimiter("login", LIMIT), FailureLimiter("login", LIMIT)
    alice = subject_of("alice")
    for _ in range(LIMIT - 1):
        worker_a.record_failure(db_url, "192.0.2.1", alice)
    worker_b.record_failure(db_url, "192.0.2.1", alice)
    assert worker_a.retry_after(db_url, "192.0.2.1", alice) >= 1
    assert worker_b.retry_after(db_url, "192.0.2.1", alice) >= 1
    # Scopes are separate limits: login failures do not slow enrollment down.
    assert FailureLimiter("enroll", LIMIT).retry_after(db_url, "192.0.2.1", alice) == 0
    worker_a.reset()
    assert worker_b.retry_after(db_url, "192.0.2.1", alice) == 0


def test_failures_age_out_of_the_window(db_url: str) -> None:
    limiter = FailureLimiter("enroll", 1, window_seconds=1.5)
    limiter.record_failure(db_url, "192.0.2.1", "s")
    assert limiter.retry_after(db_url, "192.0.2.1", "s") >= 1
    time.sleep(2.1)  # MariaDB DATETIME keeps whole seconds
    assert limiter.retry_after(db_url, "192.0.2.1", "s") == 0
    limiter.record_failure(db_url, "192.0.2.2", "s")  # prunes the expired row
    with get_engine(db_url).connect() as conn:
        rows = conn.execute(sa.text("SELECT address FROM auth_failures")).scalars().all()
    assert rows == ["192.0.2.2"]


# --- which address a request comes from ------------------------------------------------------


def test_forwarded_for_is_ignored_unless_the_peer_is_trusted() -> None:
    xff = ["203.0.113.50"]
    assert client_address("127.0.0.1", xff, []) == "127.0.0.1"
    assert client_address("198.51.100.1", xff, _networks("127.0.0.0/8")) == "198.51.100.1"
    assert client_address("127.0.0.1", xff, _networks("127.0.0.0/8")) == "203.0.113.50"


def test_forwarded_for_chain_stops_at_the_first_untrusted_hop() -> None:
    proxies = _networks("10.0.0.0/8")
    # The client wrote a fake first hop; our proxies appended the real ones after it.
    chain = ["1.1.1.1, 203.0.113.50", "10.0.0.2"]
    assert client_address("10.0.0.1", chain, proxies) == "203.0.113.50"
    assert client_address("10.0.0.1", ["not-an-ip, 10.0.0.3"], proxies) == "10.0.0.3"
    assert client_address("10.0.0.1", [], proxies) == "10.0.0.1"
    assert client_address(None, chain, proxies) is None


def test_trusted_proxies_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHFLOW_TRUSTED_PROXIES", "10.0.0.0/8, 2001:db8::/32")
    assert [str(n) for n in trusted_proxies()] == ["10.0.0.0/8", "2001:db8::/32"]
    monkeypatch.setenv("PATCHFLOW_TRUSTED_PROXIES", "")
    assert trusted_proxies() == []
    with pytest.raises(config.ConfigError, match="not a network"):
        trusted_proxies("10.0.0.0/8,proxy.corp")


# --- over HTTPS ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def proxied(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Api]:
    """A server behind a trusted reverse proxy on loopback."""
    folder = tmp_path_factory.mktemp(f"ratelimit-{request.param}")
    with running_api(request.param, folder, enroll_failures_per_minute=LIMIT,
                     trusted_proxies=_networks("127.0.0.0/8")) as api:
        yield api


def _enroll(http: httpx.Client, token: str, forwarded: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return http.post("/api/v1/agent/enroll", json={"token": token, "hostname": "ws-nat"},
                     headers=headers)


def test_trusted_proxy_forwarded_address_is_the_key(proxied: Api) -> None:
    proxied.reset()
    with proxied.client() as http:
        for _ in range(LIMIT):
            assert _enroll(http, "pfe_guess", "203.0.113.5").status_code == 401
        assert _enroll(http, "pfe_guess", "203.0.113.5").status_code == 429
        # Same token from another client behind the proxy: its own count.
        assert _enroll(http, "pfe_guess", "203.0.113.6").status_code == 401


def test_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path_factory: pytest.TempPathFactory
                                                         ) -> None:
    folder = tmp_path_factory.mktemp("ratelimit-untrusted")
    with running_api("sqlite", folder, enroll_failures_per_minute=LIMIT) as api, \
            api.client() as http:
        for i in range(LIMIT):
            # A guesser cannot dodge the limit by inventing a new X-Forwarded-For each time.
            assert _enroll(http, "pfe_guess", f"203.0.113.{i}").status_code == 401
        blocked = _enroll(http, "pfe_guess", "203.0.113.99")
        assert blocked.status_code == 429
        assert "127.0.0.1" in blocked.json()["error"]
        # Another agent behind the same address, with its own good token, still enrolls.
        assert _enroll(http, api.token()).status_code == 201


def test_two_server_instances_share_the_count(proxied: Api) -> None:
    """A second app over the same database (another worker) sees the first one's failures."""
    from server.app import create_app
    from server.run import BackgroundServer
    from server.settings import ServerSettings

    proxied.reset()
    second = create_app(ServerSettings(database_url=proxied.db_url,
                                       enroll_failures_per_minute=LIMIT))
    key = proxied.cert.with_suffix(".key")
    with BackgroundServer(second, proxied.cert, key) as other, proxied.client() as first:
        for _ in range(LIMIT):
            assert _enroll(first, "pfe_guess").status_code == 401
        context = ssl.create_default_context(cafile=str(proxied.cert))
        with httpx.Client(base_url=other.url, verify=context, timeout=30) as http:
            response = _enroll(http, "pfe_guess")
    assert response.status_code == 429, response.text


def test_failed_logins_block_the_user_name_not_the_address(
    proxied: Api, cli, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    from server.console.login import LOGIN_FAILURES_PER_MINUTE
    from tests.server.console.test_console import PASSWORD, add_admin, log_in

    proxied.reset()
    monkeypatch.setenv("PATCHFLOW_HOME", str(proxied.home))
    monkeypatch.setenv("PATCHFLOW_DATABASE_URL", proxied.db_url)
    assert add_admin(cli, monkeypatch, "alice").code == 0
    assert add_admin(cli, monkeypatch, "bob").code == 0
    with proxied.client() as http:
        for _ in range(LOGIN_FAILURES_PER_MINUTE):
            assert log_in(http, "alice", "wrong password").status_code == 401
        blocked = log_in(http, "alice", PASSWORD)
        assert blocked.status_code == 429 and "Too many failed logins" in blocked.text
        assert int(blocked.headers["retry-after"]) >= 1
    with proxied.client() as other:  # another administrator behind the same address
        assert log_in(other, "bob", PASSWORD).status_code == 303
