"""The watch that names rows with our prefix made by something other than this leader (``foreign_workers``)."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.loop.foreign import ForeignWatch
from tests.unit.test_policy import NOW, ago, snap, worker


def test_rows_made_while_leading_by_others_are_named_once_and_our_spawns_never() -> None:
    watch = ForeignWatch()
    watch.lead(1, None)  # no database time yet: the watch waits for it rather than trust the host's
    old = worker("gpu-old", created=600)
    assert watch.check(snap([old])) == []
    watch.lead(1, NOW - timedelta(seconds=60))
    watch.spawned("gpu-ours")
    ours, theirs = worker("gpu-ours", created=30), worker("gpu-theirs", created=20)
    assert watch.check(snap([old, ours, theirs])) == ["gpu-theirs"]
    assert watch.check(snap([old, ours, theirs])) == [], "named once"
    # A new leadership (another token) starts from its own time: the rows made before it are nobody's
    # business, the ones named before may be named again if new.
    watch.lead(2, NOW)
    assert watch.check(snap([old, ours, theirs])) == []


def test_a_spawn_long_gone_is_forgotten_but_a_slow_registration_is_not_taken_for_a_foreign_row() -> None:
    watch = ForeignWatch()
    watch.lead(1, ago(600))
    watch.spawned("gpu-slow")
    for _ in range(ForeignWatch.FORGET_AFTER_CHECKS):
        assert watch.check(snap([])) == []  # its row not written yet
    assert watch.check(snap([worker("gpu-slow", created=5)])) == [], "ours, however late its row came"
    for _ in range(ForeignWatch.FORGET_AFTER_CHECKS + 2):
        watch.check(snap([]))  # ended: out of the live list
    assert "gpu-slow" not in watch._ours


def test_rows_named_are_forgotten_once_gone_so_a_leadership_of_months_holds_only_the_live_ones() -> None:
    watch = ForeignWatch()
    watch.lead(1, ago(600))
    for i in range(1000):  # another orchestrator spawning on our prefix, each row ending before the next
        assert watch.check(snap([worker(f"gpu-theirs-{i}", created=5)])) == [f"gpu-theirs-{i}"]
    assert watch._said == {"gpu-theirs-999"}


def test_a_row_that_comes_back_after_it_was_forgotten_is_named_once_more() -> None:
    watch = ForeignWatch()
    watch.lead(1, ago(600))
    back = worker("gpu-theirs", created=5)
    assert watch.check(snap([back])) == ["gpu-theirs"]
    assert watch.check(snap([])) == []  # ended
    assert watch.check(snap([back])) == ["gpu-theirs"], "beating again under the same id"
