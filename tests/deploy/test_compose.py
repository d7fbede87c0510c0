"""docker-compose.yml and the Dockerfile, checked structurally (no Docker engine needed).

Keeps the production stack honest against the code: services, pinned images, ports, a
start order without cycles, environment variables the app really reads, commands the
`billing` CLI really has, and exactly the project's search attributes.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from argparse import Namespace
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from temporalio.common import SearchAttributeIndexedValueType as IndexType

import starter.webhook_sink as webhook_sink
from config.settings import Settings
from starter.cli import cli
from workflows import search_attributes

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

TEMPORAL_SERVICES = {"temporal-db", "temporal-schema", "temporal", "temporal-setup", "temporal-ui"}
APP_SERVICES = {"migrate", "worker", "webhook-sink", "codec-server"}
EXPECTED_SERVICES = TEMPORAL_SERVICES | APP_SERVICES | {"billing-db"}
ONE_SHOTS = {"temporal-schema", "temporal-setup", "migrate"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# Every app service needs these; the defaults (embedded dev server, SQLite) are for one machine.
REQUIRED_ENV = {
    "migrate": {"BILLING_DATABASE_URL"},
    "worker": {
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "BILLING_TASK_QUEUE",
        "BILLING_DATABASE_URL",
    },
    "webhook-sink": {"BILLING_WEBHOOK_SECRET"},
    "codec-server": {
        "TEMPORAL_NAMESPACE",
        "BILLING_PAYLOAD_KEYS",
        "BILLING_CODEC_SERVER_TOKEN",
        "BILLING_CODEC_SERVER_ORIGINS",
    },
}
# Secrets only the services that use them get (the migration never sees payload keys).
WORKER_ONLY_ENV = {"BILLING_METRICS_PORT", "BILLING_PAYLOAD_KEYS"}
EXTRA_APP_ENV = {"BILLING_WEBHOOK_SECRET"}  # read by starter.dev, services.catalog, the sink
CLI_TYPES = {
    IndexType.KEYWORD: "Keyword",
    IndexType.TEXT: "Text",
    IndexType.INT: "Int",
    IndexType.DOUBLE: "Double",
    IndexType.BOOL: "Bool",
    IndexType.DATETIME: "Datetime",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with the environment unset: the default."""
    return _VARIABLE.sub(lambda m: m.group(2) or "", value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())  # safe_load resolves `<<:` merges
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short form: only "started", no readiness
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def as_argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def dockerfile_instruction(name: str) -> list[str]:
    lines = [
        line.split(None, 1)[1]
        for line in DOCKERFILE.read_text().splitlines()
        if line.split(None, 1)[:1] == [name]
    ]
    return lines


_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}")
_VERSION = re.compile(r"\d+\.\d+")


def unpinned(image: str) -> str | None:
    """Why ``image`` is not a pinned reference, or None when it is.

    Pinned: a ``@sha256:`` digest, or a tag carrying a version (``16.4``, ``3.11.11-slim``),
    never ``latest`` and never a bare name (which means ``latest``).
    """
    name, at, digest = image.partition("@")
    if at:
        return None if _DIGEST.fullmatch(at + digest) else "its digest is not sha256:<64 hex>"
    repository, colon, tag = name.rpartition(":")
    if not colon or not repository or "/" in tag:
        return "it has no tag (that means latest)"
    if tag == "latest" or not _VERSION.search(tag):
        return f"its tag {tag!r} names no version"
    return None


