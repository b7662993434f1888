"""HTTP client settings for talking to upstreams: timeouts, proxy, retries with backoff.

Retries live here, in urllib3, rather than as Prefect task retries: a transient 503 from MSRC
should cost a second, not a task re-run with a logged traceback, and the timeouts must be set in
the client because Prefect's timeout cannot interrupt a blocking socket read.
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from patchflow import __version__

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
TIMEOUT = (CONNECT_TIMEOUT, READ_TIMEOUT)


def make_session(
    proxies: dict[str, str] | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    verify: bool | str = True,
) -> requests.Session:
    """A session that retries connection errors and 429/5xx with exponential backoff."""
    session = requests.Session()
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = f"patchflow/{__version__}"
    if proxies:
        session.proxies.update(proxies)
        session.trust_env = False  # the configured proxy wins over environment variables
    session.verify = verify
    return session


def describe_error(exc: BaseException) -> str:
    """One line for a sync status, without credentials that may sit in a proxy URL."""
    if isinstance(exc, requests.exceptions.ProxyError):
        return "proxy error: cannot reach the upstream through the configured proxy"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error: the upstream's certificate was refused"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "cannot connect to the upstream"
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        if exc.response.status_code == 407:
            return "proxy authentication failed (HTTP 407): check the proxy user and password"
        return f"HTTP {exc.response.status_code} from {exc.response.url}"
    if isinstance(exc, requests.exceptions.RetryError):
        return "upstream kept failing after retries"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
