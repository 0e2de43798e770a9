"""The deployment files: Dockerfile and .dockerignore, the systemd unit, the environment example,
docker-compose.yml and docs/operations.md, checked without a Docker engine or a running systemd.

Where it sits: these are the artefacts operators install (issue "Deployment and operations"). Nothing
here mocks the tools: `systemd-analyze` verifies the unit, the Dockerfile's HEALTHCHECK command really
runs against an HTTP server, the claimable-tasks example of the docs really runs on PostgreSQL, and the
MemoryDenyWriteExecute= choice is checked under the kernel's own W^X switch. The Dockerfile is read with
a small parser below (instructions, stages, exec forms) and the build context with Docker's
.dockerignore rules; each check is also run on a deliberately bad input, to prove it can fail.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from orchestrator.core import config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UNIT = ROOT / "deploy" / "orchestrator.service"
ENV_EXAMPLE = ROOT / "deploy" / "orchestrator.env.example"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
GEN_ENV = ROOT / "scripts" / "gen_env_example.py"

# Files that must never reach an image, wherever they sit in the build context: environment files,
# private keys and certificates, credentials. Nested variants catch a key dropped into a directory
# the Dockerfile copies.
SECRET_FILES: tuple[str, ...] = (
    ".env",
    ".env.local",
    ".env.production",
    "orchestrator.env",
    "id_rsa",
    "id_ed25519",
    "id_ecdsa",
    "keys/id_ed25519",
    "server.pem",
    "certs/client.key",
    "bundle.p12",
    ".pgpass",
    ".netrc",
    "sub/.env",
    "sub/dir/id_rsa",
    "sub/dir/tls.key",
    "sub/private.pem",
)
# The checkout's own state at the top of the context: history, the virtualenv, local state, tests.
CHECKOUT_ONLY: tuple[str, ...] = (".git/config", ".venv/bin/python", "state/lease", "deploy/orchestrator.env")
DANGEROUS: tuple[str, ...] = SECRET_FILES + CHECKOUT_ONLY

_SECRET_NAME = re.compile(r"(?:^|_)(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$")
_SECRET_VARS = {v.name for v in config.VARIABLES if v.secret}


# --------------------------------------------------------------------------------------------------
# A small Dockerfile parser: enough of the reference's grammar for the checks below.


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the text after the keyword and its --flags
    flags: dict[str, str]
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON-array (exec) form's words, or None for the shell form."""
        text = self.args.strip()
        if text.startswith("["):
            try:
                words = json.loads(text)
            except json.JSONDecodeError:
                return None  # Docker treats malformed JSON as shell form
            if isinstance(words, list) and all(isinstance(w, str) for w in words):
                return words
        return None


