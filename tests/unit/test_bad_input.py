"""Bad input gets a clear error and loses nothing.

Each test feeds one concrete malformed or extreme input (a setting, a Runpod answer, a snapshot field, a
database row, a command-line option) and states what is expected; each failed before its fix, with the
consequence its docstring names ("Before: ...").

No network: Runpod answers come from ``httpx.MockTransport``, the database from a small fake, the
policy is called directly as in ``test_policy.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from orchestrator import cli
from orchestrator.adapters.runpod import graphql, rest
from orchestrator.adapters.runpod.base import UNREADABLE, Pod, RetryPolicy
from orchestrator.core import errors
from orchestrator.core.actions import MarkTerminated
from orchestrator.core.config import defaults, load_settings
from orchestrator.core.errors import ConfigError
from orchestrator.core.observed import Queue, Snapshot
from orchestrator.core.policy import plan
from orchestrator.core.staffing import new_worker_id
from orchestrator.core.states import usable_worker_id
from orchestrator.loop.controller import Controller
from tests.unit.test_runpod_review_fixes import _Provider

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
NOW_TEXT = "2026-11-29T12:00:00+00:00"
FAST = RetryPolicy(attempts=1, base_delay=0.0, max_delay=0.0, max_rate_limit_wait=0.0, max_total=1.0)
WORKER = "gpu-20261129_110000-aaaaaaaa"
POD_ID = "podaaaaaaaaaa"


def _row(**changes: Any) -> dict[str, Any]:
    """One live worker row as orch_snapshot returns it (an hour old, heartbeating)."""
    row: dict[str, Any] = {
        "id": WORKER,
        "status": "active",
        "instance_type": "NVIDIA GeForce RTX 4090",
        "created_at": "2026-11-29T11:00:00+00:00",
        "status_changed_at": "2026-11-29T11:05:00+00:00",
        "activated_at": "2026-11-29T11:05:00+00:00",
        "last_heartbeat": "2026-11-29T11:59:55+00:00",
        "metadata": {"runpod_id": POD_ID, "gpu_type": "NVIDIA GeForce RTX 4090"},
        "running_task_ids": [],
        "running_count": 0,
    }
    row.update(changes)
    return row


def _rest(body: Any) -> rest.RestTransport:
    """A REST v2 transport whose every answer is ``body`` (HTTP 200, JSON)."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    http = httpx.Client(base_url="https://api.runpod.test/v2", transport=httpx.MockTransport(answer))
    return rest.RestTransport("key", "https://api.runpod.test", retry=FAST, client=http)


class _FakeDB:
    """The two calls the operator's read commands make."""

    def __init__(self, snapshot: Any = None, events: Any = None) -> None:
        self._snapshot = snapshot
        self._events = events

    def snapshot(self, prefix: str | None = None) -> Any:
        return self._snapshot

    def events(self, limit: int = 50, worker_id: str | None = None) -> Any:
        return self._events

    def close(self) -> None:
        pass


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean environment for ``cli.main``: no ./.env, no setting from the caller's environment."""
    from orchestrator.core.variables import VARIABLES

    monkeypatch.chdir(tmp_path)
    for var in VARIABLES:
        monkeypatch.delenv(var.name, raising=False)
    return monkeypatch


# --- 1. the queue's size -------------------------------------------------------------------------------


def test_a_huge_claimable_count_does_not_crash_the_plan() -> None:
    """Input: ``queue.claimable`` = 10**19 in the snapshot (a redefined claimable view, or a count read
    wrong). Expected: the plan is made, capped at MAX_ACTIVE_GPUS (the count is clamped or reported).
    Before: ``staffing.wait_model`` builds a list with one element per claimable task and raises
    OverflowError, so the whole tick dies (``tick_crashed``): nobody is healed, drained or ended."""
    snapshot = Snapshot.from_json({"now": NOW_TEXT, "workers": [], "queue": {"claimable": 10**19}})
    result = plan(snapshot, [], defaults(), NOW)
    assert len(result.actions) == defaults().max_active_gpus


