"""The container path (Dockerfile, docker-compose.yml, infra/rabbitmq/) agrees with what `make run`
starts (infra/system.py) and what the code reads, so the two ways of running cannot drift apart.
Nothing here needs Docker: the files are parsed and held against the code."""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib
import importlib.metadata as metadata
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from infra import system
from services.common.consuming import DEAD_LETTER_EXCHANGE, dead_letter_queue_name, retry_queue_name
from services.common.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
SCALED = ("approval", "notification", "intake")  # the services run with replicas
# Settings that say where something is: the containers' values differ from `make run`'s on purpose.
LOCATIONS = {
    "YIWANG_RABBIT_HOST",
    "YIWANG_RABBIT_USER",
    "YIWANG_RABBIT_PASSWORD",
    "YIWANG_RABBIT_VHOST",
    "YIWANG_MONGO_HOST",
    "YIWANG_HTTP_HOST",
    "YIWANG_SMS_URL",
    "YIWANG_SMTP_HOST",
}
ENVIRON_READ = re.compile(r"""environ(?:\.get\(|\[|\.setdefault\()\s*["']([A-Z0-9_]+)["']""")
INTERPOLATION = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+)(:?-(?P<default>[^}]*))?\}$")


# --- parsing --------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def services() -> dict[str, Any]:
    return compose()["services"]


def value(raw: Any) -> str:
    """A compose value as it is when nothing is set in the shell: `${X:-d}` is `d`."""
    text = str(raw)
    match = INTERPOLATION.match(text)
    return (match.group("default") or "") if match else text


def environment(name: str) -> dict[str, str]:
    return {key: value(raw) for key, raw in (services()[name].get("environment") or {}).items()}


