"""docker-compose.yml without a Docker engine: `docker-compose config`, and every path and port it relies on."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import yaml

from mnist_hitl.config import Settings
from tests.support.helpers import REPO

ROOT = REPO
COMPOSE = ROOT / "docker-compose.yml"
PYTHON_SERVICES = {"init", "app", "api", "prefect", "flow", "mlflow", "lab", "exporter"}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def node_exporters() -> dict[str, str]:
    """``host:port`` of every exporter the Prometheus config finds (file-based discovery), with its node label."""
    config = yaml.safe_load((ROOT / "dashboards/prometheus/prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "mnist-hitl"]
    found = {}
    for pattern in (p for sd in job["file_sd_configs"] for p in sd["files"]):
        for path in sorted((ROOT / "dashboards/prometheus").glob(pattern)):
            for group in yaml.safe_load(path.read_text()):
                found.update(dict.fromkeys(group["targets"], group["labels"]["node"]))
    return found


def compose_config(*options: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), *options, "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**environment, **env},
        timeout=120,
    )


def test_docker_compose_config_passes_and_the_grafana_password_comes_from_the_environment(require_binary):
    require_binary("docker-compose", "docker-compose")
    default = compose_config()
    assert default.returncode == 0, default.stderr
    services = yaml.safe_load(default.stdout)["services"]
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "admin"
    chosen = compose_config(GRAFANA_ADMIN_PASSWORD="s3cret")
    assert yaml.safe_load(chosen.stdout)["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


def test_every_path_compose_mounts_or_builds_from_exists():
    checked = 0
    for name, service in compose()["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), name
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
            checked += 1
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
                checked += 1
    assert checked >= 9


def test_the_dockerfile_copies_only_what_exists_and_the_image_finds_its_files():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in re.findall(r"^COPY\s+(.+)$", dockerfile, re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("mnist_hitl", "notebooks", "flows", "dashboards", "Procfile", "pyproject.toml", "README.md"):
        assert needed not in ignored and (ROOT / needed).exists(), needed
    assert "pip install -e" not in dockerfile, "the image installs mnist-hitl as its wheel does (test_wheel.py)"
    assert "MNIST_HITL_HOME=/data" in dockerfile


def test_python_services_share_one_named_volume_at_mnist_hitl_home_and_have_fixed_hostnames():
    spec = compose()
    default = [service for service in spec["services"].values() if "profiles" not in service]
    assert {v.split(":")[0] for s in default for v in s.get("volumes", []) if not v.startswith(".")} == {
        "mnist-hitl-home"
    }
    for name in PYTHON_SERVICES:
        service = spec["services"][name]
        assert "mnist-hitl-home:/data" in service["volumes"], name
        assert service["hostname"] == name  # it names the service's metrics files
        assert service["build"]["context"] == "."


def test_ports_match_the_local_stack_and_bind_the_loopback_address():
    defaults = Settings(home=Path("."))
    expected = {
        "app": defaults.app_port,
        "prefect": defaults.prefect_port,
        "mlflow": defaults.mlflow_port,
        "lab": defaults.lab_port,
        "exporter": defaults.metrics_port,
        "prometheus": defaults.prometheus_port,
        "grafana": 3000,
    }
    services = compose()["services"]
    published = {name: services[name]["ports"] for name in expected}
    assert published == {name: [f"127.0.0.1:{port}:{port}"] for name, port in expected.items()}
    assert "--port" in services["app"]["command"] and str(defaults.app_port) in services["app"]["command"]


def test_every_long_running_service_has_a_healthcheck():
    for name, service in compose()["services"].items():
        if service.get("restart") != "no":  # init trains the first model and exits; so do the scale nodes' own
            assert service.get("healthcheck", {}).get("test"), name


def test_every_service_of_the_image_starts_as_a_mnist_hitl_command():
    for name, service in compose()["services"].items():
        if service.get("image") == "mnist-hitl:latest":
            assert service["command"][0] == "mnist-hitl", name
            assert "-m" not in service.get("healthcheck", {}).get("test", []), name  # `mnist-hitl wait-for`
    assert 'ENTRYPOINT ["sh", "-c", "mnist-hitl prepare && exec' in (ROOT / "Dockerfile").read_text()


def test_the_mlflow_services_serve_the_stores_and_artifacts_they_served_before(monkeypatch):
    from typer.testing import CliRunner

    from mnist_hitl.cli import app
    from mnist_hitl.services import mlflow_server

    services = compose()["services"]
    # the image's environment (the Dockerfile's), not this machine's tracking URI
    image = {"MNIST_HITL_HOME": "/data", "MNIST_HITL_APP_HOST": "0.0.0.0", "MLFLOW_TRACKING_URI": ""}
    backend = "postgresql+psycopg://mnist:${MNIST_HITL_POSTGRES_PASSWORD:-mnist-hitl}@postgres:5432/mlflow"
    before = {  # what `mlflow server` was given: --backend-store-uri, --default-artifact-root or --serve-artifacts ...
        "mlflow": mlflow_server.MlflowServer("sqlite:////data/mlflow/mlflow.db", "/data/mlflow/artifacts"),
        "mlflow-server": mlflow_server.MlflowServer(
            backend, "mlflow-artifacts:/", "/artifacts", "mlflow-server:5000,localhost:*,127.0.0.1:*"
        ),
    }
    for name, expected in before.items():
        served = []
        monkeypatch.setattr(
            mlflow_server, "serve_mlflow", lambda settings, server, served=served: served.append((settings, server))
        )
        outcome = CliRunner().invoke(app, services[name]["command"][1:], env=image)
        assert outcome.exit_code == 0 and len(served) == 1, outcome.output
        settings, server = served[0]
        assert (settings.app_host, settings.mlflow_port, server) == ("0.0.0.0", 5000, expected), name


def test_prometheus_and_grafana_point_at_the_compose_services():
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "dashboards/prometheus/prometheus.yml").read_text())
    jobs = [job for job in config["scrape_configs"] if "static_configs" in job]
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in jobs}
    assert "exporter:9108" in node_exporters() and targets["app"] == ["app:8866"]
    assert {"exporter", "app", "prometheus", "grafana"} <= set(services)
    (source,) = yaml.safe_load((ROOT / "dashboards/grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((ROOT / "dashboards/grafana/provisioning/dashboards/mnist-hitl.yml").read_text())
    assert (
        "./dashboards/grafana/dashboards:" + provider["providers"][0]["options"]["path"] + ":ro"
        in services["grafana"]["volumes"]
    )


def test_promtool_accepts_the_prometheus_config(require_binary):
    require_binary("promtool", "prometheus")
    result = subprocess.run(
        ["promtool", "check", "config", str(ROOT / "dashboards/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_run_without_telemetry_or_job_runner_and_answer_to_the_names_they_are_reached_by():
    services = compose()["services"]
    for name in PYTHON_SERVICES:
        environment = services[name].get("environment", {})
        assert environment.get("MLFLOW_DISABLE_TELEMETRY") == "true", name
        assert environment.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") == "false", name
        assert environment.get("DO_NOT_TRACK") and environment.get("PREFECT_SERVER_ANALYTICS_ENABLED") == "false"
    assert services["prefect"]["command"][:2] == ["mnist-hitl", "prefect-server"]  # Prefect behind the Host check

    # the flow reaches Prefect, Prometheus the app, by service name: each allows that name
    def allowed(service: str) -> list[str]:
        return services[service]["environment"]["MNIST_HITL_ALLOWED_HOSTS"].split(",")

    assert services["flow"]["environment"]["PREFECT_API_URL"].split("/")[2].split(":")[0] in allowed("prefect")
    config = yaml.safe_load((ROOT / "dashboards/prometheus/prometheus.yml").read_text())
    app_target = next(job for job in config["scrape_configs"] if job["job_name"] == "app")["static_configs"][0]
    assert app_target["targets"][0].split(":")[0] in allowed("app")


# the scale profile -------------------------------------------------------------------------------------

SHARED = ("MNIST_HITL_DATABASE_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "MNIST_HITL_WORK_POOL")


def scale_nodes(services: dict) -> dict[str, dict[str, dict]]:
    """The scale profile's nodes: their services, grouped by the label ``mnist-hitl.node``."""
    nodes: dict[str, dict[str, dict]] = {}
    for name, service in services.items():
        if "scale" in service.get("profiles", []) and "mnist-hitl.node" in service.get("labels", {}):
            nodes.setdefault(service["labels"]["mnist-hitl.node"], {})[name] = service
    return nodes