def test_a_backlog_past_what_the_model_reads_sizes_the_fleet_as_the_whole_backlog_would() -> None:
    """Input: a real backlog (``queue.claimable`` 300,000: orch_snapshot's count is exact and uncapped)
    beside a busy and an idle worker. Expected: the same sizing as the first few hundred tasks give (the
    model list-schedules at most MAX_SCHEDULED and counts no more workers than MAX_ACTIVE_GPUS), without
    a list of 300,000 entries. Before: the wait-target model expanded the count task by task, seconds a
    tick (10,000,000 tasks: longer than the lease), and a count past the machine's sizes crashed it."""
    from orchestrator.core.sizing import EXACT_UP_TO, MAX_SCHEDULED

    cfg = defaults()
    room = MAX_SCHEDULED + 4 * cfg.max_active_gpus + EXACT_UP_TO
    busy = _row(id="gpu-20261129_110000-bbbbbbbb", running_task_ids=["t1"], running_count=1)
    sized = []
    for count in (room, room + 1, 10 * room, 300_000):
        queue = {
            "claimable": count,
            "claimable_by_type": [{"task_type": "generate_video", "count": count // 2}],
        }
        snapshot = Snapshot.from_json({"now": NOW_TEXT, "workers": [_row(), busy], "queue": queue})
        sized.append(plan(snapshot, None, cfg, NOW).sizing)
    assert all(s == sized[0] for s in sized), sized


# --- 2. settings ----------------------------------------------------------------------------------------


def test_a_key_path_naming_an_unknown_user_is_a_listed_config_problem(
    cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Input: ``RUNPOD_SSH_PRIVATE_KEY_PATH=~nosuchuser_review/id_ed25519`` together with
    ``MAX_ACTIVE_GPUS=x``. Expected: exit 2 and both problems listed. Before: ``Path.expanduser`` raises
    RuntimeError inside ``load_settings``: ``orchestrator config`` exits 1 with "unexpected RuntimeError",
    and MAX_ACTIVE_GPUS is never reported (the daemon under systemd restarts in a loop on it)."""
    cli_env.setenv("RUNPOD_SSH_PRIVATE_KEY_PATH", "~nosuchuser_review/id_ed25519")
    cli_env.setenv("MAX_ACTIVE_GPUS", "x")
    code = cli.main(["config"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "RUNPOD_SSH_PRIVATE_KEY_PATH" in err and "MAX_ACTIVE_GPUS" in err


@pytest.mark.parametrize("prefix", ["-", "_", "a" * 110])
def test_a_worker_id_prefix_that_cannot_make_a_worker_id_is_refused(prefix: str) -> None:
    """Input: ``WORKER_ID_PREFIX`` of ``-``, ``_`` or 110 letters. The check accepts letters, digits,
    '-' and '_' of any length, but every id built from it fails ``WORKER_ID_PATTERN`` (first character
    a letter or digit, at most 128 characters). Expected: exit 2 at start-up. Before: it is accepted and
    every spawn writes its intent row, then is refused by ``validate_worker_id`` (spawn_failed), so the
    breaker opens and no worker ever starts."""
    assert not usable_worker_id(new_worker_id(prefix, NOW, 0, ()))  # what the daemon would name pods
    with pytest.raises(ConfigError):
        load_settings(environ={"WORKER_ID_PREFIX": prefix}, env_file=None)


# --- 3. Runpod answers of an unforeseen shape -----------------------------------------------------------


def test_a_rest_pod_whose_runtime_ports_is_a_number_is_a_malformed_response() -> None:
    """Input: GET /v2/pods/{id} answers ``{"id": ..., "status": "RUNNING", "runtime": {"ports": 7}}``.
    Expected: ``RunpodMalformedResponse`` (the adapters "raise only orchestrator.core.errors types").
    Before: ``rest._pod`` iterates the number and a bare TypeError leaves ``get_pod``."""
    transport = _rest({"id": POD_ID, "name": WORKER, "status": "RUNNING", "runtime": {"ports": 7}})
    try:
        with pytest.raises(errors.RunpodMalformedResponse):
            transport.get_pod(POD_ID)
    finally:
        transport.close()


def test_the_boot_check_on_such_a_pod_is_not_ready_instead_of_raising() -> None:
    """Input: the same pod body; the tick's listing held it as an unreadable placeholder, so the boot
    check reads it again. Expected: ``check_boot`` (documented "never raises for provider or SSH
    faults") returns ``not_ready`` and logs ``boot_check_pod_unreadable`` with worker and pod. Before: the
    TypeError escapes: the Initialize action crashes (``action_crashed``) every tick instead."""
    transport = _rest({"id": POD_ID, "name": WORKER, "status": "RUNNING", "runtime": {"ports": 7}})
    listed = Pod(id=POD_ID, name=WORKER, desired_status=UNREADABLE, actual_status=UNREADABLE)
    try:
        with structlog.testing.capture_logs() as logs:
            check = _Provider(transport).check_boot(WORKER, POD_ID, pod=listed)
    finally:
        transport.close()
    assert check.status == "not_ready"
    assert any(e["event"] == "boot_check_pod_unreadable" for e in logs)


def test_a_graphql_create_answer_whose_env_is_a_number_is_a_malformed_response(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Input: the SDK's ``create_pod`` answers ``{"id": "podabcdefghij", "env": 7}``. Expected: the
    created pod (its env is only informative) or ``RunpodMalformedResponse``. Before: ``_env_from_list``
    raises TypeError out of ``create_pod``: the spawn handler catches only RunpodError/ConfigError, so
    the action crashes after the pod was made, leaving its row ``spawning`` with no pod id and no
    spawn failure counted."""
    from orchestrator.adapters.runpod.base import PodSpec

    monkeypatch.setattr(graphql.runpod, "create_pod", lambda **kw: {"id": "podabcdefghij", "env": 7})
    transport = graphql.GraphQLTransport("key", "https://api.runpod.test", retry=FAST)
    spec = PodSpec(name=WORKER, image="img:1", gpu_type_id="NVIDIA GeForce RTX 4090")
    try:
        pod = transport.create_pod(spec)
    except errors.RunpodError:
        return  # a typed error is acceptable too
    assert pod.id == "podabcdefghij"


# --- 4. a pod the controller cannot turn into a PodView --------------------------------------------------


def test_a_listed_pod_with_an_absurd_uptime_is_not_dropped_from_the_tick() -> None:
    """Input: a REST pod listed RUNNING with ``runtime.uptime`` = 10**400 (a JSON integer; the adapter
    keeps any int). Expected: the pod stays in the tick's view (at worst as an unknown state, as
    ``lenient_pods`` promises), so nothing is decided as if it were gone. Before: ``PodView.from_pod``
    raises OverflowError on ``float(uptime)``, ``Controller._list_pods`` drops the pod (only
    ``pod_unreadable`` is logged), and the policy closes the row of the worker being terminated as
    ``provider_confirmed_gone`` while its pod still runs and bills; the pod is then no row's and is not
    seen by the orphan sweep either."""
    body = {
        "id": POD_ID,
        "name": WORKER,
        "status": "RUNNING",
        "cost": 0.69,
        "createdAt": "2026-11-29T11:00:00Z",
        "runtime": {"uptime": 10**400, "ports": []},
    }
    pod = rest._pod(body)

    class Listing:
        def list_pods(self) -> list[Pod]:
            return [pod]

    controller = Controller(defaults(), None, Listing(), holder="t")  # type: ignore[arg-type]
    try:
        views = controller._list_pods()
    finally:
        controller.shutdown(timeout=1)
    terminating = _row(
        status="terminating",
        status_changed_at="2026-11-29T11:55:00+00:00",
        metadata={"runpod_id": POD_ID, "pod_terminate_requested_at": "2026-11-29T11:55:00+00:00"},
    )
    snapshot = Snapshot.from_json({"now": NOW_TEXT, "workers": [terminating], "queue": {}})
    actions = plan(snapshot, views, defaults(), NOW).actions
    assert views is not None and [v.id for v in views] == [POD_ID]
    assert not any(isinstance(a, MarkTerminated) for a in actions), actions


# --- 5. snapshot fields read silently the wrong way ----------------------------------------------------


def test_a_paused_flag_that_is_not_a_boolean_is_reported_not_guessed() -> None:
    """Input: ``{"paused": "false"}`` in the snapshot (a text where the contract has a boolean).
    Expected: read as not paused, or reported in ``Snapshot.problems``. Before: ``bool("false")`` is True:
    spawning stops without a word in the log."""
    snapshot = Snapshot.from_json({"now": NOW_TEXT, "workers": [], "paused": "false"})
    assert snapshot.paused is False or snapshot.problems


def test_orphaned_worker_ids_as_text_is_not_read_letter_by_letter() -> None:
    """Input: ``queue.orphaned_worker_ids`` = ``"gpu-7"`` (a string, not a list). Expected: read as none
    and reported. Before: each character becomes a worker id, and the policy plans a RequeueTasks for
    workers ``g``, ``p``, ``u``, ``-`` and ``7``, with nothing logged."""
    problems: list[str] = []
    queue = Queue.from_json({"orphaned_worker_ids": "gpu-7"}, problems)
    assert queue.orphaned_worker_ids == () and problems


# --- 6. the operator's commands on such data ----------------------------------------------------------


def test_status_says_when_a_row_could_not_be_read(
    cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Input: ``orchestrator status`` on a snapshot whose only row has ``last_heartbeat: "yesterday"``.
    Expected: the row's problem is said (stderr or the table), naming the worker, as the daemon logs
    ``snapshot_row_skipped``. Before: the row is left out of the table without a word: the operator sees
    an empty fleet (``0 live``) while that worker's pod bills and the next tick retires it."""
    import orchestrator.wiring

    raw = {"now": NOW_TEXT, "workers": [_row(last_heartbeat="yesterday")], "queue": {}}
    cli_env.setenv("DATABASE_URL", "postgresql://u@localhost/db")
    cli_env.setattr(orchestrator.wiring, "make_database", lambda settings: _FakeDB(snapshot=raw))
    assert cli.main(["status"]) == 0
    captured = capsys.readouterr()
    assert WORKER in captured.out + captured.err, captured


def test_events_with_a_malformed_row_prints_the_others(
    cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Input: ``orchestrator events`` where orch_events answers ``[null, {event...}]``. Expected: the
    readable event printed, the bad entry reported, exit 0 (or a clear error). Today
    ``render_events`` calls ``.get`` on None: exit 1, "unexpected AttributeError", nothing printed."""
    import orchestrator.wiring

    good = {"at": NOW_TEXT, "kind": "pod_created", "worker_id": WORKER, "runpod_id": POD_ID}
    cli_env.setenv("DATABASE_URL", "postgresql://u@localhost/db")
    cli_env.setattr(orchestrator.wiring, "make_database", lambda settings: _FakeDB(events=[None, good]))
    code = cli.main(["events"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert WORKER in captured.out


@pytest.mark.parametrize(
    "argv",
    [
        ["ssh", WORKER, "--timeout", "nan", "--", "sleep", "1000000"],
        ["ssh", WORKER, "--timeout", "-5", "--", "true"],
        ["tick", "--wait", "nan"],
    ],
)
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(argv: list[str]) -> None:
    """Input: ``orchestrator ssh ID --timeout nan -- CMD`` (or ``-5``; ``tick --wait nan``). Expected:
    exit 2, a usage error, as ``demo --timeout`` and ``sim serve --speed`` already refuse it
    (``_positive_float``). Before: ``type=float`` takes it: with nan, ``SSHClient.run``'s deadline
    (``started + nan``) never passes (``remaining <= 0`` is never true), so a hung remote command holds
    the command for ever; with -5 the command is cut before it starts and reported as a timeout."""
    with pytest.raises(SystemExit) as info:
        cli.parse_args(cli.build_parser(), argv)
    assert info.value.code == 2


def test_a_worker_env_value_every_spawn_would_refuse_is_a_config_problem() -> None:
    """Input: ``WORKER_ENV={"HF_TOKEN": "abc\\u0000def"}`` (valid JSON, a NUL in a value). Expected: exit
    2 at start-up, since the adapters refuse such a value before sending (``check_env``: "contains a NUL
    byte"). Before: the setting is accepted, and every spawn writes its intent row and then fails
    (``spawn_failed``, counted by the breaker) for the life of the daemon."""
    from orchestrator.adapters.runpod.base import check_env

    raw = '{"HF_TOKEN": "abc\\u0000def"}'
    with pytest.raises(errors.RunpodRequestError):  # what every spawn would meet
        check_env({"HF_TOKEN": "abc\x00def"})
    with pytest.raises(ConfigError):
        load_settings(environ={"WORKER_ENV": raw}, env_file=None)


def test_a_pooled_workers_pod_in_a_state_nobody_can_read_is_left_alone() -> None:
    """Input: a stopped worker (in the warm pool) whose pod the listing gives in a status word Runpod
    never used, or as an entry the client could not parse (a placeholder). Expected: nothing this tick;
    its pod is neither taken for one started behind our back nor ended. Before: the unknown state read
    as "still coming up", and a stopped row's pod that runs is ended as `pod_failed`: a pooled pod lost."""
    from dataclasses import replace

    from orchestrator.adapters.runpod.base import Pod as RunpodPod
    from orchestrator.core.actions import TerminatePod
    from orchestrator.core.observed import PodView
    from tests.unit.test_policy import pods_for, run, snap, worker

    pooled = worker("gpu-a", "stopped", changed=300, stopped_at=NOW_TEXT, disk_gb=20)
    listed = pods_for([pooled], "EXITED")
    for view in (
        replace(listed[0], known=False),
        PodView.from_pod(
            RunpodPod(id="pod-gpu-a", name="gpu-a", desired_status="HIBERNATING", actual_status="HIBERNATING")
        ),
    ):
        assert not view.known
        result = run(snap([pooled]), [view], defaults())
        assert not [a for a in result.actions if isinstance(a, TerminatePod)], result.actions
    # Read as EXITED, it stays in the pool as before; read as RUNNING, it is ended (nobody of ours
    # started it), the case the unknown state was mistaken for.
    assert not [a for a in run(snap([pooled]), listed, defaults()).actions if isinstance(a, TerminatePod)]
    running = run(snap([pooled]), pods_for([pooled], "RUNNING"), defaults()).actions
    assert [a.reason.value for a in running if isinstance(a, TerminatePod)] == ["pod_failed"]
    # What needs no state still holds: a stop never confirmed is given up on, and the operator's
    # request ends a pooled worker whatever its pod's state.
    unknown = [replace(listed[0], known=False)]
    stuck = worker("gpu-a", "stopping", changed=600, pod_stop_requested_at=NOW_TEXT, disk_gb=20)
    ended = run(snap([stuck]), unknown, defaults()).actions
    assert [a.reason.value for a in ended if isinstance(a, TerminatePod)] == ["stop_failed"]
    asked = worker(
        "gpu-a", "stopped", changed=300, stopped_at=NOW_TEXT, disk_gb=20, terminate_requested_at=NOW_TEXT
    )
    ended = run(snap([asked]), unknown, defaults()).actions
    assert [a.reason.value for a in ended if isinstance(a, TerminatePod)] == ["operator_request"]
