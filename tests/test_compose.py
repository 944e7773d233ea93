"""docker-compose.yml without a Docker engine: `docker-compose config`, and every path and port it relies on."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

from mnist_hitl.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
PYTHON_SERVICES = {"init", "app", "api", "prefect", "flow", "mlflow", "lab", "exporter"}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_config(**env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"],
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
    assert list(spec["volumes"]) == ["mnist-hitl-home"]
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
        if name != "init":  # init trains the first model and exits
            assert service.get("healthcheck", {}).get("test"), name


def test_prometheus_and_grafana_point_at_the_compose_services():
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "dashboards/prometheus/prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets["mnist-hitl"] == ["exporter:9108"] and targets["app"] == ["app:8866"]
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
    assert "mnist_hitl.prefect_server" in services["prefect"]["command"]  # Prefect behind the Host check

    # the flow reaches Prefect, Prometheus the app, by service name: each allows that name
    def allowed(service: str) -> list[str]:
        return services[service]["environment"]["MNIST_HITL_ALLOWED_HOSTS"].split(",")

    assert services["flow"]["environment"]["PREFECT_API_URL"].split("/")[2].split(":")[0] in allowed("prefect")
    config = yaml.safe_load((ROOT / "dashboards/prometheus/prometheus.yml").read_text())
    app_target = next(job for job in config["scrape_configs"] if job["job_name"] == "app")["static_configs"][0]
    assert app_target["targets"][0].split(":")[0] in allowed("app")
