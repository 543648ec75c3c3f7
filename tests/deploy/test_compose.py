"""docker-compose.yml and the Dockerfile: schema-valid, pinned, and every path they use exists."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "compose-spec.json"
"""Vendored from compose-spec/compose-spec, schema/compose-spec.json (commit 00655e22)."""
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?P<op>:?[-?+])?(?P<default>[^}]*)\}")


def interpolate(node: Any) -> Any:
    """Compose's ``${VAR:-default}`` on the parsed file, nothing set: each takes its default."""
    if isinstance(node, dict):
        return {key: interpolate(value) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item) for item in node]
    if isinstance(node, str):
        return VARIABLE.sub(lambda match: match.group("default"), node)
    return node


@pytest.fixture(scope="module")
def raw() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(raw: str) -> dict[str, Any]:
    return interpolate(yaml.safe_load(raw))


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of the service's bind mounts (sources that are paths)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def repo_path(compose: dict[str, Any], service: str, container_path: str) -> Path:
    """The repository file a container path comes from, through the service's bind mounts."""
    for source, target in bind_mounts(compose["services"][service]):
        if container_path == target or container_path.startswith(target + "/"):
            return ROOT / source / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not mounted into {service}")


def test_the_schema_is_the_vendored_compose_spec() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft7Validator.check_schema(schema)


def test_compose_file_validates_against_the_compose_spec(raw: str, compose: dict) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    for document in (yaml.safe_load(raw), compose):
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_every_variable_has_a_default(raw: str) -> None:
    assert VARIABLE.search(raw), "no ${VAR:-default} found: the pattern no longer matches"
    for match in VARIABLE.finditer(raw):
        assert match.group("op") == ":-" and match.group("default"), match.group(0)
    assert "$" not in VARIABLE.sub("", raw), "a bare $VAR has no default"


def test_images_are_pinned(compose: dict) -> None:
    assert compose["services"]
    for name, service in compose["services"].items():
        repository, _, tag = service["image"].rpartition(":")
        assert repository and tag and tag != "latest", (name, service["image"])


def test_mounted_and_built_paths_exist(compose: dict) -> None:
    declared = set(compose.get("volumes", {}))
    mounts = [m for service in compose["services"].values() for m in bind_mounts(service)]
    assert mounts, "no bind mount found: the test would check nothing"
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), name
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for source, _ in bind_mounts(service):
            assert (ROOT / source).exists(), (name, source)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, (name, source)


def test_kafka_single_node_kraft(compose: dict) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "PLAINTEXT://kafka:19092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "PLAINTEXT_HOST://localhost:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    for listener in ("PLAINTEXT://:19092", "PLAINTEXT_HOST://:9092", "CONTROLLER://:29093"):
        assert listener in env["KAFKA_LISTENERS"]
    for key in (
        "KAFKA_NODE_ID",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
        "CLUSTER_ID",
    ):
        assert env[key], key
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1


def _workers(compose: dict) -> list[dict]:
    """The workers of the default stack (worker-1, worker-2; not the sasl profile's)."""
    services = compose["services"]
    return [svc for name, svc in sorted(services.items()) if re.fullmatch(r"worker-\d+", name)]