def runs(service: dict, *command: str) -> bool:
    return service.get("command", [])[: len(command)] == list(command)


def nodes_running(nodes: dict[str, dict[str, dict]], *command: str) -> list[str]:
    return [node for node, members in nodes.items() if any(runs(s, *command) for s in members.values())]


def test_the_scale_profile_passes_config_and_leaves_the_default_services_as_they_are(require_binary):
    require_binary("docker-compose", "docker-compose")
    default, scale = compose_config(), compose_config("--profile", "scale")
    assert default.returncode == 0 and scale.returncode == 0, default.stderr + scale.stderr
    alone, beside = (yaml.safe_load(done.stdout)["services"] for done in (default, scale))
    unprofiled = {name for name, service in beside.items() if "profiles" not in service}
    assert unprofiled == PYTHON_SERVICES | {"prometheus", "grafana"}
    assert {name: alone[name] for name in unprofiled} == {name: beside[name] for name in unprofiled}
    assert all(beside[name]["profiles"] == ["scale"] for name in set(beside) - unprofiled)
    # resolved, every node points at one database, one tracking server, one Prefect server and pool
    nodes = scale_nodes(beside).values()
    shared = {tuple(service["environment"][name] for name in SHARED) for node in nodes for service in node.values()}
    assert shared == {
        (
            "postgresql+psycopg://mnist:mnist-hitl@postgres:5432/mnist_hitl",
            "http://mlflow-server:5000",
            "http://prefect-server:4200/api",
            "cycles",
        )
    }


