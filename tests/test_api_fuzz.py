"""Schemathesis fuzzes every operation of the API's OpenAPI schema against the real PostgreSQL and Redis.

Checks: no 5xx; every answer conforms to its documented status, media type, headers and response model; every
error body is one JSON line {"error": "..."}; a request without the token is refused; a request the schema
forbids is refused with a 4xx. Left out: schemathesis's "positive data acceptance", which expects every request
the schema allows to succeed; here success also depends on the database (whether submission 3 exists, is an
inr-init one, has a finished job to plot) and on what a spec means (a YAML string that is not a mapping). Specs it manages to make
valid are published on a queue of the test's own (no worker listens; it is deleted afterwards).
"""
from __future__ import annotations

import json
import re
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from conftest import REDIS, fresh_pg_database
from l335q.api.app import app

TOKEN = "fuzz-token-3kP"
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
QUEUE_PATTERN = re.compile(r"^[\w.:-]{1,100}$")


@pytest.fixture(scope="module")
def fuzz_db():
    """A database of the fuzzer's own: the submissions it manages to make do not meet other tests."""
    from l335q.db import upgrade

    with fresh_pg_database("l335q_fuzz") as url:
        upgrade(url)
        yield url


@pytest.fixture
def fuzz_env(fuzz_db, monkeypatch):
    import redis

    import l335q.db

    queue = f"l335q-fuzz-{uuid.uuid4().hex[:8]}"
    env = {"L335Q_DATABASE_URL": fuzz_db, "L335Q_BROKER_URL": f"{REDIS}/0", "L335Q_API_TOKEN": TOKEN,
           "L335Q_API_QUEUE": queue}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    l335q.db._ready.clear()
    yield queue
    redis.Redis.from_url(env["L335Q_BROKER_URL"]).delete(queue)


def one_json_line_error(response) -> None:
    if response.status_code < 400:
        return
    text = response.text
    assert "\n" not in text.strip(), f"{response.status_code}: error body of more than one line: {text[:300]!r}"
    body = json.loads(text)
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_errors_are_one_json_line(case, fuzz_env):
    queue = (case.query or {}).get("queue")
    if isinstance(queue, str) and QUEUE_PATTERN.match(queue):
        case.query["queue"] = fuzz_env              # never a queue some worker listens on
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
    one_json_line_error(response)
    # a one-item list in the query goes on the wire as the item itself (``queue=false``): a "schema-violating"
    # request the server cannot tell from a valid one, so its acceptance is not a failure
    scalar_on_wire = any(isinstance(v, list) and len(v) == 1 for v in (case.query or {}).values())
    case.validate_response(response, excluded_checks=[positive_data_acceptance,
                                                      *([negative_data_rejection] if scalar_on_wire else [])])
