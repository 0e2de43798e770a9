"""The PostgREST stand-in's own behaviour, over HTTP (httpx), against a real Postgres.

Each test gets its own database (``database_url``); the functions under test live in a schema of their
own (``shimtest``), so these tests do not depend on the orchestrator's migrations beyond the roles
``anon`` and ``service_role`` they create.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from orchestrator.standins.postgrest.server import PostgrestServer, generate_keys, status_for_sqlstate

SCHEMA_SQL = """
create schema shimtest;
grant usage on schema shimtest to anon, service_role;
create table shimtest.notes (id serial primary key, body text not null unique);
grant all on shimtest.notes to service_role;
grant usage on sequence shimtest.notes_id_seq to service_role;

create function shimtest.add_them(a integer, b integer default 10) returns integer
    language sql immutable as 'select a + b';
create function shimtest.series(n integer) returns setof integer
    language sql stable as 'select generate_series(1, n)';
create function shimtest.squares(n integer) returns table (i integer, sq integer)
    language sql stable as 'select g, g * g from generate_series(1, n) g';
create function shimtest.echo(p jsonb) returns jsonb
    language sql immutable as $$ select jsonb_build_object('got', p) $$;
create function shimtest.shout(t text) returns text language sql immutable as 'select upper(t)';
create function shimtest.tags(t text[]) returns integer language sql immutable as 'select cardinality(t)';
create function shimtest.nothing() returns void language sql as 'select';
create function shimtest.whoami() returns jsonb language sql stable as $$
    select jsonb_build_object('user', current_user,
                              'claims', current_setting('request.jwt.claims', true)::jsonb,
                              'method', current_setting('request.method', true))
$$;
create function shimtest.fail_with(p_code text) returns void language plpgsql as $$
begin
    raise exception 'failed with %', p_code using errcode = p_code, detail = 'some detail', hint = 'some hint';
end $$;
create function shimtest.add_note(p_body text, p_then_fail boolean default false) returns integer
    language plpgsql as $$
declare v integer;
begin
    insert into shimtest.notes (body) values (p_body) returning id into v;
    if p_then_fail then
        raise exception 'changed my mind' using errcode = 'OR002';
    end if;
    return v;
end $$;
create function shimtest.over(a integer) returns text language sql immutable as $$ select 'one' $$;
create function shimtest.over(a integer, b integer) returns text language sql immutable as $$ select 'two' $$;
create function shimtest.whole(json) returns integer language sql immutable as $$ select ($1->>'x')::int * 2 $$;
create function shimtest.custom_response() returns void language plpgsql as $$
begin
    raise sqlstate 'PGRST' using
        message = '{"code":"123","message":"Payment Required","details":"Quota exceeded","hint":"Upgrade"}',
        detail = '{"status":402,"headers":{"X-Powered-By":"Nerd Rage"}}';
