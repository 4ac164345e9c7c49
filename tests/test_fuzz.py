"""Schemathesis against the live server's own /openapi.json: no 5xx, and every answer matches its documented schema."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from support import RunningServer

MAX_EXAMPLES = 30
SERVED = {"model_name": "iris", "model_version": "1.0.0"}
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@pytest.fixture(scope="module")
def api_schema(live_server: RunningServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_server.base_url}/openapi.json")


def fuzz(operation: Any, cases: Counter[str], outcomes: Counter[tuple[str, int]]) -> None:
    """MAX_EXAMPLES generated requests for one operation, valid and invalid ones, each checked: no 5xx, status and
    body as documented."""
    label = operation.label

    modes = st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE])

    @given(case=modes.flatmap(lambda mode: operation.as_strategy(generation_mode=mode)))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        cases[label] += 1
        if case.path_parameters and cases[label] % 4:
            # Random model names all stop at the 404; 3 cases in 4 use the served ones so the body gets checked too.
            case.path_parameters = {name: SERVED.get(name, value) for name, value in case.path_parameters.items()}
        response = case.call_and_validate(checks=CHECKS, timeout=10)
        outcomes[(label, response.status_code)] += 1

    check()


def test_every_operation_conforms_to_its_schema(api_schema: schemathesis.BaseSchema, capsys: pytest.CaptureFixture[str]) -> None:
    """Every operation of the live document fuzzed (one test, so none can be skipped by the order tests run in)."""
    cases: Counter[str] = Counter()
    outcomes: Counter[tuple[str, int]] = Counter()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:
        fuzz(operation, cases, outcomes)
    assert operations and {operation.label for operation in operations} == set(cases)
    statuses: Counter[int] = Counter()
    infer: Counter[int] = Counter()
    for (label, status), count in outcomes.items():
        statuses[status] += count
        if label.endswith("/infer"):
            infer[status] += count
    assert 500 not in statuses
    with capsys.disabled():
        print(
            f"\nschemathesis: {sum(cases.values())} cases over {len(cases)} operations; "
            f"status codes {dict(sorted(statuses.items()))}; V2 infer {dict(sorted(infer.items()))}"
        )