def test_each_scale_node_has_a_home_volume_of_its_own():
    spec = compose()
    nodes = scale_nodes(spec["services"])
    assert {"cycles-1", "cycles-2", "search-1", "app-1", "app-2"} <= set(nodes)
    homes = {}
    for node, services in nodes.items():
        (home,) = {volume for service in services.values() for volume in service["volumes"]}  # its home, only
        assert home.endswith(":/data") and home.split(":")[0] in spec["volumes"], node
        homes[node] = home.split(":")[0]
        assert all(service["hostname"] == name for name, service in services.items())  # names the metrics files
    assert len(set(homes.values())) == len(homes), homes  # no node shares another's home
    members = {name for services in nodes.values() for name in services}
    others = {v.split(":")[0] for n, s in spec["services"].items() if n not in members for v in s.get("volumes", [])}
    assert not others & set(homes.values())  # nor does any service outside the nodes, the default ones included


def test_the_scale_nodes_run_workers_searches_and_apps_on_the_shared_servers():
    services = compose()["services"]
    nodes = scale_nodes(services)
    assert len(nodes_running(nodes, "mnist-hitl", "worker")) >= 2
    assert len(nodes_running(nodes, "mnist-hitl", "schedule")) == 1  # one scheduler deploys to the pool
    assert nodes_running(nodes, "mnist-hitl", "search-worker")
    apps = nodes_running(nodes, "mnist-hitl", "app")
    assert len(apps) >= 2
    for node in apps:
        assert {"app", "api", "follow"} <= {s["command"][1] for s in nodes[node].values()}, node
        assert {s["environment"].get("MNIST_HITL_MODEL_SOURCE") for s in nodes[node].values()} == {"registry"}, node
    for node in nodes_running(nodes, "mnist-hitl", "worker"):  # each cycle starts from the registry's champion
        assert {s["environment"].get("MNIST_HITL_MODEL_SOURCE") for s in nodes[node].values()} == {"registry"}, node
    for members in nodes.values():  # unresolved here: the same expressions
        assert len({tuple(s["environment"][name] for name in SHARED) for s in members.values()}) == 1

    # the shared servers: one PostgreSQL, a database each for the store, MLflow and Prefect
    store = services["app-1"]["environment"]["MNIST_HITL_DATABASE_URL"]
    mlflow = services["mlflow-server"]["command"]
    backend = mlflow[mlflow.index("--backend-store-uri") + 1]
    prefect = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert backend.startswith("postgresql+psycopg://") and prefect.startswith("postgresql+asyncpg://")
    databases = [url.split("@")[1] for url in (store, backend, prefect)]
    assert {d.split("/")[0] for d in databases} == {"postgres:5432"} and len(set(databases)) == 3
    assert services["postgres"]["image"].startswith("postgres:15")
    assert mlflow[:2] == ["mnist-hitl", "mlflow"] and "--artifacts-destination" in mlflow  # served through it
    assert services["mlflow-server"]["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # each server answers to the name the nodes reach it by
    assert "mlflow-server:5000" in mlflow[mlflow.index("--allowed-hosts") + 1].split(",")
    assert services["prefect-server"]["environment"]["MNIST_HITL_ALLOWED_HOSTS"] == "prefect-server"


def test_prometheus_finds_every_nodes_exporter():
    services = compose()["services"]
    nodes = scale_nodes(services)
    exporters = {
        f"{name}:{service['command'][service['command'].index('--port') + 1]}": node
        for node, members in nodes.items()
        for name, service in members.items()
        if runs(service, "mnist-hitl", "metrics")
    }
    assert sorted(exporters.values()) == sorted(nodes)  # one exporter per node
    listed = node_exporters()
    assert {target: listed.get(target) for target in exporters} == exporters
    assert listed["exporter:9108"] == "main"  # and the default services' exporter
    assert {target.split(":")[0] for target in listed} <= set(services)  # nothing listed that compose does not run
    # Prometheus reads the targets where its config's relative pattern points
    assert "./dashboards/prometheus/targets:/etc/prometheus/targets:ro" in services["prometheus"]["volumes"]


def test_the_local_stack_scrapes_its_one_node_directly():
    from mnist_hitl.services.tools import prometheus_config

    settings = Settings(home=Path(".")).replace(metrics_port=9200, app_host="127.0.0.1")
    (job,) = [j for j in yaml.safe_load(prometheus_config(settings))["scrape_configs"] if j["job_name"] == "mnist-hitl"]
    assert "file_sd_configs" not in job
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9200"], "labels": {"node": socket.gethostname()}}]
