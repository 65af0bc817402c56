"""Log searches are RE2: patterns that take exponential time in a backtracking engine
(nested quantifiers on a long run of 'a's that ends in a 'b') are answered through the
API with exactly ``re2.search``'s lines, and what RE2 cannot do in linear time, or the
size limits of docs/logs.md forbid, is a 400 naming the field. The time these take is
in docs/reliability.md#hostile-input (the command is there)."""

from __future__ import annotations

import re2
import pytest
from conftest import Client
from otlp_build import DEPLOYMENT, SEC, T0, log_record, logs_request, post

pytestmark = pytest.mark.steady_only("query validation and RE2 semantics, the same in every server mode")
URL = "/v1/models/m1/deployments/d1/logs"
WINDOW = {"start_epoch_millis": (T0 - 60 * SEC) // 10**6, "end_epoch_millis": (T0 + 60 * SEC) // 10**6}
RUN = 20_000
MESSAGES = ["a" * RUN + "b", "a" * RUN, "a" * 40 + "!" + "a" * RUN + "c", "x" * RUN, "aab"]
#: each is exponential in a backtracking engine on MESSAGES[0] (Python's ``re`` would not return)
CATASTROPHIC = [r"(a+)+$", r"^(a|aa)+$", r"(a|a)+c", r"^(a*)*$", r"(.*a){12}$", r"(a+)+b", r"^(\w+\s?)*$"]


@pytest.fixture
def logs(app, creds) -> Client:
    ingest = Client(app, creds["ingest_key"])
    req = logs_request(DEPLOYMENT, [log_record(T0 + i * SEC, m) for i, m in enumerate(MESSAGES)])
    assert post(ingest, req).status_code == 200
    return Client(app, creds["management_key"])


def test_catastrophic_patterns_answer_with_re2_semantics(logs):
    for pattern in CATASTROPHIC:
        for method in ("GET", "POST"):
            kw = ({"params": {"search_pattern": pattern, **WINDOW}} if method == "GET"
                  else {"json": {"search_pattern": pattern, **WINDOW}})
            r = logs.request(method, URL, **kw)
            assert r.status_code == 200, (pattern, r.text)
            got = sorted(line["message"] for line in r.json()["logs"])
            assert got == sorted(m for m in MESSAGES if re2.search(pattern, m)), pattern


BEYOND = [
    (r"(a)\1", "backreference"),
    (r"(?=a)", "lookahead"),
    (r"(?<!a)b", "lookbehind"),
    ("((a{100}){100}){100}", "too large for RE2's program"),
    ("(a+)+" * 52, "over 256 characters"),
]


def test_patterns_beyond_re2_or_the_limits_are_400(logs):
    for pattern, why in BEYOND:
        r = logs.get(URL, params={"search_pattern": pattern, **WINDOW})
        assert r.status_code == 400, (why, r.text)
        assert r.json()["error"] == {"code": "invalid", "field": "search_pattern"}, (why, r.json())


def test_the_limits_of_the_spec(logs):
    ok = "(a+)+" * 51 + "$"  # 256 characters: the longest pattern allowed
    assert len(ok) == 256
    assert logs.get(URL, params={"search_pattern": ok, **WINDOW}).status_code == 200
    eight, nine = ["a"] * 8, ["a"] * 9
    assert logs.get(URL, params={"includes": eight, **WINDOW}).status_code == 200
    for field in ("includes", "excludes"):
        r = logs.get(URL, params={field: nine, **WINDOW})
        assert (r.status_code, r.json()["error"]["field"]) == (400, field), r.text
        r = logs.post(URL, json={field: ["a" * 257], **WINDOW})
        assert (r.status_code, r.json()["error"]["field"]) == (400, field), r.text