end $$;
create function shimtest.service_only() returns text language sql immutable as $$ select 'secret' $$;
revoke all on function shimtest.service_only() from public;
grant execute on function shimtest.service_only() to service_role;
create function shimtest.nobody() returns text language sql immutable as $$ select 'x' $$;
revoke all on function shimtest.nobody() from public;
"""


@dataclass
class Shim:
    server: PostgrestServer
    http: httpx.Client
    service: dict[str, str]
    anon: dict[str, str]
    database_url: str

    def post(self, fn: str, body: object = None, *, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post(
            f"/rest/v1/rpc/{fn}", json=body if body is not None else {}, headers=headers or self.service
        )


@pytest.fixture
def shim(database_url: str) -> Iterator[Shim]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
    keys = generate_keys()
    server = PostgrestServer(database_url, keys.service_role, keys.anon, schema="shimtest", pool_size=4)
    base_url = server.start()
    try:
        with httpx.Client(base_url=base_url, timeout=10) as http:
            yield Shim(
                server=server,
                http=http,
                service={"apikey": keys.service_role, "Authorization": f"Bearer {keys.service_role}"},
                anon={"apikey": keys.anon},
                database_url=database_url,
            )
    finally:
        server.stop()


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"code", "message", "details", "hint"}, body
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Proxy-Status"] == f"PostgREST; error={body['code']}"
    return body


# --- keys and roles --------------------------------------------------------------------------------


def test_missing_apikey_is_refused_by_the_gateway(shim: Shim) -> None:
    r = shim.http.post("/rest/v1/rpc/add_them", json={"a": 1})
    assert r.status_code == 401
    assert r.json() == {
        "message": "No API key found in request",
        "hint": "No `apikey` request header or url param was found.",
    }


def test_unknown_apikey_is_refused_by_the_gateway(shim: Shim) -> None:
    other = generate_keys()  # well-formed, but not this project's
    r = shim.post("add_them", {"a": 1}, headers={"apikey": other.service_role})
    assert r.status_code == 401
    assert r.json()["message"] == "Invalid API key"


def test_bearer_token_that_is_not_a_project_key_is_pgrst301(shim: Shim) -> None:
    other = generate_keys()
    r = shim.post(
        "add_them", {"a": 1}, headers={**shim.anon, "Authorization": f"Bearer {other.service_role}"}
    )
    assert r.status_code == 401
    assert _error(r)["code"] == "PGRST301"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    garbage = shim.post("add_them", {"a": 1}, headers={**shim.anon, "Authorization": "Bearer nonsense"})
    assert garbage.status_code == 401 and garbage.json()["code"] == "PGRST301"


def test_role_and_claims_follow_the_key(shim: Shim) -> None:
    as_service = shim.post("whoami").json()
    assert as_service["user"] == "service_role"
    assert as_service["claims"]["role"] == "service_role"
    assert as_service["method"] == "POST"
    assert shim.post("whoami", headers=shim.anon).json()["user"] == "anon"
    # The bearer token, when present, decides the role (the apikey only gets through the gateway).
    mixed = {**shim.anon, "Authorization": shim.service["Authorization"]}
    assert shim.post("whoami", headers=mixed).json()["user"] == "service_role"


def test_grants_are_enforced_401_for_anon_403_for_service_role(shim: Shim) -> None:
    assert shim.post("service_only").json() == "secret"
    denied = shim.post("service_only", headers=shim.anon)
    assert denied.status_code == 401
    assert _error(denied)["code"] == "42501"
    assert denied.headers["WWW-Authenticate"] == "Bearer"
    forbidden = shim.post("nobody")
    assert forbidden.status_code == 403
    assert _error(forbidden)["code"] == "42501"


# --- arguments and results -------------------------------------------------------------------------


def test_named_arguments_and_defaults(shim: Shim) -> None:
    assert shim.post("add_them", {"a": 1, "b": 2}).json() == 3
    assert shim.post("add_them", {"b": 2, "a": 1}).json() == 3
    assert shim.post("add_them", {"a": 1}).json() == 11  # b's default
    assert shim.post("add_them", {"a": None}).json() is None
    assert shim.post("tags", {"t": ["x", "y", "z"]}).json() == 3
    assert shim.post("shout", {"t": "hi"}).json() == "HI"


def test_unknown_or_extra_or_missing_arguments_are_pgrst202(shim: Shim) -> None:
    extra = shim.post("add_them", {"a": 1, "c": 2})
    assert extra.status_code == 404
    body = _error(extra)
    assert body["code"] == "PGRST202"
    assert body["message"] == "Could not find the function shimtest.add_them(a, c) in the schema cache"
    assert body["hint"] == "Perhaps you meant to call the function shimtest.add_them(a, b)"
    missing = shim.post("add_them", {"b": 2})
    assert missing.status_code == 404 and missing.json()["code"] == "PGRST202"
    typo = shim.post("add_thme", {"a": 1})
    assert typo.status_code == 404
    assert _error(typo)["hint"] == "Perhaps you meant to call the function shimtest.add_them"
    none = shim.post("no_such_function")
    assert none.status_code == 404
    assert none.json()["message"] == (
        "Could not find the function shimtest.no_such_function without parameters in the schema cache"
    )


def test_wrong_type_is_the_servers_22p02(shim: Shim) -> None:
    r = shim.post("add_them", {"a": "abc"})
    assert r.status_code == 400
    body = _error(r)
    assert body["code"] == "22P02"
    assert "integer" in str(body["message"])


def test_result_shapes(shim: Shim) -> None:
    assert shim.post("echo", {"p": {"x": [1, None, "y"]}}).json() == {"got": {"x": [1, None, "y"]}}
    assert shim.post("echo", {"p": "just a string"}).json() == {"got": "just a string"}
    assert shim.post("series", {"n": 3}).json() == [1, 2, 3]
    assert shim.post("series", {"n": 0}).json() == []
    assert shim.post("squares", {"n": 2}).json() == [{"i": 1, "sq": 1}, {"i": 2, "sq": 4}]
    nothing = shim.post("nothing")
    assert nothing.status_code == 200 and nothing.json() is None


def test_overloads_are_chosen_by_argument_names(shim: Shim) -> None:
    assert shim.post("over", {"a": 1}).json() == "one"
    assert shim.post("over", {"a": 1, "b": 2}).json() == "two"


def test_single_unnamed_json_parameter_gets_the_whole_body(shim: Shim) -> None:
    assert shim.post("whole", {"x": 21}).json() == 42


def test_get_passes_query_parameters_and_runs_read_only(shim: Shim) -> None:
    r = shim.http.get("/rest/v1/rpc/add_them", params={"a": "4", "b": "5"}, headers=shim.service)
    assert r.status_code == 200 and r.json() == 9
    with_key_param = shim.http.get("/rest/v1/rpc/add_them", params={"a": "1", "apikey": shim.anon["apikey"]})
    assert with_key_param.json() == 11
    write = shim.http.get("/rest/v1/rpc/add_note", params={"p_body": "x"}, headers=shim.service)
    assert write.status_code == 405
    assert _error(write)["code"] == "25006"
    assert shim.post("add_note", {"p_body": "x"}).status_code == 200


# --- errors ----------------------------------------------------------------------------------------


# (SQLSTATE raised by the function, HTTP status PostgREST answers with)
RAISED = [
    ("P0001", 400),
    ("OR001", 400),
    ("OR002", 400),
    ("OR003", 400),
    ("22023", 400),
    ("22004", 400),
    ("23505", 409),
    ("23503", 409),
    ("40001", 500),
    ("57014", 500),
    ("XX000", 500),
    ("08006", 503),
    ("53300", 503),
    ("42883", 404),
    ("PT402", 402),
]


def test_raised_sqlstates_map_to_postgrests_statuses(shim: Shim) -> None:
    # One server and database for the whole table: each call is its own transaction.
    for sqlstate, status in RAISED:
        r = shim.post("fail_with", {"p_code": sqlstate})
        assert (sqlstate, r.status_code) == (sqlstate, status)
        assert _error(r) == {
            "code": sqlstate,
            "message": f"failed with {sqlstate}",
            "details": "some detail",
            "hint": "some hint",
        }


def test_status_table_edge_cases() -> None:
    assert status_for_sqlstate("42501", "permission denied", authenticated=False) == 401
    assert status_for_sqlstate("42501", "permission denied", authenticated=True) == 403
    assert status_for_sqlstate("22023", 'role "x" does not exist', authenticated=True) == 401
    assert status_for_sqlstate("57P01", "terminating connection", authenticated=True) == 503
    assert status_for_sqlstate("25006", "read-only", authenticated=True) == 405
    assert status_for_sqlstate("ZZ999", "anything else", authenticated=True) == 400


def test_raise_pgrst_sets_status_headers_and_body(shim: Shim) -> None:
    r = shim.post("custom_response")
    assert r.status_code == 402
    assert r.headers["X-Powered-By"] == "Nerd Rage"
    assert r.json() == {
        "code": "123",
        "message": "Payment Required",
        "details": "Quota exceeded",
        "hint": "Upgrade",
    }


def test_an_error_rolls_the_whole_call_back(shim: Shim) -> None:
    r = shim.post("add_note", {"p_body": "kept?", "p_then_fail": True})
    assert r.status_code == 400 and r.json()["code"] == "OR002"
    duplicate = [shim.post("add_note", {"p_body": "twice"}) for _ in range(2)]
    assert duplicate[0].status_code == 200
    assert duplicate[1].status_code == 409 and duplicate[1].json()["code"] == "23505"
    with psycopg.connect(shim.database_url) as conn:
        assert conn.execute("select body from shimtest.notes order by id").fetchall() == [("twice",)]


def test_invalid_bodies_and_verbs(shim: Shim) -> None:
    bad_json = shim.http.post("/rest/v1/rpc/add_them", content=b'{"a": ', headers=shim.service)
    assert bad_json.status_code == 400 and _error(bad_json)["code"] == "PGRST102"
    not_object = shim.http.post("/rest/v1/rpc/add_them", content=b"[1, 2]", headers=shim.service)
    assert not_object.status_code == 400 and _error(not_object)["code"] == "PGRST102"
    empty = shim.http.post("/rest/v1/rpc/nothing", content=b"", headers=shim.service)
    assert empty.status_code == 200  # an empty body is a call without arguments
    text = shim.http.post(
        "/rest/v1/rpc/add_them", content=b"a=1", headers={**shim.service, "Content-Type": "text/plain"}
    )
    assert text.status_code == 415 and _error(text)["code"] == "PGRST107"
    put = shim.http.put("/rest/v1/rpc/add_them", json={"a": 1}, headers=shim.service)
    assert put.status_code == 405 and _error(put)["code"] == "PGRST101"
    nested = shim.http.get("/rest/v1/notes/1", headers=shim.service)
    assert nested.status_code == 404 and _error(nested)["code"] == "PGRST125"
    unknown = shim.http.get("/rest/v1/no_such_table", headers=shim.service)
    assert unknown.status_code == 404 and _error(unknown)["code"] == "PGRST205"
    select = shim.http.get("/rest/v1/rpc/series", params={"n": "3", "select": "*"}, headers=shim.service)
    assert select.status_code == 400 and _error(select)["code"] == "PGRST127"


# --- faults ----------------------------------------------------------------------------------------


def test_fail_next_answers_503_then_recovers(shim: Shim) -> None:
    shim.server.fail_next(2)
    first, second, third = (shim.post("add_them", {"a": 1}) for _ in range(3))
    for r in (first, second):
        assert r.status_code == 503
        assert _error(r)["code"] == "PGRST000"
    assert third.status_code == 200 and third.json() == 11
    assert [rec.status for rec in shim.server.requests][-3:] == [503, 503, 200]


def test_gateway_fault_has_no_postgrest_body(shim: Shim) -> None:
    shim.server.fail_next(1, kind="gateway")
    r = shim.post("add_them", {"a": 1})
    assert r.status_code == 503
    assert not r.headers["Content-Type"].startswith("application/json")
    assert shim.post("add_them", {"a": 1}).json() == 11


def test_disconnect_fault_drops_the_connection(shim: Shim) -> None:
    shim.server.fail_next(1, kind="disconnect")
    with pytest.raises(httpx.RemoteProtocolError):
        shim.post("add_them", {"a": 1})
    assert shim.post("add_them", {"a": 1}).json() == 11
    assert shim.server.requests[-2].status is None


def test_keys_must_differ() -> None:
    with pytest.raises(ValueError):
        PostgrestServer("postgresql://unused", "same", "same")