def installed_sources() -> set[str]:
    """What ``pip install .`` installs: the packages and modules setuptools is given."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {name.rstrip("*") for name in setuptools["packages"]["find"]["include"]}
    return packages | {f"{module}.py" for module in setuptools["py-modules"]}


def app_image() -> str:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return f"billing-periods:{version}"


def is_app(service: Mapping[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("billing-periods:")


def test_expected_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == EXPECTED_SERVICES
    assert {name for name, s in services.items() if is_app(s)} == APP_SERVICES


@pytest.mark.parametrize("image_kind", ["compose", "dockerfile"])
def test_every_image_is_pinned(image_kind: str, services: dict[str, dict[str, Any]]) -> None:
    if image_kind == "compose":
        images = {name: interpolate(s["image"]) for name, s in services.items()}
    else:
        images = {f"FROM {base}": base.split()[0] for base in dockerfile_instruction("FROM")}
        assert images, "the Dockerfile has no FROM"
    for name, image in images.items():
        assert unpinned(image) is None, f"{name}: {image} is not pinned: {unpinned(image)}"
    assert dockerfile_instruction("FROM")[0].startswith("python:3.11.")


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("postgres:16.4", True),
        ("temporalio/admin-tools:1.29.1-tctl-1.18.4-cli-1.5.0", True),
        ("registry.example:5000/team/app:2.3.1", True),
        ("postgres@sha256:" + "a" * 64, True),
        ("postgres:16.4@sha256:" + "0f" * 32, True),
        ("postgres", False),
        ("postgres:latest", False),
        ("postgres:16", False),
        ("registry.example:5000/team/app", False),
        ("postgres@sha256:abc", False),
        ("postgres@16.4", False),
    ],
)
def test_pin_check_tells_pinned_from_floating(image: str, pinned: bool) -> None:
    assert (unpinned(image) is None) == pinned, unpinned(image)


def test_dockerfile_copies_every_installed_package() -> None:
    copied = {
        source.rstrip("/")
        for line in dockerfile_instruction("COPY")
        for source in line.split()[:-1]
    }
    missing = installed_sources() - copied
    assert not missing, f"`pip install .` in the image lacks {sorted(missing)}"


def test_app_services_share_the_built_image(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        assert services[name]["image"] == app_image(), name
        assert services[name].get("build") == ".", f"{name} must build, not pull, the app image"


def test_dockerfile_runs_billing_as_non_root() -> None:
    (user,) = dockerfile_instruction("USER")
    assert user.strip() not in {"root", "0"}
    (entrypoint,) = dockerfile_instruction("ENTRYPOINT")
    assert yaml.safe_load(entrypoint) == ["billing"]
    assert any("pip install ." in run for run in dockerfile_instruction("RUN"))


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", "tests"} <= ignored
    # ... but not what `pip install .` needs.
    needed = {"pyproject.toml", "README.md", *installed_sources()}
    assert not needed & ignored


def test_worker_scales(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker, "a host port would collide with --scale worker=N"
    assert worker.get("deploy", {}).get("replicas", 1) >= 1
    assert not any("container_name" in s for s in services.values()), "fixed names prevent -p"


def host_ports(service: Mapping[str, Any]) -> list[int]:
    ports = []
    for entry in service.get("ports", []):
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) in (2, 3), f"{entry}: publish host:container explicitly"
        ports.append(int(parts[-2]))
    return ports


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    published = {name: host_ports(s) for name, s in services.items() if host_ports(s)}
    assert published == {
        "temporal": [7233],
        "temporal-ui": [8080],
        "webhook-sink": [8765],
        "codec-server": [8081],
    }
    # The databases are reachable only inside the compose network.
    assert "ports" not in services["temporal-db"] and "ports" not in services["billing-db"]
    sink_args = as_argv(services["webhook-sink"]["command"])
    assert sink_args[sink_args.index("--port") + 1] == "8765"
    assert sink_args[sink_args.index("--host") + 1] == "0.0.0.0"


def start_order(services: dict[str, dict[str, Any]]) -> list[str]:
    """A topological order of depends_on; fails on a cycle or an unknown service."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name in services, f"{path[-1]} depends on unknown service {name}"
        if state.get(name) == "done":
            return
        assert state.get(name) != "visiting", f"dependency cycle: {' -> '.join((*path, name))}"
        state[name] = "visiting"
        for dep in depends_on(services[name]):
            visit(dep, (*path, name))
        state[name] = "done"
        order.append(name)

    for name in services:
        visit(name, ("<root>",))
    return order


