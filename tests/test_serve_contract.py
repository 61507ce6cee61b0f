"""Contract tests generated from the live server's /openapi.json (schemathesis): no input it can think of gets a
5xx, and the answers match the documented schemas and status codes."""

from __future__ import annotations

import pytest

from ferkit.extras import installed
from tests.serve_server import Server

schemathesis = pytest.importorskip("schemathesis", reason="needs the test extra (schemathesis)")
httpx = pytest.importorskip("httpx", reason="needs the test extra (httpx)")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (schemathesis brings hypothesis)
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

KEY = "contract-key"


@pytest.fixture(scope="module")
def server():
    srv = Server("--api-key", KEY, "--max-files", "4")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(server.url + "/openapi.json", headers={"X-API-Key": KEY})


def test_schema_lists_every_endpoint(api_schema, server):
    found = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    video = httpx.get(server.url + "/health").json()["video"]
    assert found == set(OPERATIONS) | (set(VIDEO_OPERATIONS) if video else set())


OPERATIONS = [("POST", "/v1/analyze"), ("POST", "/v1/analyze/batch"), ("GET", "/v1/models"), ("GET", "/health"),
              ("GET", "/metrics")]
VIDEO_OPERATIONS = [("POST", "/v1/videos"), ("GET", "/v1/videos/{job_id}"), ("GET", "/v1/videos/{job_id}/files/{name}")]


@pytest.mark.parametrize("method,path", OPERATIONS + (VIDEO_OPERATIONS if installed("video") else []))
def test_no_server_errors(api_schema, server, method, path):
    """Hypothesis-generated requests for one operation (schemathesis' pytest plugin is driven by hand here: its
    fixture mode does not run under this pytest)."""
    operation = api_schema[path][method]
    statuses: list[int] = []

    @given(operation.as_strategy())
    @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call_and_validate(headers={"X-API-Key": KEY},
                                          checks=[not_a_server_error, status_code_conformance,
                                                  content_type_conformance, response_schema_conformance])
        statuses.append(response.status_code)

    check()
    assert len(statuses) >= (5 if method == "POST" or "{" in path else 1) and max(statuses) < 500, statuses
    assert server.alive()
