"""The REST transport's rate-limit reserve, fed answers as several action threads receive them."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.adapters.runpod.rest import RATE_LIMIT_RESERVE, RestTransport
from orchestrator.core import errors


def answer(left: int, reset: int) -> dict[str, str]:
    return {"RateLimit": f'"minute";r={left};t={reset}, "hour";r=2900;t=3000'}


def test_an_answer_counting_fewer_requests_gives_none_back() -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.method)
        return httpx.Response(200, json={"pods": []}, headers=answer(39, 30))

    transport = RestTransport(
        "key",
        "http://runpod.test",
        client=httpx.Client(base_url="http://runpod.test/v2", transport=httpx.MockTransport(handler)),
    )
    transport._note_windows(answer(40, 30))
    # 30 requests in flight at once count the window down to 10 ...
    for _ in range(30):
        transport._spend_one("GET", "/pods/x")
    # ... and the first one's answer (39 left: it saw none of the others) must not hand them back.
    transport._note_windows(answer(39, 30))
    assert transport._windows["minute"][0] == RATE_LIMIT_RESERVE
    with pytest.raises(errors.RunpodRateLimited) as info:
        transport.get_pod("abcdefghijklmn")
    assert info.value.held_back and not sent  # a read is refused at once, never sent
    # The listing may still use the reserve; a new window (a later reset) starts a new count.
    assert transport.list_pods() == [] and sent == ["GET"]
    transport._note_windows(answer(60, 90))
    assert transport._windows["minute"][0] == 60