def ancestors(services: dict[str, dict[str, Any]], name: str) -> Iterator[tuple[str, str]]:
    for dep, condition in depends_on(services[name]).items():
        yield dep, condition
        yield from ancestors(services, dep)


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    order = start_order(services)
    for name, service in services.items():
        for dep, condition in depends_on(service).items():
            assert condition in CONDITIONS, f"{name} -> {dep}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health check"
            if condition == "service_completed_successfully":
                assert dep in ONE_SHOTS, f"{name} waits for {dep} to exit, but it runs forever"
            if dep in ONE_SHOTS:
                assert condition == "service_completed_successfully", f"{name} -> {dep}"
            if dep in {"temporal-db", "billing-db", "temporal"}:
                assert condition == "service_healthy", f"{name} -> {dep}: wait for readiness"
    worker_deps = dict(ancestors(services, "worker"))
    assert worker_deps["migrate"] == "service_completed_successfully"
    assert worker_deps["temporal-setup"] == "service_completed_successfully"
    assert {"temporal", "temporal-schema", "billing-db"} <= set(worker_deps)
    assert order.index("migrate") < order.index("worker")
    assert order.index("temporal-setup") < order.index("worker")
    assert order.index("temporal-schema") < order.index("temporal")
    for name in ONE_SHOTS:
        assert services[name].get("restart") == "no", f"{name} is a one-shot"
    for name in EXPECTED_SERVICES - ONE_SHOTS:
        assert services[name].get("restart") == "unless-stopped", name


def test_start_order_check_catches_a_cycle(services: dict[str, dict[str, Any]]) -> None:
    broken = {name: dict(s) for name, s in services.items()}
    broken["migrate"] = {**broken["migrate"], "depends_on": {"worker": {}}}
    with pytest.raises(AssertionError, match="cycle"):
        start_order(broken)


def app_env_names() -> set[str]:
    names = {str(field.alias) for field in Settings.model_fields.values() if field.alias}
    assert "TEMPORAL_ADDRESS" in names and "BILLING_DATABASE_URL" in names
    return names | EXTRA_APP_ENV


def test_app_environment_is_what_the_app_reads(services: dict[str, dict[str, Any]]) -> None:
    known = app_env_names()
    for name in APP_SERVICES:
        env = environment(services[name])
        assert set(env) <= known, f"{name}: the app never reads {sorted(set(env) - known)}"
        assert REQUIRED_ENV[name] <= set(env), f"{name} lacks {REQUIRED_ENV[name] - set(env)}"
        Settings(**env)  # type: ignore[arg-type]  # the values parse as settings


def test_app_environment_points_at_compose_services(services: dict[str, dict[str, Any]]) -> None:
    worker = Settings(**environment(services["worker"]))  # type: ignore[arg-type]
    assert worker.temporal_host == "temporal" and worker.temporal_port == 7233
    assert worker.metrics_port is not None
    assert str(worker.metrics_port) in [str(p) for p in services["worker"].get("expose", [])]
    for name in ("migrate", "worker"):
        url = environment(services[name])["BILLING_DATABASE_URL"]
        match = re.fullmatch(r"postgresql\+psycopg://(\w+):[^@]+@([\w-]+):5432/(\w+)", url)
        assert match, f"{name}: {url}"
        user, host, database = match.groups()
        db_env = environment(services[host])
        assert (user, database) == (db_env["POSTGRES_USER"], db_env["POSTGRES_DB"])
    assert environment(services["migrate"]) == {
        k: v for k, v in environment(services["worker"]).items() if k not in WORKER_ONLY_ENV
    }, "migrate and worker must agree on the database and Temporal settings"
    queue = environment(services["worker"])["BILLING_TASK_QUEUE"]
    assert queue == Settings.model_fields["task_queue"].default, "the CLI's default queue"


def resolve_billing_command(argv: list[str]) -> click.Command:
    """Resolve and parse ``billing ARGV`` as the CLI would, without invoking it."""
    command: click.Command = cli
    ctx = click.Context(cli, info_name="billing")
    args = list(argv)
    while isinstance(command, click.Group):
        assert args, f"billing {' '.join(argv)}: a group needs a sub-command"
        name = args.pop(0)
        sub = command.get_command(ctx, name)
        assert sub is not None, f"`billing {' '.join(argv)}`: no command {name!r}"
        command = sub
        ctx = click.Context(command, info_name=name, parent=ctx)
    command.make_context(ctx.info_name, args, parent=ctx.parent)  # raises on bad options
    return command


