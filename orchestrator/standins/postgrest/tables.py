"""PostgREST's table endpoints, the part the real worker uses: ``GET`` and ``PATCH /rest/v1/<table>``.

Part of the Supabase stand-in (``orchestrator.standins.postgrest``). The real worker reads its own
``In Progress`` tasks with ``GET /rest/v1/tasks?select=id,params,task_type,project_id&worker_id=eq.<id>
&status=eq.In Progress&limit=1``; its launcher PATCHes ``/rest/v1/workers?id=eq.<id>`` (metadata, expects
204); its fatal-error handler PATCHes ``workers`` (status, metadata) and ``tasks`` (a body with
``error_details``, a column ``tasks`` does not have, so PostgREST refuses it with ``PGRST204``). Sources:
peteromallet/Headless-Wan2GP and banodoco/Reigh-Worker (``worker.py``, ``source/core/db/*.py``,
``fatal_error_handler.py``); banodoco/reigh-worker-orchestrator
``gpu_orchestrator/runpod/worker_startup.template.sh``.

PostgREST semantics implemented (docs.postgrest.org, references/api/tables_views, references/errors):

- ``select``: column names or ``*`` (aliases, casts and embedded resources answer ``PGRST100``);
  an unknown column is Postgres's ``42703`` (400) "column <table>.<col> does not exist".
- Horizontal filters ``<col>=<op>.<value>`` with ``eq, neq, gt, gte, lt, lte, like, ilike, is, in`` and
  ``not.`` before any of them; values are sent untyped, so Postgres converts them to the column's type
  (a bad uuid is ``22P02``, 400). ``limit``, ``offset``, ``order=<col>[.asc|.desc][.nullsfirst|.nullslast]``.
- ``Accept: application/vnd.pgrst.object+json``: one object, else 406 ``PGRST116``.
- ``PATCH``: a JSON object whose keys must all be columns (else 400 ``PGRST204`` "Could not find the
  '<col>' column of '<table>' in the schema cache"); values are converted with
  ``json_populate_record`` on the table's row type. 204 without a body, or with
  ``Prefer: return=representation`` 200 and the updated rows (``select`` applies). A PATCH without
  filters updates every row, as PostgREST does without pg-safeupdate.
- An unknown table or view: 404 ``PGRST205`` "Could not find the table '<schema>.<table>' in the schema cache".
  Tables and columns come from the server's schema cache (``orchestrator.standins.postgrest.rpc.SchemaCache``),
  refilled on ``NOTIFY pgrst, 'reload schema'`` as PostgREST's is.
- The request runs as the key's role (grants and row level security apply); ``GET`` read-only.

Not implemented (answer 400 ``PGRST127`` "Feature not implemented"): ``POST``/``PUT``/``DELETE`` on
tables, ``and``/``or`` logic trees, full-text and range operators, ``Prefer: count``, ``Range`` headers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from orchestrator.standins.postgrest.common import JSON_TYPE, HttpError, Reply, pgrst_error

_OPERATORS = {
    "eq": "=",
    "neq": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "like": "LIKE",
    "ilike": "ILIKE",
}
_RESERVED = frozenset({"select", "order", "limit", "offset", "columns", "on_conflict", "apikey"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SINGULAR = "application/vnd.pgrst.object+json"


@dataclass(frozen=True)
class TableRequest:
    """One table request, parsed: what the handler got from the URL, headers and body."""

    method: str
    table: str
    query: list[tuple[str, str]]
    body: bytes
    prefer: str
    accept: str


def _columns(schema: str, table: str, cached: list[str] | None) -> list[str]:
    if not cached:
        raise pgrst_error(
            404, "PGRST205", f"Could not find the table '{schema}.{table}' in the schema cache", None, None
        )
    return cached


def _check_column(table: str, name: str, columns: list[str]) -> None:
    if name not in columns:
        raise HttpError(
            400,
            {
                "code": "42703",
                "details": None,
                "hint": None,
                "message": f"column {table}.{name} does not exist",
            },
        )


def _select_list(value: str | None, table: str, columns: list[str]) -> sql.Composable:
    if value is None or value.strip() in ("", "*"):
        return sql.SQL("*")
    items: list[sql.Composable] = []
    for raw in value.split(","):
        name = raw.strip()
        if name == "*":
            items.append(sql.SQL("*"))
            continue
        if not _NAME.match(name):
            raise pgrst_error(
                400, "PGRST100", f'"failed to parse select parameter ({value})"',
                "This PostgREST stand-in reads plain column names (no aliases, casts or embedded resources).",
            )  # fmt: skip
        _check_column(table, name, columns)
        items.append(sql.Identifier(name))
    return sql.SQL(", ").join(items)


def _in_values(text: str) -> list[str]:
    """``(a,b,"c,d")`` -> ``["a", "b", "c,d"]`` (PostgREST's list syntax, double quotes for commas)."""
    if not (text.startswith("(") and text.endswith(")")):
        raise ValueError("an in. list is written (a,b,c)")
    out: list[str] = []
    item, quoted, i, body = "", False, 0, text[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == '"':
            quoted = not quoted
        elif ch == "\\" and quoted and i + 1 < len(body):
            i += 1
            item += body[i]
        elif ch == "," and not quoted:
            out.append(item)
            item = ""
        else:
            item += ch
        i += 1
    if body:
        out.append(item)
    return out


def _where(
    query: list[tuple[str, str]], table: str, columns: list[str], alias: str | None = None
) -> tuple[sql.Composable, list[Any]]:
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for key, value in query:
        if key in _RESERVED:
            continue
        if key in ("and", "or", "not.and", "not.or"):
            raise pgrst_error(
                400,
                "PGRST127",
                "Feature not implemented",
                f"logic trees ({key}=...) are not implemented here",
            )
        _check_column(table, key, columns)
        column = sql.Identifier(alias, key) if alias else sql.Identifier(key)
        negate, rest = False, value
        if rest.startswith("not."):
            negate, rest = True, rest[4:]
        op, dot, operand = rest.partition(".")
        if not dot:
            raise pgrst_error(400, "PGRST100", f'"failed to parse filter ({value})" (line 1, column 1)')
        if op in _OPERATORS:
            if op in ("like", "ilike"):
                operand = operand.replace("*", "%")
            clause: sql.Composable = sql.SQL("{} {} %s").format(column, sql.SQL(_OPERATORS[op]))
            params.append(operand)
        elif op == "is":
            literal = {"null": "NULL", "true": "TRUE", "false": "FALSE", "unknown": "UNKNOWN"}.get(
                operand.lower()
            )
            if literal is None:
                raise pgrst_error(400, "PGRST100", f'"failed to parse filter ({value})" (line 1, column 4)')
            clause = sql.SQL("{} IS {}").format(column, sql.SQL(literal))
        elif op == "in":
            try:
                values = _in_values(operand)
            except ValueError as exc:
                raise pgrst_error(400, "PGRST100", f'"failed to parse filter ({value})"', str(exc)) from exc
            if not values:
                clause = sql.SQL("FALSE")
            else:
                clause = sql.SQL("{} IN ({})").format(
                    column, sql.SQL(", ").join(sql.SQL("%s") for _ in values)
                )
                params.extend(values)
        else:
            raise pgrst_error(
                400, "PGRST100", f'"failed to parse filter ({value})" (line 1, column 1)',
                f"unexpected operator {op!r}; this stand-in knows eq, neq, gt, gte, lt, lte, like, ilike, is, in",
            )  # fmt: skip
        clauses.append(sql.SQL("NOT ({})").format(clause) if negate else clause)
    if not clauses:
        return sql.SQL("TRUE"), params
    return sql.SQL(" AND ").join(clauses), params


def _order(value: str | None, table: str, columns: list[str]) -> sql.Composable:
    if not value:
        return sql.SQL("")
    terms: list[sql.Composable] = []
    for term in value.split(","):
        name, *mods = term.strip().split(".")
        _check_column(table, name, columns)
        piece: sql.Composable = sql.Identifier(name)
        for mod in mods:
            word = {"asc": "ASC", "desc": "DESC", "nullsfirst": "NULLS FIRST", "nullslast": "NULLS LAST"}.get(
                mod
            )
            if word is None:
                raise pgrst_error(400, "PGRST100", f'"failed to parse order ({value})"')
            piece = sql.SQL("{} {}").format(piece, sql.SQL(word))
        terms.append(piece)
    return sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(terms))


def _count(value: str | None, name: str) -> sql.Composable:
    if value is None or value == "":
        return sql.SQL("")
    if not value.isdigit():
        raise pgrst_error(400, "PGRST100", f'"failed to parse {name} ({value})"')
    return sql.SQL(f" {name.upper()} {int(value)}")


def _first(query: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in query if k == name), None)