@dataclass
class Stage:
    index: int
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Join continuation lines; drop comments and parser directives (as Docker does, even mid-instruction)."""
    escape = "\\"
    lines = text.splitlines()
    directives = True
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if directives:
            match = re.match(r"#\s*(\w+)\s*=\s*(\S+)\s*$", stripped)
            if match:
                if match.group(1).lower() == "escape":
                    escape = match.group(2)
                continue
            directives = False
        if stripped.startswith("#") or (not stripped and buf):
            continue
        if not stripped:
            continue
        if not buf:
            start = number
        if stripped.endswith(escape):
            buf.append(stripped[: -len(escape)].rstrip())
            continue
        buf.append(stripped)
        yield start, " ".join(part for part in buf if part)
        buf = []
    if buf:
        yield start, " ".join(buf)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages). Flags (``--from=build``) are split off COPY/ADD/RUN/FROM/HEALTHCHECK."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: dict[str, str] = {}
        rest = rest.strip()
        if keyword in {"FROM", "COPY", "ADD", "RUN", "HEALTHCHECK"}:
            while rest.startswith("--"):
                token, _, rest = rest.partition(" ")
                name, _, value = token[2:].partition("=")
                # RUN may carry several --mount flags; keep them all, separated by newlines.
                flags[name] = f"{flags[name]}\n{value}" if name in flags else value
                rest = rest.strip()
        inst = Instruction(keyword, rest, flags, number)
        if keyword == "FROM":
            words = rest.split()
            stage_name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(len(stages), words[0], stage_name))
        elif not stages:
            if keyword == "ARG":
                key, _, value = rest.partition("=")
                global_args[key.strip()] = value.strip()
            else:
                raise ValueError(f"line {number}: {keyword} before the first FROM")
        else:
            stages[-1].instructions.append(inst)
    return global_args, stages


def _env_pairs(inst: Instruction) -> list[tuple[str, str]]:
    """ENV/ARG name-value pairs (``ENV A=1 B=2``, the legacy ``ENV A 1``, ``ARG A`` without a value)."""
    if inst.keyword == "ENV" and "=" not in inst.args.split()[0]:
        name, _, value = inst.args.partition(" ")
        return [(name, value.strip())]
    pairs = []
    for word in shlex.split(inst.args):
        name, _, value = word.partition("=")
        pairs.append((name, value))
    return pairs


def _copy_sources(inst: Instruction) -> list[str]:
    """Build-context sources of a COPY/ADD (none when it copies from a stage or image)."""
    if "from" in inst.flags:
        return []
    words = inst.exec_form() or shlex.split(inst.args)
    return words[:-1]


def _bind_mount_sources(inst: Instruction) -> list[str]:
    """Build-context paths a ``RUN --mount=type=bind`` exposes (none when it mounts another stage)."""
    sources = []
    for mount in inst.flags.get("mount", "").splitlines():
        opts = dict(part.partition("=")[::2] for part in mount.split(",") if part)
        if opts.get("type", "bind") == "bind" and "from" not in opts:
            sources.append(opts.get("source", opts.get("src", ".")))
    return sources


# --------------------------------------------------------------------------------------------------
# .dockerignore, with Docker's rules (moby/patternmatcher): patterns are anchored at the context's root
# and cleaned; `*` and `?` stop at `/`, `**` spans directories; a pattern that matches a parent
# directory excludes what is inside it; `!` re-includes; the last matching pattern wins.


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 1
                if pattern.startswith("/", i + 1):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return re.compile("".join(out))


def read_dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        cleaned = os.path.normpath(line.lstrip("/")) if line.lstrip("/") else "."
        rules.append((exclusion, _ignore_regex(cleaned)))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for exclusion, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not exclusion
    return ignored


# --------------------------------------------------------------------------------------------------
# The checks, as functions returning problems, so that they can be shown to fail on bad input.


def dockerfile_problems(text: str, ignore_text: str | None, context: Path) -> list[str]:
    _, stages = parse_dockerfile(text)
    problems: list[str] = []
    rules = read_dockerignore(ignore_text or "")
    if len(stages) < 2:
        problems.append("not a multi-stage build")
    if not stages:
        return [*problems, "no FROM"]
    final = stages[-1]

    user = final.last("USER")
    if user is None or user.args.split(":")[0].strip() in {"root", "0"}:
        problems.append("the final stage does not switch to a non-root USER")

    health = final.last("HEALTHCHECK")
    if health is None or health.args.upper().startswith("NONE"):
        problems.append("the final stage has no HEALTHCHECK")
    else:
        if "/healthz" not in health.args or "METRICS_PORT" not in health.args:
            problems.append("the HEALTHCHECK does not ask /healthz on METRICS_PORT")
        if re.search(r"\b(curl|wget)\b", health.args):
            problems.append("the HEALTHCHECK uses curl/wget, which slim images do not have")

    entrypoint, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    words: list[str] = []
    for inst in (entrypoint, cmd):
        if inst is not None:
            exec_words = inst.exec_form()
            if exec_words is None:
                problems.append(
                    f"{inst.keyword} is in shell form: SIGTERM would go to /bin/sh, not the daemon"
                )
                exec_words = ["/bin/sh", "-c", inst.args]
            words += exec_words
    if words != ["orchestrator", "run"]:
        problems.append(f"the image runs {words!r}, not ['orchestrator', 'run']")

    for stage in stages:
        for inst in stage.instructions:
            sources: list[str] = []
            if inst.keyword in {"COPY", "ADD"}:
                sources = _copy_sources(inst)
            elif inst.keyword == "RUN":
                sources = _bind_mount_sources(inst)
            for source in sources:
                src = os.path.normpath(source.lstrip("/")) if source.strip("/") else "."
                if any(src == d or src.endswith("/" + d) for d in DANGEROUS) or re.search(
                    r"(^|/)(\.env[^/]*|id_(rsa|dsa|ecdsa|ed25519)[^/]*|[^/]*\.(pem|key|p12|pfx))$", src
                ):
                    problems.append(f"line {inst.line}: {inst.keyword} of {source!r}, a secret file")
                    continue
                is_dir = src == "." or any(ch in src for ch in "*?[") or (context / src).is_dir()
                if not is_dir:
                    continue
                for name in DANGEROUS if src in {".", "*"} else SECRET_FILES:
                    # A glob source copies what its directory holds; test names inside that directory.
                    inside = name if src in {".", "*"} else f"{src.rstrip('*').rstrip('/')}/{name}"
                    if not is_ignored(inside, rules):
                        where = "the final stage" if stage is final else f"stage {stage.name or stage.index}"
                        problems.append(
                            f"line {inst.line}: {inst.keyword} {source!r} in {where} would include {inside!r}"
                            " (.dockerignore does not exclude it)"
                        )

        for inst in stage.all("ENV") + stage.all("ARG"):
            for name, value in _env_pairs(inst):
                # A build argument ends up in the image history even without a default.
                if (name in _SECRET_VARS or _SECRET_NAME.search(name)) and (inst.keyword == "ARG" or value):
                    problems.append(
                        f"line {inst.line}: {inst.keyword} {name} carries a secret into the image"
                    )
    return problems


# --------------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


def test_dockerfile_passes_every_check() -> None:
    problems = dockerfile_problems(DOCKERFILE.read_text(), DOCKERIGNORE.read_text(), ROOT)
    assert problems == []


def test_dockerfile_shape() -> None:
    global_args, stages = parse_dockerfile(DOCKERFILE.read_text())
    assert "3.11" in global_args["PYTHON_IMAGE"] and "slim" in global_args["PYTHON_IMAGE"]
    assert [s.name for s in stages] == ["build", "emulator", "runtime"]
    build, _, runtime = stages
    assert any("pip wheel" in i.args for i in build.all("RUN")), "the first stage builds wheels"
    installs = [i for i in runtime.all("RUN") if "pip install" in i.args]
    assert installs and all("from=build" in i.flags.get("mount", "") for i in installs)
    user = runtime.last("USER")
    assert user is not None and user.args == "10001:10001"
    env = dict(pair for inst in runtime.all("ENV") for pair in _env_pairs(inst))
    assert env["METRICS_PORT"] == "9100"
    # Nothing from the context: the wheel carries the migrations `orchestrator migrate` applies, so the
    # build stage, which makes the wheel, is the one that copies them.
    assert [src for i in runtime.all("COPY") for src in _copy_sources(i)] == []
    assert "migrations/" in [src for i in build.all("COPY") for src in _copy_sources(i)]
    assert not runtime.all("ADD")
    assert "openssh" not in " ".join(i.args for i in runtime.all("RUN")), "paramiko needs no ssh client"


def test_build_inputs_reach_the_context() -> None:
    """Every path the Dockerfile copies exists and survives .dockerignore, or the build would fail."""
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    rules = read_dockerignore(DOCKERIGNORE.read_text())
    sources = [s for st in stages for i in st.all("COPY") + st.all("ADD") for s in _copy_sources(i)]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not is_ignored(source.rstrip("/"), rules), source
    # The package's files (modules and package data) are all in the context; caches are not.
    for path in list((ROOT / "orchestrator").rglob("*")) + list((ROOT / "migrations").rglob("*.sql")):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_file() and "__pycache__" not in rel:
            assert not is_ignored(rel, rules), rel
    assert is_ignored("orchestrator/__pycache__/cli.cpython-311.pyc", rules)
    assert is_ignored("tests/unit/test_deploy.py", rules)


def test_dockerignore_excludes_every_dangerous_name() -> None:
    rules = read_dockerignore(DOCKERIGNORE.read_text())
    for name in DANGEROUS:
        assert is_ignored(name, rules), name
    for name in SECRET_FILES:
        for allowed in ("orchestrator", "migrations", "orchestrator/standins/emulator/data"):
            assert is_ignored(f"{allowed}/{name}", rules), f"{allowed}/{name}"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    rules = read_dockerignore("*\n!orchestrator/\n**/.env\n/migrations/*.tmp\n")
    assert is_ignored("README.md", rules)
    assert not is_ignored("orchestrator/cli.py", rules)
    assert is_ignored("orchestrator/.env", rules) and is_ignored(".env", rules)
    # Anchored at the root: `.env` alone does not reach into directories, unlike .gitignore.
    rooted = read_dockerignore(".env\nkeys\n")
    assert is_ignored(".env", rooted) and not is_ignored("sub/.env", rooted)
    assert is_ignored("keys/id_rsa", rooted), "an excluded directory excludes its contents"
    assert not is_ignored("a/keys/id_rsa", rooted)
    # `*` stops at '/', `**` does not; the last matching rule wins.
    assert not is_ignored("a/b.pem", read_dockerignore("*.pem\n"))
    assert is_ignored("a/b.pem", read_dockerignore("**/*.pem\n"))
    assert not is_ignored("x.pem", read_dockerignore("*.pem\n!x.pem\n"))


def test_the_checks_fail_on_a_careless_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    careless = (
        "FROM python:3.11\n"
        "ARG SUPABASE_SERVICE_ROLE_KEY\n"
        "ENV RUNPOD_API_KEY=rpa_123 \\\n    LOG_LEVEL=INFO\n"
        "COPY . /app\n"
        "COPY id_ed25519 /root/.ssh/\n"
        "RUN --mount=type=bind,target=/src pip install /src\n"
        "CMD orchestrator run\n"
    )
    problems = "\n".join(dockerfile_problems(careless, "", tmp_path))
    for expected in (
        "not a multi-stage build",
        "non-root USER",
        "no HEALTHCHECK",
        "shell form",
        "COPY '.' in the final stage would include '.env'",
        "COPY of 'id_ed25519', a secret file",
        "RUN '.' in the final stage would include 'id_rsa'",
        "ARG SUPABASE_SERVICE_ROLE_KEY carries a secret",
        "ENV RUNPOD_API_KEY carries a secret",
    ):
        assert expected in problems, expected
    assert "LOG_LEVEL" not in problems
    # The same context copy is fine once .dockerignore keeps secrets out, and the rest is fixed.
    fixed = (
        "FROM python:3.11-slim AS build\nCOPY . /src\n"
        "FROM python:3.11-slim\nUSER 10001\n"
        'HEALTHCHECK CMD ["python", "-c", "import os; print(os.environ[\'METRICS_PORT\'], \'/healthz\')"]\n'
        'ENTRYPOINT ["orchestrator"]\nCMD ["run"]\n'
    )
    assert dockerfile_problems(fixed, DOCKERIGNORE.read_text(), tmp_path) == []
    assert any("'.env'" in p for p in dockerfile_problems(fixed, ".git\n", tmp_path))
    root_user = fixed.replace("USER 10001", "USER root:root")
    assert any("non-root" in p for p in dockerfile_problems(root_user, DOCKERIGNORE.read_text(), tmp_path))


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


def _run_healthcheck(port: int) -> int:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    health = stages[-1].last("HEALTHCHECK")
    assert health is not None and health.args.startswith("CMD ")
    words = Instruction("CMD", health.args[4:], {}, health.line).exec_form()
    assert words is not None and words[0] == "python", "exec form with the image's python"
    env = {"PATH": os.environ.get("PATH", ""), "METRICS_PORT": str(port)}
    return subprocess.run([sys.executable, *words[1:]], env=env, capture_output=True, timeout=30).returncode


def test_healthcheck_command_asks_healthz_on_metrics_port() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        _Health.status = 200
        assert _run_healthcheck(port) == 0
        _Health.status = 503  # what /healthz answers when the last tick is too old
        assert _run_healthcheck(port) != 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert _run_healthcheck(port) != 0, "nothing listening is unhealthy"


# --------------------------------------------------------------------------------------------------
# systemd unit


def _unit_settings(text: str) -> dict[str, list[tuple[str, str]]]:
    """section -> [(key, value)], keeping repeated keys (SystemCallFilter= appears twice)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None and os.geteuid() == 0:
        # Debian bookworm ships systemd-analyze in the `systemd` package; no service is started by it here.
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True, timeout=110)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd"],
            env=env,
            check=True,
            capture_output=True,
            timeout=110,
        )
        tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing; install the `systemd` package (apt-get install systemd)")
    return tool