@cache
def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """{stage name: [(INSTRUCTION, arguments)]}; continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    stages: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for line in filter(None, (raw.strip() for raw in joined.splitlines())):
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            current = arguments.split(" AS ")[-1].strip() if " AS " in arguments else arguments
            stages[current] = []
        stages[current].append((instruction, arguments.strip()))
    return stages


def runtime_stage() -> list[tuple[str, str]]:
    return list(dockerfile_stages().values())[-1]


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [arguments for instruction, arguments in stage if instruction == name]


def exec_form(arguments: str) -> list[str]:
    return json.loads(arguments)


# --- what `make run` starts -----------------------------------------------------------------------


def local_provider_commands(tmp_path: Path) -> dict[str, list[str]]:
    running = system.System(base_url="", log_dir=tmp_path)
    return system._local_providers({}, running, tmp_path)


def yiwang_services() -> list[str]:
    """Compose services that run Yiwang code (built from the Dockerfile)."""
    return [name for name, spec in services().items() if "build" in spec]


def test_every_process_of_make_run_has_a_compose_service_with_the_same_target_and_config():
    for name, target in system.PROCESSES.items():
        assert name in services(), f"{name} (infra/system.py PROCESSES) has no service in docker-compose.yml"
        assert services()[name]["command"] == ["nameko", "run", "--config", "config.yml", target], name
    nameko_services = {name for name, spec in services().items() if spec.get("command", [""])[0] == "nameko"}
    assert nameko_services == set(system.PROCESSES), "compose runs nameko services that make run does not"


def test_the_local_providers_run_the_same_programs(tmp_path: Path):
    commands = local_provider_commands(tmp_path)
    assert set(commands) == {"sms-provider", "mail-server"}
    for name, local in commands.items():
        assert name in services(), f"{name} (started by make run) has no service in docker-compose.yml"
        contained = services()[name]["command"]
        assert Path(local[0]).name.startswith("python") and contained[0] == "python"
        assert contained[1:3] == local[1:3], f"{name}: another module than make run's"
        flags = {part for part in local if part.startswith("-")}
        assert flags <= set(contained), f"{name}: make run passes {flags - set(contained)}, compose does not"
        if "-c" in local:  # aiosmtpd's handler class
            assert contained[contained.index("-c") + 1] == local[local.index("-c") + 1]


def test_notification_is_pointed_at_the_providers_of_the_stack():
    env = environment("notification")
    sms = services()["sms-provider"]["command"]
    assert env["YIWANG_SMS_URL"] == f"http://sms-provider:{sms[sms.index('--port') + 1]}"
    mail = services()["mail-server"]["command"]
    assert env["YIWANG_SMTP_HOST"] == "mail-server"
    assert mail[mail.index("-l") + 1] == f"0.0.0.0:{env['YIWANG_SMTP_PORT']}"
    depends = services()["notification"]["depends_on"]
    assert {"sms-provider", "mail-server"} <= set(depends)


def test_every_process_gets_the_variables_infra_system_sets():
    for name in system.PROCESSES:
        env = environment(name)
        assert env.get("YIWANG_SERVICE") == name, f"{name}: YIWANG_SERVICE (the 'service' field of its logs)"
        assert env.get("YIWANG_METRICS_PORT", "").isdigit(), f"{name}: YIWANG_METRICS_PORT"
        assert env.get("YIWANG_METRICS_HOST") == "0.0.0.0", f"{name}: metrics reachable from the network"


# --- configuration ---------------------------------------------------------------------------------


@cache
def config_defaults() -> dict[str, str]:
    text = (ROOT / "config.yml").read_text(encoding="utf-8")
    return dict(re.findall(r"\$\{(YIWANG_[A-Z0-9_]+):([^}]*)\}", text))


@cache
def variables_the_code_reads() -> set[str]:
    names = set(config_defaults())
    for folder in ("services", "gateway", "contracts", "infra"):
        for path in (ROOT / folder).rglob("*.py"):
            if "tests" not in path.parts:
                names |= set(ENVIRON_READ.findall(path.read_text(encoding="utf-8")))
    return names


def test_every_variable_compose_sets_is_one_the_code_reads():
    known = variables_the_code_reads() | {"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"}
    for name in yiwang_services():
        unknown = {key for key in environment(name) if key.startswith(("YIWANG_", "OTEL_"))} - known
        assert not unknown, f"{name}: nothing reads {sorted(unknown)} (a typo?)"


# Read by the code but deliberately not passed to containers: the span files of the local test
# runs, the state directory whose secrets compose passes as variables instead, and the local
# document server's Unix socket (containers reach MongoDB over the network).
NOT_FOR_CONTAINERS = {"YIWANG_SPAN_DIR", "YIWANG_STATE_DIR", "YIWANG_MONGO_SOCKET"}


def test_every_setting_the_services_read_can_be_set_in_compose():
    # The README: every variable of the configuration table can be set (in the shell or .env).
    read = set(config_defaults())
    for folder in ("services", "gateway", "contracts"):
        for path in (ROOT / folder).rglob("*.py"):
            if "tests" not in path.parts:
                read |= {n for n in ENVIRON_READ.findall(path.read_text(encoding="utf-8")) if n.startswith("YIWANG_")}
    for name in system.PROCESSES:
        missing = read - set(environment(name)) - NOT_FOR_CONTAINERS
        assert not missing, f"{name}: compose does not pass on {sorted(missing)}"


def test_the_infrastructure_addresses_point_at_services_of_the_stack():
    for name in system.PROCESSES:
        env = environment(name)
        assert env["YIWANG_RABBIT_HOST"] in services() and env["YIWANG_MONGO_HOST"] in services()
        assert env["YIWANG_AMQP_PORT"] == "5672" and env["YIWANG_MONGO_PORT"] == "27017"
        endpoint = re.match(r"http://([^:/]+):(\d+)$", env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert endpoint and endpoint.group(1) in services(), "traces go to a service of the stack"
        assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert services()["mongo"]["image"].startswith("mongo:7")
    assert str(services()["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"]).lower() == "true"


def test_defaults_agree_with_config_yml():
    """A setting compose passes on has the default `make run` has, except where things are."""
    for name in system.PROCESSES:
        env = environment(name)
        for key, default in config_defaults().items():
            if key in env and key not in LOCATIONS:
                assert env[key] == default, f"{name}: {key} is {env[key]!r} in compose, {default!r} in config.yml"


def test_all_yiwang_processes_share_one_environment():
    """`make run` gives every process the same environment; so does compose (but YIWANG_SERVICE)."""
    shared = [{k: v for k, v in environment(name).items() if k != "YIWANG_SERVICE"} for name in system.PROCESSES]
    assert all(env == shared[0] for env in shared)


# --- ports, health, order, replicas ----------------------------------------------------------------


def published(name: str) -> dict[int, str]:
    """{container port: host port (default)} of a service."""
    ports = {}
    for entry in services()[name].get("ports", []):
        host, _, inside = re.sub(r"\$\{[A-Z0-9_]+:-(\d+)\}", r"\1", str(entry)).rpartition(":")
        ports[int(inside)] = host.rpartition(":")[2]
    return ports


def test_the_gateway_is_published_on_8000():
    assert published("gateway") == {8000: "8000"}
    assert environment("gateway")["YIWANG_HTTP_PORT"] == "8000"
    assert environment("gateway")["YIWANG_HTTP_HOST"] == "0.0.0.0"
    assert published("jaeger") == {16686: "16686"} and published("rabbitmq") == {15672: "15672"}


def test_only_the_gateway_is_published_beyond_the_loopback():
    # The trace viewer, broker management and the SMS stand-in have no login of their own.
    for name, service in services().items():
        for entry in service.get("ports", []):
            assert name == "gateway" or str(entry).startswith("127.0.0.1:"), (name, entry)


def test_every_yiwang_container_has_a_health_check():
    image_check = instructions(runtime_stage(), "HEALTHCHECK")
    assert len(image_check) == 1 and "YIWANG_METRICS_PORT" in image_check[0]
    probe_commands = [exec_form(image_check[0].split(" CMD ", 1)[1])]
    for name in yiwang_services():
        if "healthcheck" in services()[name]:
            assert services()[name]["healthcheck"]["test"][0] == "CMD"
            probe_commands.append(services()[name]["healthcheck"]["test"][1:])
            continue
        # The image's check probes the metrics endpoint, which the process serves only with Metrics.
        assert name in system.PROCESSES, f"{name}: no health check (the image's needs a nameko service)"
        module, _, attribute = system.PROCESSES[name].partition(":")
        service_class = getattr(importlib.import_module(module), attribute)
        assert any(isinstance(v, Metrics) for v in vars(service_class).values()), f"{name} serves no metrics"
    readiness = " ".join(services()["gateway"]["healthcheck"]["test"])
    assert "/readyz" in readiness
    for command in probe_commands:  # the probes are Python one-liners: they must at least compile
        assert command[:2] == ["python", "-c"], command
        compile(command[2], "<health check>", "exec")


def test_start_order_waits_for_health():
    for name in system.PROCESSES:
        depends = services()[name]["depends_on"]
        for infrastructure in ("rabbitmq", "mongo"):
            assert depends[infrastructure]["condition"] == "service_healthy", f"{name} -> {infrastructure}"
        assert "healthcheck" in services()[infrastructure]
    gateway = services()["gateway"]["depends_on"]
    for name in set(system.PROCESSES) - {"gateway"}:
        assert gateway.get(name, {}).get("condition") == "service_healthy", f"the gateway waits for {name}"


@pytest.mark.parametrize("name", SCALED)
def test_the_services_that_scale_have_replicas(name: str):
    assert services()[name]["deploy"]["replicas"] >= 2
    assert "ports" not in services()[name] and "container_name" not in services()[name]


# --- RabbitMQ --------------------------------------------------------------------------------------


def definitions() -> dict[str, Any]:
    return json.loads((ROOT / "infra/rabbitmq/definitions.json").read_text(encoding="utf-8"))


def test_rabbitmq_loads_the_definitions_from_infra():
    volumes = services()["rabbitmq"]["volumes"]
    assert "./infra/rabbitmq/definitions.json:/etc/rabbitmq/definitions.json:ro" in volumes
    assert "./infra/rabbitmq/rabbitmq.conf:/etc/rabbitmq/rabbitmq.conf:ro" in volumes
    conf = (ROOT / "infra/rabbitmq/rabbitmq.conf").read_text(encoding="utf-8")
    assert re.search(r"^definitions\.local\.path = /etc/rabbitmq/definitions\.json$", conf, re.M)
    assert "management" in services()["rabbitmq"]["image"]


def test_the_services_user_and_vhost_are_defined_with_the_password_they_use():
    env = environment("intake")
    defs = definitions()
    user = next(u for u in defs["users"] if u["name"] == env["YIWANG_RABBIT_USER"])
    salted = base64.b64decode(user["password_hash"])
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert hashlib.sha256(salted[:4] + env["YIWANG_RABBIT_PASSWORD"].encode()).digest() == salted[4:]
    assert {"name": env["YIWANG_RABBIT_VHOST"]} in defs["vhosts"]
    assert any(p["user"] == user["name"] and p["vhost"] == env["YIWANG_RABBIT_VHOST"] for p in defs["permissions"])


def test_the_dead_letter_exchange_and_policy_match_the_code():
    defs, vhost = definitions(), environment("intake")["YIWANG_RABBIT_VHOST"]
    exchange = next(e for e in defs["exchanges"] if e["name"] == DEAD_LETTER_EXCHANGE)
    # Declared the same way as services/common/consuming.py does, or the services' declaration fails.
    assert (exchange["vhost"], exchange["type"], exchange["durable"], exchange["auto_delete"]) == (
        vhost,
        "direct",
        True,
        False,
    )
    handler_queue = "evt-intake-case.submitted.v1--approval.on_case_submitted"
    (policy,) = defs["policies"]
    for queue in (handler_queue, retry_queue_name(handler_queue, 1), dead_letter_queue_name(handler_queue)):
        assert re.match(policy["pattern"], queue), queue
    assert not re.match(policy["pattern"], "rpc-intake")


# --- the Dockerfile ---------------------------------------------------------------------------------


def test_the_runtime_stage_runs_as_a_fixed_non_root_user_from_a_locked_virtualenv():
    stages = dockerfile_stages()
    assert len(stages) >= 3, "a builder stage and a runtime stage"
    (user,) = instructions(runtime_stage(), "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000
    builder = " ".join(args for _, args in list(stages.values())[-2])
    assert re.search(r"pip install .*-(c|r) \S*requirements\.lock", builder), "installs what requirements.lock pins"
    assert any(c.startswith("--from=") for c in instructions(runtime_stage(), "COPY")), "the venv from the builder"
    assert not any("pip install" in args for args in instructions(runtime_stage(), "RUN")), "no build in runtime"
    assert exec_form(instructions(runtime_stage(), "CMD")[0])[:2] == ["nameko", "run"]


def reachable_modules() -> set[Path]:
    """Every first-party file the containers' programs import, transitively."""
    roots = [target.partition(":")[0] for target in system.PROCESSES.values()]
    roots += ["infra.sms_provider", "infra.seed", "infra.deadletters", "infra.topology"]
    first_party = {"contracts", "services", "gateway", "infra"}
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        base = ROOT / module.replace(".", "/")
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if not path.exists() or path in seen:
            continue
        seen.add(path)
        parts = module.split(".")
        for package in range(1, len(parts)):  # a module's packages run their __init__ too
            todo.append(".".join(parts[:package]))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            todo += [name for name in names if name.split(".")[0] in first_party]
    return seen


