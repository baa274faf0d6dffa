"""The deployment files name only what exists: settings the services read, commands the
package installs, metrics the services export; the alert rules pass ``promtool``.

``make test`` installs Debian's ``prometheus`` (for ``promtool``) when it is missing.
Metric names are collected from the code, not from a list kept here: the admin API's
and the EPG worker's Prometheus registry (everything their applications import) and
the gateway's own ``/metrics`` renderer.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

from authgate import metrics as authgate_metrics
from catena import cli, safety
from catena.settings import AdminSettings, AuthgateSettings, EpgSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
_VARIABLE = re.compile(r"\bCATENA_[A-Z0-9_]+\b")
# Words of PromQL that are not metric names.
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
             "bool", "offset", "inf", "nan"}  # fmt: skip


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus package")
    return found


# ------------------------------------------------------------------ metrics


def exported_metrics() -> set[str]:
    """Every series name the three services can export."""
    import admin_api.app  # noqa: F401  (registers every admin_api metric)
    import epg_worker.app  # noqa: F401

    names = {"up"}  # Prometheus's own, per scrape target
    for family in prometheus_client.REGISTRY.collect():
        names |= _series_names(family.name, family.type)
    text = authgate_metrics.render({"0": authgate_metrics.Metrics().snapshot()}).decode()
    names |= {
        line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")
    }
    return names


def _series_names(name: str, kind: str) -> set[str]:
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created")}.get(kind, ("",))  # fmt: skip
    return {name + suffix for suffix in suffixes}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = set()
    for match in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        found.add(match.group())
    return found


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "catena.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels)
    return [target["expr"] for panel in panels for target in panel["targets"]]


def alert_expressions() -> list[str]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_metric_names_are_read_from_promql() -> None:
    expression = (
        'histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{x="y:z"}[5m]))) > 2 * 86400 and b_c'
    )
    assert metric_names(expression) == {"a_bucket", "b_c"}


def test_dashboard_and_alerts_name_only_exported_metrics() -> None:
    exported = exported_metrics()
    assert {
        "catena_admin_requests_total",
        "authgate_spool_bytes",
        "catena_epg_fetch_seconds_bucket",
    } <= exported
    for expression in dashboard_expressions() + alert_expressions():
        names = metric_names(expression)
        assert names, expression
        assert names <= exported, f"{sorted(names - exported)} in {expression!r} are not exported"


def test_the_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    rules = DEPLOY / "prometheus"
    checked = subprocess.run(
        [promtool(), "check", "rules", "alerts.yml"], cwd=rules, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"], cwd=rules, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool checks PromQL in rule files: each query becomes a recording rule.
    rules = [{"record": f"dashboard:query_{n}", "expr": e} for n, e in enumerate(dashboard_expressions())]
    (tmp_path / "dashboard.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    checked = subprocess.run(
        [promtool(), "check", "rules", "dashboard.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_grafana_and_prometheus_provisioning_fit_together() -> None:
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads((DEPLOY / "grafana" / "catena.json").read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p} == {uid}
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yml"]
    ports = {"admin-api": AdminSettings().admin_port, "authgate": AuthgateSettings().auth_port,
             "epg-worker": EpgSettings().epg_port}  # fmt: skip
    for job in prometheus["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            host, port = target.split(":")
            assert host in COMPOSE["services"], target
            assert int(port) == ports[host.rstrip("-12")], target


# ------------------------------------------------------------------ settings and commands


def deployment_texts() -> dict[str, str]:
    files = [DEPLOY / "compose.yaml", DEPLOY / "env.example", DEPLOY / "systemd" / "catena.env.example",
             ROOT / "Dockerfile", *UNITS]  # fmt: skip
    return {str(path.relative_to(ROOT)): path.read_text() for path in files}


def test_deployment_files_name_only_settings_the_services_read() -> None:
    known = safety.known_variables()
    unknown = {
        name: sorted(set(_VARIABLE.findall(text)) - known) for name, text in deployment_texts().items()
    }
    assert {name: names for name, names in unknown.items() if names} == {}
    named = set(_VARIABLE.findall("\n".join(deployment_texts().values())))
    assert {"CATENA_DATABASE_URL", "CATENA_REDIS_URL", "CATENA_TOKEN_SECRETS", "CATENA_VAR_DIR"} <= named


def compose_commands() -> list[list[str]]:
    found = []
    for service in COMPOSE["services"].values():
        if str(service.get("image", "")).startswith("localhost/catena"):
            found.append(service["command"])
            if "healthcheck" in service:
                found.append(service["healthcheck"]["test"][1:])
    return found


def unit_commands() -> list[list[str]]:
    found = []
    for unit in UNITS:
        (line,) = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
        argv = line.removeprefix("ExecStart=").split()
        assert argv[0].startswith("/opt/catena/bin/"), line
        found.append([Path(argv[0]).name, *argv[1:]])
    return found


def dockerfile_commands() -> list[list[str]]:
    text = (ROOT / "Dockerfile").read_text()
    return [json.loads(m.group(1)) for m in re.finditer(r"^(?:CMD|HEALTHCHECK .*CMD) (\[.*\])$", text, re.M)]


@pytest.mark.parametrize("source", [compose_commands, unit_commands, dockerfile_commands])
def test_deployment_commands_are_ones_the_package_provides(source: Any) -> None:
    commands = source()
    assert commands
    for argv in commands:
        assert argv[0] in SCRIPTS, f"{argv[0]} is not a [project.scripts] entry"
        check_arguments(argv)


def check_arguments(argv: list[str]) -> None:
    if argv[0] == "catena":
        parsed = cli._parser().parse_args(argv[1:]) if argv[1:] != ["--help"] else None
        assert parsed is None or hasattr(parsed, "run"), argv
    elif argv[0] == "authgate":
        module = SCRIPTS["authgate"].split(":")[0]
        result = subprocess.run([sys.executable, "-m", module.removesuffix(".__main__"), *argv[1:], "--help"],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, (argv, result.stderr)
    else:
        assert argv[1:] == [], f"{argv[0]} takes no arguments: {argv}"


def test_every_service_runs_under_systemd_and_compose() -> None:
    assert {u.name for u in UNITS} == {
        f"catena-{s}.service" for s in ("migrate", "admin-api", "authgate", "epg-worker")
    }
    assert ["authgate", "--workers", "4"] in unit_commands()
    commands = [c[0] for c in compose_commands()]
    assert commands.count("authgate") == 2 and {"admin-api", "epg-worker"} <= set(commands)
    assert ["catena", "migrate"] in compose_commands()


def test_the_image_runs_unprivileged_from_the_lock() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER catena$", final, re.M) and "useradd --system" in final
    assert "--require-hashes --only-binary=:all: -r requirements.lock" in text
    assert "HEALTHCHECK" in final and '"catena", "health"' in final
