"""REST v2's ``CreatePodRequest``, checked from a table: what ``POST /v2/pods`` accepts.

Part of ``orchestrator/standins/emulator``: :mod:`.rest` calls :func:`parse_create` with the decoded
body and hands the :class:`.state.PodSpec` it returns to the state model. The schema part of
``openapi-v2.json`` (types, ranges, enums, unexpected properties) is the table :data:`CREATE_POD`;
one small walker applies it and collects every problem, in the table's order, into a 422. The rules
between fields, which a valid body can still break, are the table :data:`CROSS_FIELD_RULES` (400, or
404 for a template). The wording and order of each message are part of the emulator's wire contract:
tests compare them, so a change here is a change of the API.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .state import EmulatorRefusal, PodSpec

#: A check of a value that already has its field's type: (path, value) -> problems, each "path: ...".
Check = Callable[[str, Any], list[str]]

CUDA_VERSION = re.compile(r"^\d+\.\d+$")


@dataclass(frozen=True)
class Field:
    """How one property is checked; the defaults are "optional, not null, of this type"."""

    kind: type
    #: Run in order on a well-typed value; the first one that finds problems ends the field's checks.
    checks: tuple[Check, ...] = ()
    #: The problem a JSON null is (None: null is allowed and means "absent").
    on_null: str | None = "must not be null"
    wrong_type: str = "wrong type"
    #: An absent property is a problem, worded "required" or "required unless <unless> is set".
    required: bool = False
    unless: str | None = None
    #: One message for every way the property can fail (absent, null, wrong type, a failed check).
    strict: str | None = None
    #: The property is one of these values when present (null included in "any other value").
    one_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schema:
    """An object: its properties in the order their problems are reported; nothing else is allowed."""

    fields: Mapping[str, Field]
    #: Properties whose null is reported before any property is checked (the order of ``mounts``).
    nulls_first: tuple[str, ...] = field(default=())


# --- checks ----------------------------------------------------------------------------------------


def _at_least(minimum: int) -> Check:
    def check(path: str, value: Any) -> list[str]:
        return [f"{path}: must be at least {minimum}"] if value < minimum else []

    return check


def _not_empty(path: str, value: Any) -> list[str]:
    return [f"{path}: must not be empty"] if value == "" else []


def _matches(pattern: re.Pattern[str]) -> Check:
    def check(path: str, value: Any) -> list[str]:
        return [] if pattern.match(value) else [f"{path}: {value!r} is not major.minor"]

    return check


def _each_item_matches(pattern: re.Pattern[str]) -> Check:
    def check(path: str, value: Any) -> list[str]:
        return [
            f"{path}: {v!r} is not major.minor"
            for v in value
            if not isinstance(v, str) or not pattern.match(v)
        ]

    return check


def _items_are_strings(*, each: bool) -> Check:
    """Items must be strings: one problem per offending item (``each``) or one for the whole list."""

    def check(path: str, value: Any) -> list[str]:
        bad = [v for v in value if not isinstance(v, str)]
        if not each:
            bad = bad[:1]
        return [f"{path}: items must be strings" for _ in bad]

    return check


def _values_are_strings(path: str, value: Any) -> list[str]:
    return [f"{path}.{k}: must be a string" for k, v in value.items() if not isinstance(v, str)]


def _at_most_items(count: int) -> Check:
    def check(path: str, value: Any) -> list[str]:
        return [f"{path}: at most {count} item"] if len(value) > count else []

    return check


def _each_item(spec: Field) -> Check:
    def check(path: str, value: Any) -> list[str]:
        return [p for i, item in enumerate(value) for p in check_value(spec, item, f"{path}[{i}]")]

    return check


def _object(schema: Schema) -> Check:
    def check(path: str, value: Any) -> list[str]:
        return check_object(schema, value, path)

    return check


# --- the walker ------------------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_problem(spec: Field, value: Any) -> str | None:
    if isinstance(value, bool) and spec.kind is int:
        return "must be an integer"
    return None if isinstance(value, spec.kind) else spec.wrong_type


def check_value(spec: Field, value: Any, path: str) -> list[str]:
    """The problems of a value that is there (null included)."""
    if value is None:
        return [f"{path}: {spec.on_null}"] if spec.on_null else []
    wrong = _type_problem(spec, value)
    if wrong is not None:
        return [f"{path}: {wrong}"]
    for check in spec.checks:
        found = check(path, value)
        if found:
            return found
    return []


def _conforms(spec: Field, value: Any, path: str) -> bool:
    return (
        value is not None
        and _type_problem(spec, value) is None
        and not any(c(path, value) for c in spec.checks)
    )


def check_field(spec: Field, obj: Mapping[str, Any], key: str, path: str) -> list[str]:
    """The problems of property ``key`` of ``obj`` (``path`` names it in messages)."""
    if spec.one_of:
        if key in obj and obj[key] not in spec.one_of:
            return [f"{path}: must be one of {', '.join(spec.one_of)}"]
        return []
    if spec.strict is not None:
        return [] if _conforms(spec, obj.get(key), path) else [f"{path}: {spec.strict}"]
    if key in obj:
        return check_value(spec, obj[key], path)
    if spec.required and (spec.unless is None or spec.unless not in obj):
        return [f"{path}: required" + (f" unless {spec.unless} is set" if spec.unless else "")]
    return []


def check_object(schema: Schema, obj: Mapping[str, Any], path: str = "") -> list[str]:
    """Every problem of ``obj``: unexpected properties (sorted), early nulls, then each property in turn."""
    problems = [f"{_join(path, k)}: unexpected property" for k in sorted(set(obj) - set(schema.fields))]
    problems += [
        f"{_join(path, k)}: must not be null" for k in schema.nulls_first if k in obj and obj[k] is None
    ]
    for key, spec in schema.fields.items():
        if key in schema.nulls_first and obj.get(key) is None:
            continue
        problems += check_field(spec, obj, key, _join(path, key))
    return problems


# --- CreatePodRequest ------------------------------------------------------------------------------

_NETWORK_MOUNT = Schema(
    {
        "volumeId": Field(str, strict="required string"),
        "path": Field(str, strict="required string"),
    }
)

_PERSISTENT_MOUNT = Schema(
    {
        "size": Field(int, checks=(_at_least(10),), strict="required integer >= 10"),
        "path": Field(str, strict="required string"),
    }
)

_MOUNTS = Schema(
    {
        "network": Field(
            list,
            wrong_type="must be an array",
            checks=(
                _at_most_items(1),
                _each_item(
                    Field(
                        dict,
                        on_null="must be an object",
                        wrong_type="must be an object",
                        checks=(_object(_NETWORK_MOUNT),),
                    )
                ),
            ),
        ),
        "persistent": Field(dict, wrong_type="must be an object", checks=(_object(_PERSISTENT_MOUNT),)),
    },
    nulls_first=("persistent", "network"),
)

_GPU = Schema(
    {
        "id": Field(str, strict="required string"),
        "count": Field(int, checks=(_at_least(1),)),
        "allowedCudaVersions": Field(list, checks=(_each_item_matches(CUDA_VERSION),)),
        "minCudaVersion": Field(str, checks=(_matches(CUDA_VERSION),)),
    }
)

#: openapi-v2.json's CreatePodRequest as the emulator checks it (422 with every problem found).
CREATE_POD = Schema(
    {
        "name": Field(str, required=True, checks=(_not_empty,)),
        "image": Field(str, required=True, unless="templateId"),
        "args": Field(str),
        "disk": Field(int, checks=(_at_least(1),)),
        "env": Field(dict, checks=(_values_are_strings,)),
        "ports": Field(list, checks=(_items_are_strings(each=True),)),
        "cloud": Field(str, one_of=("SECURE", "COMMUNITY")),
        "dataCenterIds": Field(list, checks=(_items_are_strings(each=False),)),
        "startSsh": Field(bool),
        "startJupyter": Field(bool),
        "globalNetworking": Field(bool),
        "registry": Field(str, on_null=None),
        "templateId": Field(str),
        "gpu": Field(dict, checks=(_object(_GPU),)),
        "mounts": Field(dict, checks=(_object(_MOUNTS),)),
        # Accepted so that a CPU request is refused by the rule below rather than as unknown.
        "cpu": Field(object, on_null=None),
    }
)


@dataclass(frozen=True)
class Rule:
    """A rule between fields of a schema-valid body: when ``broken``, refuse as ``kind`` with ``detail``."""

    kind: str
    broken: Callable[[dict[str, Any]], bool]
    detail: Callable[[dict[str, Any]], str]


def _mounts(data: dict[str, Any]) -> dict[str, Any]:
    return data.get("mounts") or {}


def _gpu(data: dict[str, Any]) -> dict[str, Any]:
    return data.get("gpu") or {}


#: Checked in order once the schema holds; the first broken rule is the answer.
CROSS_FIELD_RULES: tuple[Rule, ...] = (
    Rule(
        "bad_request",
        lambda d: ("gpu" in d) == ("cpu" in d),
        lambda d: "exactly one of gpu or cpu must be set",
    ),
    Rule("bad_request", lambda d: "gpu" not in d, lambda d: "CPU pods are not offered by this emulator"),
    Rule(
        "bad_request",
        lambda d: bool(_mounts(d).get("network") and _mounts(d).get("persistent")),
        lambda d: "mounts: persistent and network are mutually exclusive",
    ),
    Rule(
        "bad_request",
        lambda d: bool(_gpu(d).get("allowedCudaVersions") and _gpu(d).get("minCudaVersion")),
        lambda d: "gpu: allowedCudaVersions and minCudaVersion are mutually exclusive",
    ),
    Rule(
        "not_found",
        lambda d: d.get("templateId") is not None,
        lambda d: f"template {d['templateId']} not found",
    ),
)


def parse_create(data: Any) -> PodSpec:
    """Check a CreatePodRequest the way openapi-v2.json describes it: 422 for the schema, 400 for rules."""
    if not isinstance(data, dict):
        raise EmulatorRefusal("invalid", "Request validation failed.", errors=["body: must be an object"])
    errors = check_object(CREATE_POD, data)
    if errors:
        raise EmulatorRefusal("invalid", "Request validation failed.", errors=errors)
    for rule in CROSS_FIELD_RULES:
        if rule.broken(data):
            raise EmulatorRefusal(rule.kind, rule.detail(data))
    return _pod_spec(data)


def _pod_spec(data: dict[str, Any]) -> PodSpec:
    """The spec of a body that passed every check (so every present value has its type)."""
    gpu = data["gpu"]
    mounts = _mounts(data)
    network = mounts.get("network") or []
    persistent = mounts.get("persistent")
    volume_id: str | None = None
    mount_path: str | None = None
    persistent_gb = 0
    if network:
        volume_id, mount_path = network[0]["volumeId"], network[0]["path"]
    if persistent is not None:
        persistent_gb, mount_path = int(persistent["size"]), str(persistent["path"])
    return PodSpec(
        name=data["name"],
        image=data.get("image") or "",
        gpu_id=gpu["id"],
        gpu_count=gpu.get("count", 1),
        cloud=data.get("cloud", "SECURE"),
        data_center_ids=list(data.get("dataCenterIds") or []),
        volume_id=volume_id,
        mount_path=mount_path,
        persistent_gb=persistent_gb,
        disk_gb=data.get("disk", 50),
        args=data.get("args") or "",
        args_given_empty=data.get("args") == "",
        ports=list(data.get("ports") or []),
        env=dict(data.get("env") or {}),
        allowed_cuda=list(gpu.get("allowedCudaVersions") or []),
        min_cuda=gpu.get("minCudaVersion"),
        via="rest",
    )
