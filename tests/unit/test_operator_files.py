"""Operator files (deploy/prometheus, deploy/grafana): promtool checks and lint of dashboards and alerts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
ALERT_RULES = PROMETHEUS / "rules" / "eduhub-alerts.yml"
ALERT_TESTS = PROMETHEUS / "tests" / "eduhub-alerts.test.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))
DATASOURCE = {"type": "prometheus", "uid": "eduhub-prometheus"}
GRAFANA_DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards/eduhub"

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The catalogue: every series name the hub exports with its labels. A dashboard or alert naming
# anything else shows "No data" forever instead of failing, so the names are pinned here.
METRICS: dict[str, frozenset[str]] = {
    name: frozenset(labels) for name, labels in {
        "eduhub_events_ingested_total": ("source", "entity"),
        "eduhub_events_valid_total": ("source", "entity"),
        "eduhub_events_invalid_total": ("source", "entity", "rule"),
        "eduhub_events_deduplicated_total": ("source", "entity"),
        "eduhub_events_routed_total": ("subscriber", "entity"),
        "eduhub_events_delivered_total": ("subscriber", "entity"),
        "eduhub_delivery_failures_total": ("subscriber", "entity"),
        "eduhub_delivery_circuit_open": ("subscriber",),
        "eduhub_end_to_end_latency_seconds": ("subscriber", "le"),
        "eduhub_dlq_writes_total": ("source", "stage"),
        "eduhub_stage_batch_seconds": ("stage", "le"),
        "eduhub_stage_errors_total": ("stage", "error"),
        "eduhub_stage_last_turn_timestamp_seconds": ("stage",),
        "eduhub_registry_errors_total": ("operation",),
        "eduhub_consumer_lag_records": ("group", "topic", "partition"),
        "eduhub_assigned_partitions": ("stage",),
        "eduhub_connector_up": ("connector", "source"),
        "eduhub_connector_records_published_total": ("connector", "source"),
        "eduhub_connector_errors_total": ("connector", "source"),
        "eduhub_connector_last_success_timestamp_seconds": ("connector", "source"),
        "eduhub_build_info": ("version",),
    }.items()
}
HISTOGRAMS = {"eduhub_end_to_end_latency_seconds", "eduhub_stage_batch_seconds"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}

METRIC_NAME = re.compile(r"eduhub_[a-z_]+")
HISTOGRAM_SERIES = re.compile(r"^(.*)_(?:bucket|sum|count)$")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
# The live-Prometheus test strips ` <op> <number>` and runs the rest, so an alert is only testable
# when its comparison is the last, top-level thing in the expression.
ALERT_EXPR = re.compile(r"^(.*) (<|>|==|!=|>=|<=) (-?[0-9.]+)$")
# Constructs whose left side may legitimately return nothing, which the live test could not tell
# from a misspelt metric.
FORBIDDEN_IN_ALERTS = re.compile(r"\babsent(?:_over_time)?\s*\(|\b(?:unless|or|and|bool)\b")
SEVERITIES = {"page", "ticket"}
# $__rate_interval needs a Grafana; 1m is four scrapes at 15s. Regex matchers take `.*` as "All".
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
SUBSTITUTIONS = {"__rate_interval": "1m", "source": ".*", "subscriber": ".*", "entity": ".*"}


# ---------------------------------------------------------------------------------------------
# Helpers (promql_expressions is imported by the live-Prometheus test)
# ---------------------------------------------------------------------------------------------

def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def data_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in panels(dashboard) if p.get("type") != "row")


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def substitute(expr: str) -> str:
    """The expression with Grafana's variables replaced; unknown ones stay, so a live run fails on them."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return SUBSTITUTIONS.get(name, match.group(0))
    return VARIABLE.sub(value, expr)


def alert_query(rule: dict[str, Any]) -> str:
    match = ALERT_EXPR.match(rule["expr"])
    if match is None:
        raise ValueError(f"alert {rule['alert']}: expr is not `<query> <op> <number>`: {rule['expr']!r}")
    return match.group(1)