def test_workers(compose: dict) -> None:
    workers = _workers(compose)
    assert len(workers) == 2
    for worker in workers:
        assert worker["command"] == ["streamproc", "worker"]
        assert worker["expose"] == ["6066"]
        assert "ports" not in worker and "container_name" not in worker
        # One DNS name for all of them: Prometheus's dns_sd_configs finds every worker.
        assert worker["networks"]["default"]["aliases"] == ["worker"]
        assert (
            worker["environment"]
            | {
                "STREAMPROC_BROKER_URL": "kafka://kafka:19092",
                "STREAMPROC_REDIS_URL": "redis://redis:6379/0",
                "STREAMPROC_WEB_HOST": "0.0.0.0",
                "STREAMPROC_WEB_PORT": "6066",
            }
            == worker["environment"]
        )
        assert "6066/healthz" in " ".join(worker["healthcheck"]["test"])
        assert worker["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
        partitions = int(worker["environment"]["STREAMPROC_PARTITIONS"])
        assert partitions >= len(workers)


def test_each_worker_keeps_its_data_dir_on_a_volume_of_its_own(compose: dict) -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    data_dir = re.search(r"STREAMPROC_DATA_DIR=(\S+)", dockerfile).group(1)  # type: ignore[union-attr]
    assert f"mkdir -p {data_dir}" in dockerfile  # owned by the worker's user, as the volume
    volumes = []
    for worker in _workers(compose):
        (mount,) = worker["volumes"]
        volume, target = mount.split(":")
        assert target == data_dir and volume in compose["volumes"]
        volumes.append(volume)
    assert len(set(volumes)) == len(volumes)  # a data dir serves one worker


def test_one_shot_topic_init_and_simulator_profile(compose: dict) -> None:
    services = compose["services"]
    assert services["topic-init"]["command"] == ["streamproc", "topics", "create"]
    assert services["topic-init"]["restart"] == "no"
    assert services["simulator"]["profiles"] == ["sim"]
    assert services["simulator"]["command"] == ["streamproc", "simulate", "--rate", "20"]


def test_prometheus_scrapes_the_worker_service(compose: dict) -> None:
    prometheus = compose["services"]["prometheus"]
    flag = next(arg for arg in prometheus["command"] if arg.startswith("--config.file="))
    config_path = repo_path(compose, "prometheus", flag.split("=", 1)[1])
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "streamproc"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    for worker in _workers(compose):
        assert str(sd["port"]) in worker["expose"]
    assert config["rule_files"]
    for rule_file in config["rule_files"]:
        assert (config_path.parent / rule_file).is_file(), rule_file


def test_alertmanager_config_is_mounted(compose: dict) -> None:
    service = compose["services"]["alertmanager"]
    flag = next(arg for arg in service["command"] if arg.startswith("--config.file="))
    assert repo_path(compose, "alertmanager", flag.split("=", 1)[1]).is_file()


def test_grafana_is_provisioned_with_the_wallboard_as_home(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    home = repo_path(compose, "grafana", env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert json.loads(home.read_text(encoding="utf-8"))["uid"] == "sales-floor-wallboard"
    provisioning = repo_path(compose, "grafana", "/etc/grafana/provisioning")
    provider_file = provisioning / "dashboards" / "dashboards.yaml"
    (provider,) = yaml.safe_load(provider_file.read_text(encoding="utf-8"))["providers"]
    dashboards = repo_path(compose, "grafana", provider["options"]["path"])
    assert sorted(dashboards.glob("*.json")), dashboards


def test_dockerfile() -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    instructions = [(line.split()[0].upper(), line.split(maxsplit=1)[1]) for line in lines]
    args = {key: [value for k, value in instructions if k == key] for key, _ in instructions}
    assert args["FROM"][0].startswith("python:3.11-slim")
    assert args["USER"] and args["USER"][-1] not in {"root", "0"}
    assert args["EXPOSE"] == ["6066"]
    assert "/healthz" in args["HEALTHCHECK"][0]
    assert "pip install ." in " ".join(args["RUN"])
    assert args["COPY"]
    for copy in args["COPY"]:
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists(), source


def _hosts_named(text: str) -> set[str]:
    """Host names in URLs (``scheme://host:port``) and ``host:port`` targets of a config."""
    urls = re.findall(r"[a-z]+://([A-Za-z][\w.-]*)(?::\d+)?", text)
    targets = re.findall(r"[\"'\s]([A-Za-z][\w.-]*):\d+[\"']", text)
    return set(urls) | set(targets)


def test_every_host_a_config_names_is_a_service(compose: dict) -> None:
    """alertmanager.yml used to post to http://alert-webhook:8080, which no service was."""
    services = set(compose["services"])
    configs = {
        "alertmanager": ROOT / "alertmanager" / "alertmanager.yml",
        "prometheus": ROOT / "prometheus" / "prometheus.yml",
        "grafana": ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yaml",
    }
    env = compose["services"]["worker-1"]["environment"]
    named = {
        "worker env": _hosts_named(" ".join(str(v) for v in env.values())),
        **{name: _hosts_named(path.read_text(encoding="utf-8")) for name, path in configs.items()},
    }
    assert "alert-webhook" in named["alertmanager"] and "kafka" in named["worker env"]
    for where, hosts in named.items():
        assert hosts - {"localhost"} <= services, (where, sorted(hosts - services))


def test_the_alert_webhook_service_runs_the_mounted_receiver(compose: dict) -> None:
    service = compose["services"]["alert-webhook"]
    script = repo_path(compose, "alert-webhook", service["command"][1])
    assert script.is_file() and service["command"][2] in service["expose"]
    assert "alert-webhook" in compose["services"]["alertmanager"]["depends_on"]


def test_dockerignore_keeps_the_venv_out_and_what_the_image_copies_in() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "tests"} <= ignored
    copied = [
        line.split()[1]
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line.startswith("COPY ")
    ]
    assert copied and not [source for source in copied if source in ignored]


def test_the_sasl_profile_connects_a_worker_to_a_sasl_ssl_kafka(compose: dict) -> None:
    """``--profile sasl``: a Kafka whose client listener takes only SASL_SSL, its certificate
    made for the name the workers use, and workers whose settings match it."""
    from streamproc.config import Settings

    services = compose["services"]
    for name in ("sasl-certs", "kafka-sasl", "topic-init-sasl", "worker-sasl"):
        assert services[name]["profiles"] == ["sasl"], name
    kafka = services["kafka-sasl"]["environment"]
    assert "SECURE:SASL_SSL" in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert "SECURE://kafka-sasl:9094" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["KAFKA_SSL_KEYSTORE_LOCATION"] == "/certs/kafka.p12"
    certs = " ".join(services["sasl-certs"]["command"])
    assert "SAN=dns:kafka-sasl" in certs and "-file ca.pem" in certs

    for name in ("topic-init-sasl", "worker-sasl"):
        env = services[name]["environment"]
        assert "sasl-certs:/certs:ro" in services[name]["volumes"]
        settings = Settings(
            _env_file=None,
            **{key.removeprefix("STREAMPROC_").lower(): value for key, value in env.items()},
        )
        assert settings.broker_hosts == "kafka-sasl:9094"
        assert settings.kafka_security_protocol == "SASL_SSL"
        assert settings.kafka_sasl_mechanism in kafka["KAFKA_SASL_ENABLED_MECHANISMS"]
        assert settings.kafka_ssl_cafile is not None
        assert settings.kafka_ssl_cafile.as_posix() == "/certs/ca.pem"
        assert settings.kafka_ssl_check_hostname  # the certificate is for kafka-sasl
        password = settings.kafka_sasl_password
        assert password is not None
        user = f'user_{settings.kafka_sasl_username}="{password.get_secret_value()}";'
        assert user in kafka["KAFKA_LISTENER_NAME_SECURE_PLAIN_SASL_JAAS_CONFIG"]
    # Its own consumer group and Redis database: the default stack's data stays its own.
    sasl, plain = services["worker-sasl"]["environment"], services["worker-1"]["environment"]
    assert sasl["STREAMPROC_APP_ID"] != plain.get("STREAMPROC_APP_ID", "streamproc")
    assert sasl["STREAMPROC_REDIS_URL"] != plain["STREAMPROC_REDIS_URL"]
