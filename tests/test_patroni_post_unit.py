"""POST /switchover to Patroni's REST API (PatroniApi over httpx.MockTransport): another member is tried
only when the request surely was not sent (a connect error); a read timeout or a dropped connection
stops with the outcome unknown, not harmless (the switchover may have taken effect)."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from proxy.config import FailoverSettings
from proxy.topology.coordinator import ActionFailed
from proxy.topology.patroni_watch import PatroniApi, PatroniOutcomeUnknown, PatroniUnreachable, PatroniWatcher

A, B = "http://member-a:8008", "http://member-b:8008"


def api_with(failure_on_a: Exception) -> tuple[PatroniApi, list[str]]:
    hits: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        hits.append(f"{request.method} {base}{request.url.path}")
        if base == A:
            raise failure_on_a
        return httpx.Response(200, content=b"Successfully switched over to \"pg2\"")

    api = PatroniApi(FailoverSettings(mode="patroni", patroni=(A, B)), 1.0)
    api._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return api, hits


@pytest.mark.parametrize("failure", [httpx.ConnectError("connection refused"), httpx.ConnectTimeout("timed out")],
                         ids=["refused", "connect-timeout"])
async def test_a_post_that_could_not_connect_goes_to_the_next_member(failure: Exception) -> None:
    api, hits = api_with(failure)
    url, status, _ = await api.request("POST", "/switchover", b"{}")
    assert (url, status) == (B, 200)
    assert hits == [f"POST {A}/switchover", f"POST {B}/switchover"]
    await api.close()


@pytest.mark.parametrize("failure", [httpx.ReadTimeout("timed out"),
                                     httpx.RemoteProtocolError("Server disconnected without sending a response.")],
                         ids=["read-timeout", "dropped"])
async def test_a_post_that_may_have_been_received_is_not_sent_again(failure: Exception) -> None:
    api, hits = api_with(failure)
    with pytest.raises(PatroniOutcomeUnknown):
        await api.request("POST", "/switchover", b"{}")
    assert hits == [f"POST {A}/switchover"]
    # A GET is safe to repeat: it still goes on to the next member.
    url, _, _ = await api.request("GET", "/cluster")
    assert url == B
    await api.close()


async def test_the_switchover_fails_not_harmless_with_the_outcome_unknown() -> None:
    api, hits = api_with(httpx.ReadTimeout("timed out"))
    watcher = SimpleNamespace(api=api, monitor=None)
    with pytest.raises(ActionFailed) as failed:
        await PatroniWatcher._post_switchover(watcher, "pg1", "pg2")  # type: ignore[arg-type]
    assert failed.value.harmless is False
    assert "outcome is unknown" in failed.value.message and "check the cluster" in failed.value.message
    assert hits == [f"POST {A}/switchover"]
    await api.close()


async def test_a_switchover_no_member_accepted_a_connection_for_is_harmless() -> None:
    api, _ = api_with(httpx.ConnectError("connection refused"))
    api.urls = [A]
    with pytest.raises(PatroniUnreachable):
        await api.request("POST", "/switchover", b"{}")
    watcher = SimpleNamespace(api=api, monitor=None)
    with pytest.raises(ActionFailed) as failed:
        await PatroniWatcher._post_switchover(watcher, "pg1", "pg2")  # type: ignore[arg-type]
    assert failed.value.harmless is True
    await api.close()
