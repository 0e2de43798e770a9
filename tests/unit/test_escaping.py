"""Escaping at the two places where our values become someone else's syntax: GraphQL and the shell.

GraphQL: the official SDK pastes values into the query text unescaped, so ``gql_escape`` must make
any text arrive intact; checked by generating the SDK's own mutation text and parsing it with
graphql-core. Shell: worker ids are refused unless boring, and the start command never holds a
credential (they go on stdin; ``tests/unit/test_start_command.py`` runs the command itself).
"""

from __future__ import annotations

import shlex

import graphql
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runpod.api.mutations.pods import generate_pod_deployment_mutation

from orchestrator.adapters.runpod import rest
from orchestrator.adapters.runpod.base import check_env, check_pod_id, parse_rate_limit_reset
from orchestrator.adapters.runpod.graphql import gql_escape
from orchestrator.adapters.worker_recipe import build_start_command, validate_worker_id
from orchestrator.core import errors

HOSTILE = [
    'quote " inside',
    "back\\slash \\n not a newline",
    "new\nline\r\nand\ttab",
    "$(touch /tmp/pwned-by-orchestrator-test) `id` ${HOME}",
    "'; DROP TABLE workers; --",
    '"}) { id } mutation { podTerminate(input: {podId: "x"}) } #',
    "unicode: é ✓ 🚀 \u2028 \x7f",
    "",
]

# Text the SDK could be handed: anything but lone surrogates (which cannot be sent as UTF-8 at all).
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


def _mutation_env(doc: str) -> dict[str, str]:
    """Parse the SDK's mutation and return the env it carries, as the server would see it."""
    ast = graphql.parse(doc)
    field = ast.definitions[0].selection_set.selections[0]  # type: ignore[attr-defined]
    (arg,) = [a for a in field.arguments if a.name.value == "input"]
    env: dict[str, str] = {}
    values: dict[str, str] = {}
    for f in arg.value.fields:
        if f.name.value == "env":
            for item in f.value.values:
                kv = {x.name.value: x.value.value for x in item.fields}
                env[kv["key"]] = kv["value"]
        elif isinstance(f.value, graphql.language.StringValueNode):
            values[f.name.value] = f.value.value
    env["__name"] = values["name"]
    return env


@pytest.mark.parametrize("value", HOSTILE)
def test_sdk_mutation_carries_hostile_values_intact(value: str) -> None:
    doc = generate_pod_deployment_mutation(
        name=gql_escape("w-" + value),
        image_name=gql_escape("img"),
        gpu_type_id=gql_escape("NVIDIA GeForce RTX 4090"),
        cloud_type="SECURE",
        env={gql_escape("VALUE"): gql_escape(value), "OTHER": gql_escape("x")},
    )
    env = _mutation_env(doc)
    assert env == {"VALUE": value, "OTHER": "x", "__name": "w-" + value}


def test_unescaped_values_break_the_sdk_mutation() -> None:
    """Why the escaping exists: the same value, unescaped, yields invalid or altered GraphQL."""
    doc = generate_pod_deployment_mutation(
        name="w", image_name="img", gpu_type_id="g", cloud_type="SECURE", env={"V": 'a"b'}
    )
    with pytest.raises(graphql.GraphQLError):
        graphql.parse(doc)


@settings(max_examples=200, deadline=None)
@given(_text)
def test_gql_escape_round_trips_any_text(value: str) -> None:
    ast = graphql.parse(f'{{ f(v: "{gql_escape(value)}") }}')
    arg = ast.definitions[0].selection_set.selections[0].arguments[0]  # type: ignore[attr-defined]
    assert arg.value.value == value


def test_gql_escape_refuses_lone_surrogates() -> None:
    with pytest.raises(errors.RunpodRequestError, match="surrogate"):
        gql_escape("bad \ud800 text")


@pytest.mark.parametrize(
    "worker_id",
    ["a;rm -rf /", "$(id)", "w'x", 'w"x', "w\\x", "w\nx", "", "-flag", "w x", "../etc", "a" * 200],
)
def test_hostile_worker_ids_are_refused(worker_id: str) -> None:
    with pytest.raises(errors.RunpodRequestError, match="worker id"):
        validate_worker_id(worker_id)
    with pytest.raises(errors.RunpodRequestError):
        build_start_command(worker_id)


@pytest.mark.parametrize("key", ["A B", "A;B", "1A", "A=B", "$(x)", ""])
def test_env_names_must_be_identifiers(key: str) -> None:
    with pytest.raises(errors.RunpodRequestError, match="env name"):
        check_env({key: "v"})


def test_env_values_pass_through_and_nul_is_refused() -> None:
    assert check_env({"K": HOSTILE[3]}) == {"K": HOSTILE[3]}
    with pytest.raises(errors.RunpodRequestError, match="NUL"):
        check_env({"K": "a\x00b"})


@pytest.mark.parametrize("pod_id", ["abc/../x", "a b", 'a"b', "", "x" * 100])
def test_pod_ids_are_checked_before_they_reach_a_url_or_query(pod_id: str) -> None:
    with pytest.raises(errors.RunpodRequestError):
        check_pod_id(pod_id)


def test_start_command_never_holds_a_credential_whatever_its_value() -> None:
    """The credentials travel on stdin as NUL-terminated records (tests/unit/test_start_command.py runs
    them through bash): the command text is the same whatever their values, and the records carry each
    value byte for byte."""
    from orchestrator.adapters.worker_recipe import credential_records

    command = build_start_command("gpu-20250912_101500-1a2b3c4d")
    for value in HOSTILE[:-1]:
        records = credential_records({"SUPABASE_SERVICE_ROLE_KEY": value, "WORKER_ID": "w"})
        assert records == b"SUPABASE_SERVICE_ROLE_KEY=" + value.encode() + b"\0WORKER_ID=w\0"
        assert value not in command
    assert shlex.split(command)[:4] == ["bash", "--norc", "--noprofile", "-c"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "12"}, 12.0),
        ({"RateLimit": '"minute";r=0;t=12, "hour";r=2800;t=1812, "day";r=49500;t=45012'}, 12.0),
        ({"RateLimit": '"minute";r=0;t=12, "hour";r=0;t=1812'}, 1812.0),
        ({"RateLimit": '"minute";r=5;t=40, "hour";r=9;t=100'}, 40.0),
        ({"ratelimit": "garbage"}, None),
        ({}, None),
    ],
)
def test_rate_limit_reset_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert parse_rate_limit_reset(headers) == expected


def test_rest_pod_running_with_null_runtime_is_not_ready() -> None:
    # openapi Pod.runtime is nullable and only promised null when the pod is not RUNNING.
    running = rest._pod({"id": "p1", "status": "RUNNING", "runtime": None, "ports": ["22/tcp"]})
    assert running.actual_status == "RUNNING" and not running.ssh_ready and not running.has_runtime
    with pytest.raises(errors.RunpodMalformedResponse, match="missing field 'status'"):
        rest._pod({"id": "p1"})
    pod = rest._pod({"id": "p1", "status": "STARTING", "runtime": None, "ports": ["22/tcp"]})
    assert pod.actual_status == "STARTING" and pod.ssh_port is None
