"""Schemathesis over the API's own OpenAPI document, as an authenticated user: every operation,
a bounded number of generated requests each (valid and invalid ones), and no answer may be a
5xx or break the document (an undocumented status code, a body or header that does not match).

Path ids are the user's real space, note and job, so generated bodies and queries reach the
handlers rather than stopping at a 404. ``make fuzz`` runs the same test with more examples
(``FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.audio import wav_tone
from tests.conftest import make_note, make_space

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
# The suite replays the same examples every run; `make fuzz` explores new ones each time.
DERANDOMIZE = "FUZZ_EXAMPLES" not in os.environ
# A regular expression: fuzz only the operations whose label ("POST /api/v1/spaces") matches.
ONLY = os.environ.get("FUZZ_OPERATIONS", "")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@pytest.fixture
def ids(client: FlaskClient, auth: dict[str, str]) -> dict[str, str]:
    """A space with a moment holding a voice note (so a transcription job): the path ids."""
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"], title="A moment")
    upload = client.post(f"/api/v1/spaces/{space['id']}/notes/{note['id']}/media", headers=auth,
                         data={"file": (io.BytesIO(wav_tone(0.1)), "a.wav", "audio/wav")})
    assert upload.status_code == 201, upload.get_json()
    job_id = upload.get_json()["transcriptionJob"]["id"]
    # Finished, so that its event stream ends (with ``done``) instead of waiting for a worker.
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth).status_code == 200
    return {"space_id": space["id"], "note_id": note["id"], "job_id": job_id}


def fuzz(operation: Any, path_ids: dict[str, str], headers: dict[str, str]) -> int:
    """Run the operation's generated cases (valid and invalid); returns how many ran."""
    fixed = {name: path_ids[name] for name in re.findall(r"{(\w+)}", operation.path)
             if name in path_ids}
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed),
                      operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=fixed))
    ran = 0

    @given(case=cases)
    @settings(max_examples=EXAMPLES, phases=[Phase.explicit, Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck), derandomize=DERANDOMIZE, database=None)
    def run(case: Any) -> None:
        nonlocal ran
        ran += 1
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
    return ran


def describe(exc: BaseException) -> str:
    """The failure and, for a group, each failure in it."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, BaseExceptionGroup):
        text += "".join(f"\n  - {describe(inner)}" for inner in exc.exceptions)
    return text


def test_api_conforms_to_its_openapi_document(
        app: Flask, client: FlaskClient, auth: dict[str, str], ids: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    failures: dict[str, str] = {}
    ran: dict[str, int] = {}
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures[f"schema error {len(failures)}"] = str(result.err())
            continue
        operation = result.ok()
        if not re.search(ONLY, operation.label):
            continue
        try:
            ran[operation.label] = fuzz(operation, ids, auth)
        except (Exception, BaseExceptionGroup) as exc:  # all operations run, all failures told
            failures[operation.label] = describe(exc)[:5000]
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
    assert len(ran) >= 25 or ONLY, ran
    print(f"fuzzed {len(ran)} operations, {sum(ran.values())} requests")