def test_app_commands_exist(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("migrate", "worker"):
        service = services[name]
        assert "entrypoint" not in service, f"{name} uses the image's `billing` entrypoint"
        resolve_billing_command(as_argv(service["command"]))
    assert resolve_billing_command(["db", "upgrade"]).name == "upgrade"
    assert as_argv(services["migrate"]["command"]) == ["db", "upgrade"]
    assert as_argv(services["worker"]["command"])[0] == "worker"

    sink = services["webhook-sink"]
    assert as_argv(sink["entrypoint"]) == ["python", "-m", "starter.webhook_sink"]
    parsed: list[Namespace] = []

    async def fake_serve(args: Namespace) -> None:
        parsed.append(args)

    monkeypatch.setattr(webhook_sink, "_serve", fake_serve)
    monkeypatch.setenv("BILLING_WEBHOOK_SECRET", "whsec_from_compose")
    assert webhook_sink.main(as_argv(sink["command"])) == 0
    (args,) = parsed
    assert args.secret == "whsec_from_compose" and args.record == Path("/data/webhooks.jsonl")
    assert any(v.endswith(":/data") for v in sink["volumes"]), "the record file persists"


@pytest.mark.parametrize("argv", [["wroker"], ["db", "downgrade"], ["worker", "--processes=0"]])
def test_command_check_rejects_unknown_commands(argv: list[str]) -> None:
    with pytest.raises((AssertionError, click.UsageError, click.BadParameter)):
        resolve_billing_command(argv)


def registered_search_attributes(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    script = "\n".join(as_argv(services["temporal-setup"]["command"]))
    registered: dict[str, str] = {}
    for line in script.splitlines():
        if "search-attribute create" not in line:
            continue
        words = shlex.split(line.split("||")[0])
        name, kind = words[words.index("--name") + 1], words[words.index("--type") + 1]
        assert name not in registered, f"{name} registered twice"
        registered[name] = kind
    return registered


def test_search_attributes_are_exactly_the_projects(services: dict[str, dict[str, Any]]) -> None:
    expected = {key.name: CLI_TYPES[key.indexed_value_type] for key in search_attributes.ALL}
    assert registered_search_attributes(services) == expected
    setup = services["temporal-setup"]
    assert setup["image"].startswith("temporalio/admin-tools:")
    assert environment(setup)["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_temporal_follows_the_postgres_layout(services: dict[str, dict[str, Any]]) -> None:
    server = services["temporal"]
    assert server["image"].startswith("temporalio/server:")
    env = environment(server)
    assert env["DB"] == "postgres12" and env["POSTGRES_SEEDS"] == "temporal-db"
    schema_script = "\n".join(as_argv(services["temporal-schema"]["command"]))
    for database in (env["DBNAME"], env["VISIBILITY_DBNAME"]):
        assert f"--db {database} setup-schema" in schema_script
        assert f"--db {database} update-schema" in schema_script
    versions = {
        s["image"].split(":")[1].split("-")[0]
        for s in services.values()
        if s["image"].startswith(("temporalio/server:", "temporalio/admin-tools:"))
    }
    assert len(versions) == 1, f"server and admin-tools versions differ: {versions}"
    assert environment(services["temporal-ui"])["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_payload_keys_reach_only_the_services_that_use_them(
    services: dict[str, dict[str, Any]],
) -> None:
    with_keys = {name for name, s in services.items() if "BILLING_PAYLOAD_KEYS" in environment(s)}
    assert with_keys == {"worker", "codec-server"}
    # Unset by the operator: payloads in clear, and the settings still parse.
    assert Settings(**environment(services["worker"])).payload_keys is None  # type: ignore[arg-type]


def test_the_codec_server_is_reachable_by_the_ui(services: dict[str, dict[str, Any]]) -> None:
    codec = services["codec-server"]
    assert codec.get("profiles") == ["codec"], "started on purpose, once the keys are set"
    args = as_argv(codec["command"])
    assert resolve_billing_command(args).name == "codec-server"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    port = int(args[args.index("--port") + 1])
    assert host_ports(codec) == [port]
    assert f"127.0.0.1:{port}/health" in " ".join(codec["healthcheck"]["test"])
    origin = environment(codec)["BILLING_CODEC_SERVER_ORIGINS"]
    assert origin == f"http://localhost:{host_ports(services['temporal-ui'])[0]}"
