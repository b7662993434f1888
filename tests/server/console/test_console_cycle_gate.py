"""Resume at a manual gate from the console, end to end on SQLite and MariaDB: the world of
test_cycle_gate.py (real HTTPS server, simulated agents, the synced sample catalog, policy GateP
with ring broad behind a manual gate), the cycle paused by Prefect before ring broad, and the
run page's Resume button answering it through the same service as `patchflow cycle resume`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.agent.harness import Api
from tests.fixtures.console import add_admin, csrf_of, log_in
from tests.fixtures.install.agents import SimAgent
from tests.flows.test_cycle_gate import (  # noqa: F401 (api, fleet: the fixtures)
    _gated_policy,
    _items_on,
    _json,
    _paused_run,
    _start_cycle,
    api,
    fleet,
    prefect_paused,
)


def test_resume_from_the_run_page(api: Api, fleet: Callable[..., SimAgent],  # noqa: F811
                                  cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _gated_policy(fleet, cli)
    assert add_admin(cli, monkeypatch).code == 0
    thread, outcome = _start_cycle()
    run = _paused_run(api, thread, outcome)
    prefect_paused(_json(cli("cycle", "show", str(run), "--json"))["flow_run_id"])
    with api.client() as http:
        assert log_in(http).status_code == 303
        page = http.get(f"/console/cycle/{run}").text
        assert 'id="gate-form"' in page and 'data-step="gate:broad"' in page
        done = http.post(f"/console/cycle/{run}/gate",
                         data={"csrf_token": csrf_of(page), "decision": "resume",
                               "reason": "pilot looks fine"})
        assert done.status_code == 303, done.text[:500]
        shown = http.get(done.headers["location"]).text
        assert re.search(rf"Cycle run {run} resumed past its gate\.", shown), shown[:2000]
    thread.join(180)
    assert not thread.is_alive() and isinstance(outcome[0], dict), outcome
    out = _json(cli("cycle", "show", str(run), "--json"))
    assert out["state"] == "Completed", out
    gate = next(s for s in out["steps"] if s["name"] == "gate:broad")
    assert gate["summary"] == "manual gate before ring broad: resumed by alice: pilot looks fine"
    assert _items_on(api, "WS-O") == 1
    audit = _json(cli("audit", "list", "--action", "cycle.", "--json"))
    assert any(a["action"] == "cycle.resume" and a["target"] == str(run)
               and a["source"] == "console" and a["actor"] == "alice" for a in audit), audit
