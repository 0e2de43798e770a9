"""PostgREST's RPC path over its schema cache: which function a call names, and the SQL that calls it.

Part of the Supabase stand-in (``orchestrator.standins.postgrest``): :class:`SchemaCache` is what the
server (:mod:`.server`) knows of the exposed schema between reloads; for each ``/rest/v1/rpc/<fn>``
call it asks :func:`choose` for the function the named arguments fit, answers :func:`no_function_error`
(``PGRST202``) or ``PGRST203`` when none or several do, and runs the statement :func:`call_sql` builds.
The rules are PostgREST's (docs.postgrest.org, references/api/functions and references/schema_cache);
the server's module docstring lists where the stand-in differs.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from orchestrator.standins.postgrest.common import HttpError, pgrst_error


@dataclass(frozen=True)
class Routine:
    """One function of the exposed schema, as the cache holds it."""

    schema: str
    name: str
    params: tuple[tuple[str, str], ...]  # (name, type) of the input parameters, "" when unnamed
    required: int  # the first `required` input parameters have no default
    variadic: bool
    returns_set: bool
    returns_void: bool
    volatile: bool

    @property
    def param_names(self) -> list[str]:
        return [n for n, _ in self.params]

    def single_unnamed_json(self) -> bool:
        return len(self.params) == 1 and self.params[0][0] == "" and self.params[0][1] in ("json", "jsonb")

    def matches(self, keys: frozenset[str]) -> bool:
        names = self.param_names
        if "" in names[: self.required]:
            return False  # an unnamed required parameter cannot be passed by name
        return keys <= set(names) - {""} and set(names[: self.required]) <= keys


_CATALOG_SQL = """
SELECT p.proname,
       p.pronargs,
       p.pronargdefaults,
       p.proargnames,
       p.proargmodes::text[],
       array(SELECT format_type(t.oid_, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS t(oid_, i) ORDER BY t.i),
       p.provariadic <> 0,
       p.proretset,
       p.prorettype = 'void'::regtype,
       p.provolatile = 'v'
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %s AND p.prokind = 'f'
ORDER BY p.proname, p.oid
"""

_RELATIONS_SQL = """
SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
GROUP BY c.relname
"""


@dataclass(frozen=True)
class SchemaCache:
    """What PostgREST knows of the exposed schema between reloads: its functions and its tables' columns.

    PostgREST reads this metadata once and serves every request from it ("Schema Cache",
    docs.postgrest.org/en/stable/references/schema_cache.html); it is refilled only when the server
    starts, when its listener connection is re-established, and on ``NOTIFY pgrst`` with the payload
    ``'reload schema'`` or an empty one ("Listener", docs.postgrest.org/en/stable/references/listener.html;
    ``PostgREST.Workers.listener`` of the postgrest package: "When a NOTIFY db-channel - with an empty
    payload - is done, it refills the schema cache"). So a function created after the last reload is
    unknown (404 ``PGRST202``) until then, whatever ``pg_proc`` says, and one dropped since is still
    "known" (its call then fails in Postgres, ``42883``, 404).
    """

    schema: str
    routines: Mapping[str, tuple[Routine, ...]]
    columns: Mapping[str, tuple[str, ...]]
    loaded_at: float

    @classmethod
    def load(cls, conn: psycopg.Connection[Any], schema: str) -> SchemaCache:
        routines: dict[str, list[Routine]] = {}
        for (
            proname, nargs, ndefaults, argnames, argmodes, argtypes, variadic, retset, retvoid, volatile,
        ) in conn.execute(_CATALOG_SQL, (schema,)).fetchall():  # fmt: skip
            names: list[str] = list(argnames or [])
            if argmodes:
                # proargnames covers every argument (OUT ones too) when modes are present; keep the inputs.
                names = [
                    n
                    for n, m in zip(names or [""] * len(argmodes), argmodes, strict=False)
                    if m in ("i", "b", "v")
                ]
            names = (names + [""] * nargs)[:nargs]
            routines.setdefault(str(proname), []).append(
                Routine(
                    schema=schema,
                    name=str(proname),
                    params=tuple(zip(names, argtypes, strict=True)),
                    required=nargs - (ndefaults or 0),
                    variadic=bool(variadic),
                    returns_set=bool(retset),
                    returns_void=bool(retvoid),
                    volatile=bool(volatile),
                )
            )
        columns = {
            str(name): tuple(str(c) for c in cols)
            for name, cols in conn.execute(_RELATIONS_SQL, (schema,)).fetchall()
        }
        return cls(
            schema=schema,
            routines={k: tuple(v) for k, v in routines.items()},
            columns=columns,
            loaded_at=time.time(),
        )

    def functions(self, name: str) -> list[Routine]:
        return list(self.routines.get(name, ()))

    def table_columns(self, table: str) -> list[str] | None:
        found = self.columns.get(table)
        return list(found) if found is not None else None


def no_function_error(
    cache: SchemaCache, name: str, keys: frozenset[str], overloads: list[Routine]
) -> HttpError:
    schema = cache.schema
    qualified = f"{schema}.{name}"
    given = ", ".join(sorted(keys))
    if keys:
        message = f"Could not find the function {qualified}({given}) in the schema cache"
        searched = f" with parameter{'s' if len(keys) > 1 else ''} {given}"
    else:
        message = f"Could not find the function {qualified} without parameters in the schema cache"
        searched = " without parameters"
    details = (
        f"Searched for the function {qualified}{searched} or with a single unnamed json/jsonb parameter,"
        " but no matches were found in the schema cache."
    )
    hint: str | None = None
    if overloads:
        # Same name, other parameters: suggest the closest parameter list, as PostgREST does.
        lists = {"(" + ", ".join(sorted(r.param_names)) + ")": r for r in overloads}
        close = difflib.get_close_matches("(" + given + ")", list(lists), n=1, cutoff=0.0)
        if close:
            hint = f"Perhaps you meant to call the function {qualified}{close[0]}"
    else:
        close = difflib.get_close_matches(name, sorted(cache.routines), n=1, cutoff=0.75)
        if close:
            hint = f"Perhaps you meant to call the function {schema}.{close[0]}"
    return pgrst_error(404, "PGRST202", message, details, hint)


def choose(routines: list[Routine], keys: frozenset[str], body_is_json_object: bool) -> Routine | None:
    candidates = [r for r in routines if r.matches(keys)]
    if not candidates and body_is_json_object:
        candidates = [r for r in routines if r.single_unnamed_json()]
    if len(candidates) > 1:
        exact = [r for r in candidates if set(r.param_names) == keys]
        if len(exact) == 1:
            return exact[0]
        described = ", ".join(
            f"{r.schema}.{r.name}(" + ", ".join(f"{n} => {t}" for n, t in r.params) + ")" for r in candidates
        )
        raise pgrst_error(
            300,
            "PGRST203",
            f"Could not choose the best candidate function between: {described}",
            None,
            "Try renaming the parameters or the function itself in the database so function overloading can be resolved",
        )
    return candidates[0] if candidates else None


def call_sql(routine: Routine, keys: list[str], whole_body: bool) -> sql.Composed:
    """The statement calling ``routine``: one row whose last column is the response body (JSON text).

    Arguments arrive as one JSON object (the only query parameter) and are typed by
    ``json_to_record`` with the parameters' declared types, the way PostgREST converts them.
    """
    fn = sql.SQL("{}.{}").format(sql.Identifier(routine.schema), sql.Identifier(routine.name))
    types = dict(routine.params)
    last = routine.params[-1][0] if routine.params else None
    source: sql.Composable = sql.SQL("")
    if whole_body:
        call: sql.Composable = sql.SQL("{}(%s::json)").format(fn)
    elif keys:
        call = sql.SQL("{}({})").format(
            fn,
            sql.SQL(", ").join(
                sql.SQL("{variadic}{name} := _args.{name}").format(
                    variadic=sql.SQL("VARIADIC " if routine.variadic and k == last else ""),
                    name=sql.Identifier(k),
                )
                for k in keys
            ),
        )
        # The types are format_type() output read from pg_catalog, not client input.
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(types[k])) for k in keys
        )
        source = sql.SQL(" FROM json_to_record(%s::json) AS _args({})").format(columns)
    else:
        call = sql.SQL("{}()").format(fn)
    if routine.returns_set:
        # A scalar set-returning function's alias names its column; a composite one's names the row.
        has_source = bool(keys) and not whole_body
        lateral = sql.SQL(", LATERAL {} AS _r" if has_source else " FROM {} AS _r").format(call)
        return sql.SQL("SELECT coalesce(json_agg(_r), '[]'::json)::text{}{}").format(source, lateral)
    if routine.returns_void:
        return sql.SQL("SELECT {}, 'null'{}").format(call, source)
    return sql.SQL("SELECT coalesce(to_json({})::text, 'null'){}").format(call, source)
