"""Every RFC 4475 torture message sent to a running `softswitch serve`, answered as the RFC expects.

Several messages name documentation addresses (192.0.2.x) in their Via, so the server and the sender run
in a private network namespace with only loopback up (`unshare -n`): a wrong answer can reach nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rfc4475_classes import INVALID_REQUESTS, INVALID_RESPONSES, LIBERAL, SEMANTIC, VALID_REQUESTS, VALID_RESPONSES

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    var = tmp_path_factory.mktemp("rfc4475")
    driver = HERE / "rfc4475_driver.py"
    cmd = ["unshare", "-n", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" "{driver}" "{var}"']
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=HERE.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def finals(statuses: list[int]) -> list[int]:
    """The distinct final statuses (a final response is retransmitted until its ACK or Timer H)."""
    return sorted({s for s in statuses if s >= 200})


@pytest.mark.parametrize("name", VALID_REQUESTS)
def test_rfc4475_live_valid_request_answered(answers, name):
    got = finals(answers[name])
    assert len(got) == 1 and got[0] != 400 and got[0] < 500, got


@pytest.mark.parametrize("name", VALID_RESPONSES + INVALID_RESPONSES)
def test_rfc4475_live_responses_dropped(answers, name):
    assert answers[name] == []


@pytest.mark.parametrize("name", INVALID_REQUESTS)
def test_rfc4475_live_invalid_request_400_or_dropped(answers, name):
    want = 505 if name == "badvers" else 400
    if name == "insuf":  # no Call-ID (nor From, To): nothing a response could be matched by
        assert answers[name] == []
    else:
        assert finals(answers[name]) == [want], answers[name]


@pytest.mark.parametrize("name", LIBERAL)
def test_rfc4475_live_liberal_never_5xx(answers, name):
    got = finals(answers[name])
    assert len(got) == 1 and got[0] < 500, got


@pytest.mark.parametrize("name", sorted(SEMANTIC))
def test_rfc4475_live_semantic_codes(answers, name):
    assert finals(answers[name]) and finals(answers[name])[0] in SEMANTIC[name], answers[name]


def test_rfc4475_live_server_still_answers(answers):
    assert answers["_server_alive"] == [1]
    assert finals(answers["options-after-all"]) == [200]