def promql_expressions() -> list[tuple[str, str]]:
    """(where, expr) for every dashboard target and every alert (its comparison stripped), runnable as-is."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in data_panels(dashboard):
            for target in panel.get("targets", []):
                if "expr" in target:
                    where = f"{path.name}: {panel.get('title', panel.get('id'))} [{target.get('refId')}]"
                    found.append((where, substitute(target["expr"])))
    for rule in alert_rules():
        found.append((f"{ALERT_RULES.name}: {rule['alert']}", substitute(alert_query(rule))))
    return found


def metric_names(expr: str) -> set[str]:
    """Catalogue names of the series an expression reads (histogram series by their base name)."""
    names = set()
    for name in METRIC_NAME.findall(expr):
        base = HISTOGRAM_SERIES.match(name)
        names.add(base.group(1) if base and base.group(1) in HISTOGRAMS else name)
    return names


def label_names(expr: str) -> set[str]:
    """Labels an expression groups by or matches on (`by (...)`, `without (...)`, `{name="..."}`)."""
    names = {m.group(1) for m in MATCHER.finditer(expr)}
    for group in GROUPING.findall(expr):
        names |= {label.strip() for label in group.split(",") if label.strip()}
    return names


def check_expression(where: str, expr: str) -> list[str]:
    """What is wrong with an expression against the catalogue (empty when nothing)."""
    problems = []
    names = metric_names(expr)
    unknown = names - METRICS.keys()
    if unknown:
        problems.append(f"{where}: metrics the hub does not export: {sorted(unknown)} in {expr!r}")
    allowed = TARGET_LABELS.union(*(METRICS[n] for n in names - unknown))
    extra = label_names(expr) - allowed
    # The label check only makes sense once the expression reads a catalogued metric (`up{job=…}` is
    # Prometheus's own series).
    if names and not unknown and extra:
        problems.append(f"{where}: labels none of {sorted(names)} carry: {sorted(extra)} in {expr!r}")
    return problems


def run_promtool(*args: str) -> None:
    tool = shutil.which("promtool")
    if tool is None:
        message = "promtool is not installed (Debian/Ubuntu: apt-get install prometheus)"
        if IN_CI:
            pytest.fail(message)  # in CI a missing tool is a failure, never a skip
        pytest.skip(message)
    # cwd=ROOT with relative paths: promtool resolves rule_files relative to the file naming them,
    # and its messages then name the files as a reader of the repository knows them.
    result = subprocess.run([tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------------------------------------
# promtool
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("check", "config", relative(PROMETHEUS_CONFIG)),
    ("check", "rules", relative(ALERT_RULES)),
    ("test", "rules", relative(ALERT_TESTS)),
], ids=["check-config", "check-rules", "test-rules"])
def test_promtool(args):
    run_promtool(*args)


def test_config_loads_the_alert_rules_and_scrapes_both_processes():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    # A rule_files glob that matches nothing is not an error to Prometheus: the alerts would just
    # silently not exist.
    matched = {p for pattern in config["rule_files"] for p in PROMETHEUS.glob(pattern)}
    assert ALERT_RULES in matched
    jobs = {job["job_name"]: [t for s in job["static_configs"] for t in s["targets"]]
            for job in config["scrape_configs"]}
    assert jobs == {"eduhub-worker": ["worker-1:6066", "worker-2:6066"], "eduhub-connect": ["connect:8083"]}


# ---------------------------------------------------------------------------------------------
# Alert rules
# ---------------------------------------------------------------------------------------------

ALERTS = alert_rules()


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_alert_is_testable_against_a_live_prometheus(rule):
    expr = rule["expr"]
    assert "\n" not in expr.strip(), "expr must be a single line"
    assert ALERT_EXPR.match(expr), f"expr is not `<query> <op> <number>`: {expr!r}"
    assert not FORBIDDEN_IN_ALERTS.search(alert_query(rule)), f"absent/unless/or/and/bool in {expr!r}"
    assert check_expression(rule["alert"], alert_query(rule)) == []


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_alert_has_for_severity_and_bilingual_annotations(rule):
    assert rule.get("for"), "an alert without `for` fires on a single bad scrape"
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    for key in ("summary", "description"):
        # English, then " / " and the Vietnamese sentence for the province's operators.
        assert " / " in annotations.get(key, ""), f"{key} is missing or has no Vietnamese part"


def test_alert_names_are_unique_and_each_has_a_firing_and_a_quiet_promtool_case():
    names = [rule["alert"] for rule in ALERTS]
    assert len(names) == len(set(names))
    cases = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]
    fires, quiet = set(), set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(names) - fires == set(), "alerts never shown firing"
    assert set(names) - quiet == set(), "alerts never shown staying quiet"


# ---------------------------------------------------------------------------------------------
# Dashboards
# ---------------------------------------------------------------------------------------------

def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_four_dashboards_are_there_with_unique_uids():
    assert {p.name for p in DASHBOARDS} == {
        "eduhub-overview.json", "eduhub-sources.json", "eduhub-subscribers.json", "eduhub-dlq.json"}
    uids = [load(p).get("uid") for p in DASHBOARDS]
    assert all(uids) and len(uids) == len(set(uids)), uids


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_model(path):
    dashboard = load(path)
    assert dashboard.get("title", "").startswith("EduHub")
    assert dashboard["schemaVersion"] == 39
    assert dashboard["editable"] is True
    assert dashboard["refresh"] == "10s"
    assert dashboard["time"] == {"from": "now-1h", "to": "now"}
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique within a dashboard"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_every_panel_queries_the_provisioned_prometheus(path):
    for panel in data_panels(load(path)):
        title = panel.get("title")
        assert panel.get("datasource") == DATASOURCE, title
        targets = panel.get("targets", [])
        assert targets, f"{title}: no targets"
        for target in targets:
            assert target.get("expr") and target.get("refId"), f"{title}: target without expr or refId"
            assert target.get("datasource", DATASOURCE) == DATASOURCE, title
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), f"{title}: repeated refId"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_expressions_use_only_catalogued_metrics_and_labels(path):
    dashboard = load(path)
    problems = []
    for panel in data_panels(dashboard):
        for target in panel.get("targets", []):
            problems += check_expression(f"{panel.get('title')} [{target.get('refId')}]", target.get("expr", ""))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        problems += check_expression(f"variable {variable['name']}", query)
    assert problems == []


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_variables_are_defined_multi_valued_and_matched_as_regexes(path):
    dashboard = load(path)
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    for variable in variables.values():
        assert variable.get("datasource") == DATASOURCE, variable["name"]
        if variable.get("includeAll"):
            # Without allValue Grafana expands "All" to every current value: a huge regex, and
            # series of values that appear later are left out.
            assert variable.get("allValue") == ".*", variable["name"]
    for panel in data_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            used = {m.group(1) or m.group(2) for m in VARIABLE.finditer(expr)} - {"__rate_interval"}
            assert used <= set(variables), f"{panel.get('title')}: undefined variables {used - set(variables)}"
            for label, op, value in MATCHER.findall(expr):
                # "All" (.*) and multi-selections (a|b) only work with a regex matcher.
                if "$" in value:
                    assert op == "=~", f"{panel.get('title')}: {label}{op}\"{value}\" must use =~"


def test_promql_expressions_cover_every_target_and_alert_with_no_variable_left():
    expressions = promql_expressions()
    targets = sum(len(p.get("targets", [])) for path in DASHBOARDS for p in data_panels(load(path)))
    assert len(expressions) == targets + len(ALERTS)
    left = [(where, expr) for where, expr in expressions if "$" in expr]
    assert left == []


def test_catalogue_names_and_labels_are_what_the_hub_defines():
    # One way only: the hub may export more than the dashboards read, but every catalogued series
    # must exist with exactly these labels, or the panels reading it go blank.
    from hub.core.metrics import HubMetrics

    suffix = {"counter": "_total", "info": "_info"}
    defined = {}
    for metric in vars(HubMetrics()).values():
        if hasattr(metric, "_labelnames"):
            name = metric.describe()[0].name + suffix.get(metric._type, "")
            labels = set(metric._labelnames) | ({"le"} if metric._type == "histogram" else set())
            defined[name] = labels | ({"version"} if metric._type == "info" else set())
    assert {name: defined.get(name) for name in METRICS} == {name: set(labels) for name, labels in METRICS.items()}


# ---------------------------------------------------------------------------------------------
# Grafana provisioning
# ---------------------------------------------------------------------------------------------

def test_grafana_provisioning_points_at_the_dashboards_and_the_datasource_uid():
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [datasource] = datasources["datasources"]
    assert (datasource["name"], datasource["uid"], datasource["type"]) == ("Prometheus", DATASOURCE["uid"], "prometheus")
    assert datasource["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "eduhub.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == GRAFANA_DASHBOARDS_MOUNT


# ---------------------------------------------------------------------------------------------
# docker-compose.yml, once it runs Prometheus
# ---------------------------------------------------------------------------------------------

def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path of a compose service's bind mounts (short and long syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume.get("target", "")
        else:
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
        if source.startswith((".", "/")):  # named volumes are not files of this repository
            mounts[target.rstrip("/")] = (ROOT / source).resolve()
    return mounts


def test_compose_runs_prometheus_and_grafana_with_these_files():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    if "prometheus" not in services:
        pytest.skip("docker-compose.yml has no prometheus service yet")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                assert target.rsplit(":", 1)[0] in services, f"{job['job_name']} scrapes {target}: no such service"
    # The whole directory: rule_files are relative to prometheus.yml, and a glob matching nothing
    # loads no alerts without any error.
    assert PROMETHEUS.resolve() in bind_mounts(services["prometheus"]).values(), \
        "mount deploy/prometheus as a directory into the prometheus service"
    if "grafana" in services:
        mounts = bind_mounts(services["grafana"])
        assert mounts.get(GRAFANA_DASHBOARDS_MOUNT) == DASHBOARD_DIR.resolve()
        provisioning = (GRAFANA / "provisioning").resolve()
        assert any(target.startswith("/etc/grafana/provisioning") and source.is_relative_to(provisioning)
                   for target, source in mounts.items()), "mount deploy/grafana/provisioning"