def copied_sources() -> list[str]:
    sources = []
    for arguments in instructions(runtime_stage(), "COPY"):
        parts = [p for p in arguments.split() if not p.startswith("--")]
        if not arguments.startswith("--from"):
            sources += parts[:-1]
    return sources


def test_the_image_holds_every_module_the_processes_import():
    sources = copied_sources()
    assert "config.yml" in sources
    for path in reachable_modules():
        relative = path.relative_to(ROOT)
        assert any(relative == Path(s) or Path(s) in relative.parents for s in sources), f"{relative} not copied"
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for pattern in ignored:
        assert not any(Path(s).match(pattern) for s in sources), f".dockerignore hides {pattern}"


def runtime_requirements() -> list[Requirement]:
    """requirements.in as the Dockerfile filters it (the same grep, run here)."""
    builder = " ".join(args for _, args in list(dockerfile_stages().values())[-2])
    pattern = re.search(r"grep -vE '([^']+)'", builder).group(1)
    kept = subprocess.run(
        ["grep", "-vE", pattern, str(ROOT / "requirements.in")], capture_output=True, text=True, check=True
    ).stdout
    return [Requirement(line) for line in kept.splitlines() if line.strip() and not line.startswith("#")]


def closure(requirements: list[Requirement]) -> set[str]:
    """The distributions those requirements pull in (as installed here from the same lock)."""
    names: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        requirement, extras = todo.pop()
        name = requirement.name.lower().replace("_", "-")
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in names:
            continue
        names.add(key)
        names.add(name)
        for raw in metadata.requires(name) or []:
            dependency = Requirement(raw)
            markers = [{"extra": extra, "python_version": "3.11"} for extra in extras or {""}]
            if dependency.marker is None or any(dependency.marker.evaluate(m) for m in markers):
                todo.append((dependency, frozenset(dependency.extras)))
    return names