def _rows_reply(text: str, request: TableRequest, status: int) -> Reply:
    rows = json.loads(text)
    headers = {"Content-Type": JSON_TYPE, "Content-Range": f"0-{len(rows) - 1}/*" if rows else "*/0"}
    if SINGULAR in request.accept:
        if len(rows) != 1:
            raise pgrst_error(
                406, "PGRST116", "Cannot coerce the result to a single JSON object",
                f"The result contains {len(rows)} rows",
            )  # fmt: skip
        return Reply(
            status, json.dumps(rows[0]).encode(), {**headers, "Content-Type": f"{SINGULAR}; charset=utf-8"}
        )
    return Reply(status, text.encode(), headers)


def handle(
    conn: psycopg.Connection[Any], schema: str, request: TableRequest, cached_columns: list[str] | None
) -> Reply:
    """Run one table request inside the caller's transaction (role already set).

    ``cached_columns`` are the table's columns as the server's schema cache holds them (None: the cache
    does not know the table), not as the catalog says now: like PostgREST, a table or column added since
    the last reload is unknown until the next one."""
    if request.method not in ("GET", "HEAD", "PATCH"):
        raise pgrst_error(
            400, "PGRST127", "Feature not implemented",
            f"This PostgREST stand-in serves GET and PATCH on tables, not {request.method}.",
        )  # fmt: skip
    table = request.table
    columns = _columns(schema, table, cached_columns)
    target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    select = _select_list(_first(request.query, "select"), table, columns)
    where, params = _where(request.query, table, columns)
    if request.method in ("GET", "HEAD"):
        statement = sql.SQL(
            "SELECT coalesce(json_agg(_r), '[]'::json)::text FROM (SELECT {} FROM {} WHERE {}{}{}{}) _r"
        ).format(
            select, target, where,
            _order(_first(request.query, "order"), table, columns),
            _count(_first(request.query, "limit"), "limit"),
            _count(_first(request.query, "offset"), "offset"),
        )  # fmt: skip
        row = conn.execute(statement, params).fetchone()
        return _rows_reply(str(row[0]) if row else "[]", request, 200)

    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise pgrst_error(400, "PGRST102", f"Empty or invalid json: {exc}") from exc
    if not isinstance(body, dict):
        raise pgrst_error(400, "PGRST102", "The body of a PATCH must be a JSON object")
    for key in body:
        if key not in columns:
            raise pgrst_error(
                400, "PGRST204", f"Could not find the '{key}' column of '{table}' in the schema cache"
            )
    representation = "return=representation" in request.prefer
    if body:
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = _v.{}").format(sql.Identifier(k), sql.Identifier(k)) for k in body
        )
        # Filters name the target's columns through its alias: _v has the same column names.
        where_t, params = _where(request.query, table, columns, alias="_t")
        statement = sql.SQL(
            "WITH _u AS (UPDATE {} AS _t SET {} FROM json_populate_record(NULL::{}, %s::json) AS _v"
            " WHERE {} RETURNING _t.*)"
            " SELECT coalesce(json_agg(_r), '[]'::json)::text FROM (SELECT {} FROM _u) _r"
        ).format(target, assignments, target, where_t, select)
        row = conn.execute(statement, [json.dumps(body), *params]).fetchone()
        text = str(row[0]) if row else "[]"
    else:
        text = "[]"
    if not representation:
        count = len(json.loads(text))
        return Reply(204, None, {"Content-Range": f"0-{count - 1}/*" if count else "*/0"})
    return _rows_reply(text, request, 200)
