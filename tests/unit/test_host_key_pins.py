"""The provider's in-memory host-key pins last as long as the pod: a daemon that runs for months keeps
none for pods the account no longer lists (a pod that ended without our terminate call kept its pin)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from orchestrator.adapters.provider import RunpodProvider


class ListingOnly:
    name = "rest"

    def __init__(self) -> None:
        self.ids: list[str] = []

    def list_pods(self) -> list[Any]:
        return [SimpleNamespace(id=i) for i in self.ids]

    def close(self) -> None:
        pass


def test_pins_of_pods_no_longer_listed_are_dropped_and_the_listed_ones_kept() -> None:
    transport = ListingOnly()
    provider = RunpodProvider("rpa_test", transport=transport, env={})  # type: ignore[arg-type]
    for day in range(30):  # 200 pods a day, each gone by the next day's listing
        transport.ids = [f"pod-{day}-{i}" for i in range(200)]
        for pod_id in transport.ids:
            provider.remember_host_key(pod_id, f"SHA256:{pod_id}")
        assert [p.id for p in provider.list_pods()] == transport.ids
    assert len(provider._host_keys) == 200  # the day's pods only, not 6,000
    transport.ids = transport.ids[:3]
    provider.list_pods()
    assert provider._host_keys == {f"pod-29-{i}": f"SHA256:pod-29-{i}" for i in range(3)}
    provider.close()
