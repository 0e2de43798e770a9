"""requirements.lock: the runtime dependencies pinned with hashes, agreeing with pyproject.toml.

The image (Dockerfile) and the test environment (Makefile) install from the lock, so what the tests
exercise is what ships and two builds a month apart install the same code. These checks fail when
someone edits pyproject.toml's dependencies without running ``make lock``, or edits the lock by hand.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"


def parse_lock(text: str) -> dict[str, tuple[str, Requirement, list[str]]]:
    """name -> (pinned version, the requirement with its marker, its hashes)."""
    entries: dict[str, tuple[str, Requirement, list[str]]] = {}
    # Logical lines: a requirement and its `--hash` options joined by backslash continuations.
    logical = re.sub(r"\\\n\s*", " ", text)
    for raw in logical.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        hashes = re.findall(r"--hash=(sha256:[0-9a-f]{64})", line)
        spec = re.sub(r"--hash=\S+", "", line).strip()
        req = Requirement(spec)
        pins = [s for s in req.specifier if s.operator == "=="]
        assert len(pins) == 1, f"not pinned exactly: {spec}"
        entries[canonicalize_name(req.name)] = (pins[0].version, req, hashes)
    return entries


def project_requirements() -> list[Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(r) for r in data["project"]["dependencies"]]


def lock_problems(
    lock: dict[str, tuple[str, Requirement, list[str]]], wanted: list[Requirement]
) -> list[str]:
    problems = []
    for req in wanted:
        name = canonicalize_name(req.name)
        if name not in lock:
            problems.append(f"{req}: not in requirements.lock")
            continue
        version = lock[name][0]
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req}: the lock pins {version}, outside the range")
        for extra in sorted(req.extras):
            # psycopg[binary,pool] -> psycopg-binary, psycopg-pool: the extra's packages must be pinned too.
            if canonicalize_name(f"{req.name}-{extra}") not in lock:
                problems.append(f"{req}: extra {extra!r} has no pinned {req.name}-{extra}")
    for name, (_version, _req, hashes) in lock.items():
        if not hashes:
            problems.append(f"{name}: no --hash (pip --require-hashes would refuse the lock)")
    return problems


def test_lock_agrees_with_pyproject() -> None:
    lock = parse_lock(LOCK.read_text())
    assert lock_problems(lock, project_requirements()) == []


def test_the_check_can_fail() -> None:
    lock = parse_lock(
        "httpx==0.20.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
        "psycopg==3.2.1 \\\n    --hash=sha256:" + "b" * 64 + "\n"
        "structlog==24.1.0\n"
    )
    problems = lock_problems(
        lock, [Requirement("httpx>=0.27"), Requirement("psycopg[binary]>=3.2"), Requirement("tenacity>=8")]
    )
    assert any("httpx" in p and "outside the range" in p for p in problems)
    assert any("extra 'binary'" in p for p in problems)
    assert any("tenacity" in p and "not in" in p for p in problems)
    assert any(p.startswith("structlog: no --hash") for p in problems)


def test_lock_is_closed_under_dependencies() -> None:
    """Every dependency of a locked package (for this interpreter) is locked too: pip --require-hashes
    refuses to install anything the lock does not name, so a gap would break the image build."""
    lock = parse_lock(LOCK.read_text())
    env = default_environment()
    missing = []
    for name, (_version, req, _hashes) in lock.items():
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        for dep in md.requires(name) or []:
            dreq = Requirement(dep)
            if dreq.marker is not None and not dreq.marker.evaluate({**env, "extra": ""}):
                continue
            if canonicalize_name(dreq.name) not in lock:
                missing.append(f"{name} needs {dreq}")
    assert missing == []


def test_environment_runs_the_locked_versions() -> None:
    """`make test` installs the lock first, so the suite exercises the versions the image ships."""
    lock = parse_lock(LOCK.read_text())
    env = default_environment()
    differ = [
        f"{name}: installed {md.version(name)}, locked {version}"
        for name, (version, req, _h) in lock.items()
        if (req.marker is None or req.marker.evaluate(env)) and md.version(name) != version
    ]
    assert differ == []


def test_dockerfile_installs_from_the_lock_with_hashes() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "pip wheel --require-hashes --wheel-dir /wheels -r requirements.lock" in text
    assert text.count("--require-hashes -r /wheels/requirements.lock") == 2  # emulator and runtime stages
    assert "--no-deps" in text
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text()