def _unit_copy_with_existing_exec(tmp_path: Path) -> Path:
    """The unit, with ExecStart= pointing at this checkout's `orchestrator` instead of /opt/orchestrator.

    `systemd-analyze verify` refuses a unit whose ExecStart binary does not exist, and the deployed path
    (/opt/orchestrator/.venv/bin/orchestrator) exists only on an installed host. Only that one path is
    changed, so everything else verified is the file as shipped.
    """
    text = UNIT.read_text()
    installed = "ExecStart=/opt/orchestrator/.venv/bin/orchestrator "
    assert installed in text
    here = Path(sys.executable).parent / "orchestrator"
    assert os.access(here, os.X_OK), f"{here} is missing: install the package (make test does)"
    copy = tmp_path / "orchestrator.service"
    copy.write_text(text.replace(installed, f"ExecStart={here} "))
    return copy


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    unit = _unit_copy_with_existing_exec(tmp_path)
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # verify only warns (exit 0) about unknown or misspelled keys; a warning is a failure here.
    assert result.stderr.strip() == "", result.stderr
    security = subprocess.run(
        [tool, "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert security.returncode == 0, "exposure above 2.0:\n" + security.stdout[-3000:]


def test_systemd_analyze_verify_can_fail(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    unit = _unit_copy_with_existing_exec(tmp_path)
    unit.write_text(unit.read_text().replace("Type=exec", "Type=exec\nRestartStepz=5"))
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "RestartStepz" in result.stderr


def test_unit_settings() -> None:
    unit = _unit_settings(UNIT.read_text())
    service = dict(unit["Service"])  # last value wins, as in systemd (except lists, checked below)
    # The env file named on the command line too: no ./.env in the working directory is read besides.
    assert (
        service["ExecStart"]
        == "/opt/orchestrator/.venv/bin/orchestrator --env-file /etc/orchestrator/orchestrator.env run"
    )
    assert service["EnvironmentFile"] == "/etc/orchestrator/orchestrator.env"
    assert service["User"] == "orchestrator" and "DynamicUser" not in service
    assert service["Restart"] == "always" and int(service["RestartSec"]) >= 5
    assert "2" in service["RestartPreventExitStatus"].split(), "invalid configuration is not retried"
    # systemd gives up on a unit that exceeds its start limit, and the pods go on billing unmanaged:
    # 0 turns the limit off, so the unit restarts every RestartSec for as long as the fault lasts.
    start_limits = dict(unit["Unit"])
    assert start_limits["StartLimitIntervalSec"] == "0", "systemd must keep restarting the daemon"
    assert service["KillSignal"] == "SIGTERM"
    # Longer than one tick: the poll interval plus the apply phase's SSH connect and command timeouts.
    d = config.defaults()
    tick = d.orchestrator_poll_sec + d.ssh_connect_timeout_sec + d.ssh_command_timeout_sec
    assert int(service["TimeoutStopSec"]) > tick
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StandardOutput": "journal",
        "StandardError": "journal",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():
        assert service[key] == value, key
    assert not any(k.startswith(("StateDirectory", "ReadWritePaths")) for k in service), "it writes nothing"
    filters = [v for k, v in unit["Service"] if k == "SystemCallFilter"]
    assert filters[0] == "@system-service"


def test_runtime_survives_memory_deny_write_execute() -> None:
    """MemoryDenyWriteExecute=yes, checked: the runtime's libraries work with W^X memory enforced.

    The kernel's PR_SET_MDWE (Linux >= 6.3) refuses the same mappings as systemd's seccomp filter: no
    memory both writable and executable, no memory turned executable later. The child proves the switch
    is on (cffi's ffi.callback, which needs such memory, fails), then does what the daemon does: TLS
    contexts, libpq, ctypes callbacks, and a whole SSH handshake with public-key auth through paramiko.
    """
    script = r"""
import ctypes, socket, ssl, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    print("PR_SET_MDWE unsupported, errno", ctypes.get_errno()); sys.exit(3)
import cffi
try:
    cffi.FFI().callback("int(int)", lambda x: x)
    print("W^X is not enforced"); sys.exit(4)
except MemoryError:
    pass
import apscheduler, graphql, httpx, psycopg, runpod, structlog, supabase, tenacity  # noqa: F401
import paramiko
import orchestrator.cli  # noqa: F401
ssl.create_default_context()
assert psycopg.pq.version() > 0
assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)(41) == 42
host_key, user_key = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
class Server(paramiko.ServerInterface):
    def get_allowed_auths(self, username): return "publickey"
    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL if key == user_key else paramiko.AUTH_FAILED
    def check_channel_request(self, kind, chanid): return paramiko.OPEN_SUCCEEDED
a, b = socket.socketpair()
import threading
server = paramiko.Transport(a); server.add_server_key(host_key)
server.start_server(event=threading.Event(), server=Server())  # negotiates in its own thread
client = paramiko.Transport(b); client.connect()
client.auth_publickey("root", user_key)
channel = client.open_session()
assert client.is_authenticated() and client.get_remote_server_key() == host_key
channel.close(); client.close(); server.close()
print("MDWE-OK")
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0 and "MDWE-OK" in result.stdout, result.stdout + result.stderr[-3000:]


# --------------------------------------------------------------------------------------------------
# deploy/orchestrator.env.example and the configuration


def _env_example_assignments() -> list[tuple[str, str, bool]]:
    """(name, value, active) for every `NAME=value` and `#NAME=value` line."""
    found = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            found.append((match.group(2), match.group(3), match.group(1) == ""))
    return found


def test_env_example_is_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(GEN_ENV), "--check"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_env_example_and_config_agree_both_ways() -> None:
    entries = _env_example_assignments()
    names = [name for name, _, _ in entries]
    assert len(names) == len(set(names)), "a variable appears twice"
    assert names == [v.name for v in config.VARIABLES], "every variable, in the configuration's order"
    # Each value written is the default: read back through the configuration's own parser...
    values = {name: value for name, value, _ in entries}
    parsed = config.load_settings(environ=values, env_file=None)
    assert dict(parsed.values) == dict(config.defaults().values)
    # ...and a default-less variable is an empty line to fill in; the others are commented defaults.
    for var in config.VARIABLES:
        assert (var.default is None) == (values[var.name] == ""), var.name
        assert (var.default is None) == any(n == var.name and active for n, _, active in entries), var.name
    text = ENV_EXAMPLE.read_text().splitlines()
    for var in config.VARIABLES:
        index = next(i for i, line in enumerate(text) if re.match(rf"^#?{var.name}=", line))
        assert text[index - 1].startswith(f"# {var.help}"), f"{var.name}: its meaning precedes it"
    # Group headers appear in the configuration's group order.
    groups = list(dict.fromkeys(v.group for v in config.VARIABLES))
    headers = [line for line in text if line.startswith("# ==== ")]
    assert len(headers) == len(groups)


def test_env_example_syntax_is_common_to_systemd_docker_and_dotenv() -> None:
    for line in ENV_EXAMPLE.read_text().splitlines():
        if re.match(r"^#?[A-Z][A-Z0-9_]*=", line):
            value = line.split("=", 1)[1]
            assert not re.search(r"[\"'\\$`]", value), f"quotes, escapes or expansions differ: {line}"
            assert " #" not in value and value == value.strip(), f"inline comment or padding: {line}"
        else:
            assert line == "" or line.startswith("#"), line


def test_orchestrator_config_reads_the_example_as_the_defaults(tmp_path: Path) -> None:
    """`orchestrator config` given the example with every default uncommented shows the defaults."""
    uncommented = re.sub(r"(?m)^#([A-Z][A-Z0-9_]*=)", r"\1", ENV_EXAMPLE.read_text())
    env_file = tmp_path / "orchestrator.env"
    env_file.write_text(uncommented)
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        # This checkout's package, whatever else the environment has installed.
        env={"PATH": os.environ.get("PATH", ""), "LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0] in config.BY_NAME:
            rows[parts[0]] = (parts[1], parts[2])
    defaults = config.defaults()
    assert set(rows) == set(config.BY_NAME)
    for var in config.VARIABLES:
        if var.name == "LOG_FORMAT":
            continue  # set in the child's environment above, to keep its stderr parseable
        source, shown = rows[var.name]
        expected = defaults.display_value(var.name)
        if var.kind in ("int", "float") and var.default is not None:
            assert float(shown) == float(expected), var.name  # 30 and 30.0 are the same number
        else:
            assert shown == expected, var.name
        assert source == ("default" if var.default is None else ".env"), var.name


# --------------------------------------------------------------------------------------------------
# deploy/docker-compose.yml


def _compose() -> dict:
    try:
        import yaml
    except ImportError:
        # Without PyYAML: the structure by indentation (top-level keys, then the services' names).
        text = COMPOSE.read_text()
        services = re.findall(
            r"(?m)^  ([a-z][a-z0-9_-]*):\s*$", text.split("\nservices:\n", 1)[1].split("\nvolumes:\n")[0]
        )
        return {"services": {name: {} for name in services}, "_unparsed": True}
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_file_is_consistent() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "migrate", "postgrest", "emulator", "keygen", "orchestrator"} <= set(services)
    if compose.get("_unparsed"):
        return
    assert "version" not in compose, "the Compose specification dropped `version`"
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    stage_names = {s.name for s in stages}
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        build = service.get("build")
        if build:
            assert (COMPOSE.parent / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
            assert build.get("target") in stage_names, name
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec["condition"] in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }
            if spec["condition"] == "service_healthy":
                assert (
                    "healthcheck" in services[dep]
                    or services[dep].get("build", {}).get("target") == "runtime"
                )
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.split(":", 1)[1] in services
            assert "ports" not in service, "a service sharing another's network cannot publish ports"
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in (compose.get("volumes") or {}), volume

    daemon = services["orchestrator"]
    assert daemon["command"] == ["run"] and daemon["build"]["target"] == "runtime"
    unknown = set(daemon["environment"]) - set(config.BY_NAME)
    assert not unknown, f"not configuration variables (typos?): {unknown}"
    # The emulator's pods listen on its loopback; the daemon must share its network to reach them.
    assert daemon["network_mode"] == "service:emulator"
    assert daemon["environment"]["RUNPOD_API_BASE_URL"].startswith("http://127.0.0.1:")
    assert services["emulator"]["command"][:2] == ["sim", "serve"]
    assert services["postgrest"]["entrypoint"] == ["python", "-m", "orchestrator.standins.postgrest"]
    assert services["migrate"]["command"] == ["migrate"]
    # Stop grace longer than one tick, like the systemd unit's TimeoutStopSec.
    grace = daemon["stop_grace_period"]
    assert grace.endswith("m") and int(grace[:-1]) * 60 >= 120
    # The keygen script is valid Python.
    compile(services["keygen"]["command"][0], "keygen", "exec")


# --------------------------------------------------------------------------------------------------
# docs/operations.md


def _runnable_section() -> str:
    text = OPERATIONS.read_text()
    assert text.count("<!-- runnable:start -->") == 1 and text.count("<!-- runnable:end -->") == 1
    section = text.split("<!-- runnable:start -->", 1)[1].split("<!-- runnable:end -->", 1)[0]
    return section


def test_operations_doc_structure() -> None:
    text = OPERATIONS.read_text()
    for heading in (
        "## Installing",
        "## First run: `orchestrator plan`",
        "## Supabase set-up",
        "### Dashboard views",
        "## Tuning the scaling knobs",
        "## Runbook",
        "## Reading the logs",
        "## Log events",
        "## Upgrading",
    ):
        assert f"\n{heading}\n" in text, heading
    log_events = text.split("\n## Log events\n", 1)[1].split("\n## ", 1)[0]
    assert "<!-- events-table -->" in log_events
    for view in ("orchestrator_fleet_status", "orchestrator_worker_health", "orchestrator_queue"):
        assert f"`{view}`" in text
    for failure in (
        "GPU type not found",
        "Storage volume missing",
        "SSH failures",
        "Initialization timeouts",
        "Spawning paused after consecutive failures",
        "Orphan pods reaped",
        "Lease lost",
    ):
        assert f"**{failure}" in text, failure


def test_runnable_section_is_valid_shell() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", _runnable_section(), re.S)
    assert len(blocks) >= 5
    script = "\n".join(blocks)
    result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    for step in (
        "orchestrator sim serve --port",
        "orchestrator migrate",
        "orchestrator plan",
        "orchestrator run",
        "orchestrator status",
        "trap cleanup EXIT",
    ):
        assert step in script, step
    assert re.search(r"(?m)^orchestrator sim serve .*--speed 20 .*&$", script)


def test_tuning_table_matches_the_defaults() -> None:
    text = OPERATIONS.read_text()
    table = text.split("\n## Tuning the scaling knobs\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) >= 12
    seen = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        numbers = re.findall(r"\d+(?:\.\d+)?", cells[1].split("(")[0])
        assert len(names) == len(numbers), row
        for name, number in zip(names, numbers, strict=True):
            assert name in config.BY_NAME, name
            assert float(number) == float(config.BY_NAME[name].default), f"{name}: doc {number}"
            seen.add(name)
    for name in (
        "MIN_ACTIVE_GPUS",
        "SPAWNING_TIMEOUT_SEC",
        "HEARTBEAT_TIMEOUT_SEC",
        "MAX_CONSECUTIVE_FAILURES",
        "MAX_HOURLY_SPEND",
        "GPU_IDLE_TIMEOUT_SEC",
    ):
        assert name in seen, name


def _claimable_view_sql() -> str:
    text = OPERATIONS.read_text()
    section = text.split("### Your own queue rules", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


def _scalar(conn: psycopg.Connection, query: str, params: tuple[object, ...] = ()) -> object:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def test_claimable_view_example_runs_on_postgres() -> None:
    """The documented CREATE OR REPLACE VIEW applies over the migrations and drives the snapshot."""
    from orchestrator.adapters.db.migrate import apply_migrations, discover
    from orchestrator.standins.pg import TempPostgres

    with TempPostgres() as pg:
        url = pg.url()
        apply_migrations(url)
        with psycopg.connect(url, autocommit=True) as conn:
            # The production columns the example relies on (project_id, dependant_on uuid[]) come with
            # the migrations, which give a database built from them alone the app's shape.
            conn.execute(_claimable_view_sql())
            p1, p2 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
            done = _scalar(
                conn, "insert into tasks (task_type, status) values ('t', 'Complete') returning id"
            )
            waiting = _scalar(
                conn, "insert into tasks (task_type, status) values ('t', 'Queued') returning id"
            )
            conn.execute(
                "insert into tasks (task_type, status, project_id) values ('t', 'In Progress', %s), ('t', 'In Progress', %s)",
                (p1, p1),
            )
            queued = (
                "insert into tasks (task_type, status, project_id, dependant_on) "
                "values ('t', 'Queued', %s, array_remove(array[%s::uuid], null)) returning id"
            )
            blocked_by_limit = _scalar(conn, queued, (p1, None))
            blocked_by_dep = _scalar(conn, queued, (p2, waiting))
            ready = _scalar(conn, queued, (p2, done))
            claimable = {row[0] for row in conn.execute("select id from orchestrator_claimable_tasks")}
            assert claimable == {waiting, ready}
            assert blocked_by_limit not in claimable and blocked_by_dep not in claimable
            snapshot = _scalar(conn, "select orch_snapshot()")
            assert isinstance(snapshot, dict) and snapshot["queue"]["claimable"] == 2
            # Re-running a migration (as an upgrade or `supabase db push` would) keeps the operator's view.
            for migration in discover():
                conn.execute(migration.read())
            claimable_after = {row[0] for row in conn.execute("select id from orchestrator_claimable_tasks")}
            assert claimable_after == {waiting, ready}
