"""The HTTP API does what its OpenAPI document says: schemathesis (pinned in the test extras)
generates requests for every operation, valid and invalid, from the server's own
/openapi.json and sends them to a real patchflow HTTPS server on loopback, authenticated as a
real admin, a real enrolled agent and a real replica. Every answer must be no 5xx, a documented
status, and a body matching the documented schema.

Bounded: a few examples per operation, so the whole run stays well under 90 s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.agent.harness import Api, base_inventory, running_api

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 4


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api("sqlite", tmp_path_factory.mktemp("schema")) as running:
        yield running


@pytest.fixture(scope="module")
def identities(api: Api) -> dict[str, dict[str, str]]:
    """Real credentials for each kind of caller, and a little data for routes to find."""
    from models.db import session_scope
    from patchflow.catalog import replication

    admin = {"Authorization": f"Bearer {api.admin_token()}"}
    with session_scope(api.db_url) as session:
        replica = {"Authorization": f"Bearer {replication.create_token(session, 'schema')}"}
    with api.client() as client:
        agent = api.enroll(client, "ws-schema-agent")
        assert client.put("/api/v1/agent/inventory", headers=agent,
                          json=base_inventory("ws-schema-agent")).status_code == 200
        client.post("/api/v1/admin/groups", headers=admin, json={"name": "Sites"})
        client.post("/api/v1/admin/endpoints/import", headers=admin,
                    json=[base_inventory("WS-0001"), base_inventory("WS-0002")])
    return {"admin": admin, "agent": agent, "replica": replica}


@pytest.fixture(scope="module")
def session(api: Api) -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.verify = str(api.cert)
        yield http


def _caller(path: str) -> str:
    if path.startswith("/api/v1/admin"):
        return "admin"
    if path.startswith("/api/v1/replication"):
        return "replica"
    return "agent"


def _run_operation(operation: Any, api: Api, headers: dict[str, str],
                   http: requests.Session) -> None:
    """The operation's documented examples, then a few generated valid and invalid requests."""
    strategies = [*operation.schema.get_strategies_from_examples(operation),
                  operation.as_strategy(GenerationMode.POSITIVE),
                  operation.as_strategy(GenerationMode.NEGATIVE)]

    for strategy in strategies:
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
                  database=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.generate])
        @given(case=strategy)
        def check(case: Any) -> None:
            case.call_and_validate(base_url=api.url, session=http, headers=dict(headers),
                                   checks=CHECKS, timeout=30, verify=str(api.cert))

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
            continue


def _describe(exc: BaseException) -> str:
    """The failure as schemathesis words it (check name, status, body, curl), short."""
    parts = [str(exc)]
    if isinstance(exc, BaseExceptionGroup):
        parts += [str(e) for e in exc.exceptions]
    text = " | ".join(" ".join(p.split()) for p in parts)
    return text[:1200]


def test_api_matches_its_openapi_document(
    api: Api, identities: dict[str, dict[str, str]], session: requests.Session
) -> None:
    with api.client() as client:
        document = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    # The credentials are real ones (below); generated Authorization values would replace them.
    schema.config.generation.update(with_security_parameters=False)
    failures: list[str] = []
    timings: list[tuple[float, str]] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    for operation in operations:
        began = time.monotonic()
        try:
            _run_operation(operation, api, identities[_caller(operation.path)], session)
        except (Exception, BaseExceptionGroup) as exc:  # every operation's failure, not the first
            failures.append(f"{operation.label}: {_describe(exc)}")
        timings.append((time.monotonic() - began, operation.label))
    print(sorted(timings)[-8:])
    assert not failures, "\n\n".join(failures)


def test_agent_scheme_requires_both_headers(api: Api) -> None:
    with api.client() as client:
        document = client.get("/openapi.json").json()
    for path, operations in document["paths"].items():
        for operation in operations.values():
            names = [set(req) for req in operation.get("security", [])]
            if any("AgentId" in n or "AgentSecret" in n for n in names):
                assert names == [{"AgentId", "AgentSecret"}], path
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/Error", (path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    enroll = document["components"]["schemas"]["EnrollRequest"]
    assert enroll["properties"]["hostname"]["pattern"].startswith("^[A-Za-z0-9_]")
    assert enroll["examples"]


def test_error_model_is_what_errors_look_like(api: Api) -> None:
    with api.client() as client:
        response = client.get("/api/v1/admin/groups")
    assert response.status_code == 401 and list(response.json()) == ["error"]


def test_documented_patterns_are_the_ones_the_server_enforces() -> None:
    from agent import schema
    from patchflow.fleet import tokens
    from server.admin_api import NAME_SCHEMA
    from server.params import HOSTNAME_PATTERN

    assert schema.HOSTNAME.pattern == HOSTNAME_PATTERN  # the contract shared with the agent
    assert NAME_SCHEMA["pattern"] == tokens._NAME.pattern


def test_the_agent_check_knows_the_fields_the_model_has() -> None:
    """agent/schema.py lists the field names itself (no pydantic on the agent): a field added to
    the model alone would make the agent's pre-flight check refuse documents the server takes."""
    from agent import schema
    from patchflow.fleet import inventory

    for model, fields in ((inventory.Inventory, schema.TOP_FIELDS),
                          (inventory.OsInfo, schema.OS_FIELDS),
                          (inventory.Program, schema.PROGRAM_FIELDS),
                          (inventory.Update, schema.UPDATE_FIELDS),
                          (inventory.MsFact, schema.MS_FACT_FIELDS)):
        assert tuple(model.model_fields) == fields, model.__name__


def test_documented_body_examples_are_accepted() -> None:
    """The examples in /openapi.json are bodies the server takes, not decoration."""
    from patchflow.fleet.inventory import Inventory
    from server import admin_api, agent_api, install_api
    from server.app import _INVENTORY_EXAMPLE

    Inventory.model_validate(_INVENTORY_EXAMPLE)
    models = [agent_api.EnrollRequest, agent_api.JobResult, admin_api.TokenCreate,
              admin_api.GroupCreate, admin_api.MoveRequest, admin_api.PolicyBody,
              admin_api.PolicyCreate, install_api.SelectBody, install_api.UnselectBody,
              install_api.JobCreate]
    for model in models:
        examples = model.model_json_schema()["examples"]
        assert examples, model.__name__
        for example in examples:
            model.model_validate(example)