def test_the_image_leaves_out_the_tools_of_tests():
    # schemathesis brought pytest and hypothesis back into the image.
    installed = closure(runtime_requirements())
    assert not installed & {"pytest", "hypothesis", "schemathesis", "locust", "selenium", "ruff"}


def test_the_image_installs_every_library_the_processes_import():
    installed = closure(runtime_requirements())
    distributions = metadata.packages_distributions()
    missing = {}
    for path in reachable_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops = {node.module.split(".")[0]}
            else:
                continue
            for top in tops - set(sys.stdlib_module_names) - {"contracts", "services", "gateway", "infra"}:
                provided = {d.lower().replace("_", "-") for d in distributions.get(top, [])}
                if not provided & installed:
                    missing[top] = str(path.relative_to(ROOT))
    assert not missing, f"imported but left out of the image (Dockerfile's grep): {missing}"


# --- the end-to-end tests in docker mode (tests/e2e/conftest.py) ------------------------------------


def test_docker_mode_of_the_end_to_end_tests_can_set_what_it_sets():
    from tests.e2e import conftest as e2e

    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert set(re.findall(r"\$\{(YIWANG_HOST_[A-Z_]+):-", text)) == set(e2e.HOST_PORTS)
    raw = services()["gateway"]["environment"]
    for name in [*e2e.SETTINGS, "YIWANG_TRUSTED_PROXIES", "YIWANG_RETRY_DELAYS"]:
        assert str(raw[name]).startswith(f"${{{name}:-"), f"{name} cannot be set from the shell"
    assert 8000 in published("gateway") and 8025 in published("sms-provider")  # what the fixture asks for
