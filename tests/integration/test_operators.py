"""What operators see, against a running hub with traffic: a real Prometheus scraping the worker and the
connector runtime evaluates every dashboard and alert expression, and headless Chromium loads the status page."""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from hub.demo.run import Child  # a child process stopped by its own pid, as `make run` runs its parts
from hub.contract.signing import signed_headers
from tests.conftest import IN_CI, ROOT, WorkerProcess, write_config
from tests.kafka_helpers import encode, produce_raw, wait_until
from tests.receiver import Receiver
from tests.unit.test_contract import examples
from tests.unit.test_operator_files import promql_expressions

pytestmark = pytest.mark.integration
KEY = "integration-test-master-key-0123456789"
SUB_SECRET = "operators-test-secret"
HTTP_SECRET = "operators-http-ingest-secret"
WORKER_PORT, CONNECT_PORT, INGEST_PORT, RECEIVER_PORT, PROMETHEUS_PORT = 26120, 28089, 28091, 27110, 29090
ARTIFACTS = Path(os.environ.get("EDUHUB_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is not installed (.ci/run installs it from Debian packages)"
        if IN_CI:
            pytest.fail(message)  # in CI a missing service is a failure, never a skip
        pytest.skip(message)
    return path


def student(source: str, n: int, **data) -> dict:
    envelope = copy.deepcopy(next(e for e in examples() if e["entity"] == "school.student"))
    student_id = f"0313091{n % 100000:05d}"
    envelope.update(source=source, event_id=str(uuid.uuid4()), key=student_id)
    envelope["data"].update(student_id=student_id, **data)
    return envelope


class Traffic(threading.Thread):
    """Keeps events flowing while the tests look: valid changes, an invalid one and a repeat every round."""

    def __init__(self, bootstrap: str, source: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.source = bootstrap, source
        self.stopping = threading.Event()
        self.rounds = 0

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            batch = []
            for _ in range(5):
                n += 1
                batch.append(student(self.source, n))
            bad = student(self.source, n, grade=99)
            batch += [bad, batch[0]]  # a dead letter and a repeated event_id
            produce_raw(self.bootstrap, f"ingest.{self.source}", [(e["key"].encode(), encode(e)) for e in batch])
            self.rounds += 1
            self.stopping.wait(1.0)


@pytest.fixture(scope="module")
def running_hub(local_stack, tmp_path_factory):
    """A worker (Kafka and HTTP subscribers), a connector runtime with an HTTP ingest connector, a
    receiver that sometimes fails and always refuses one learner, and traffic — for the whole module."""
    tmp = tmp_path_factory.mktemp("operators")
    source, portal = f"it-{uuid.uuid4().hex[:8]}", f"it-{uuid.uuid4().hex[:8]}"
    subscriber, feed = f"ops-hook-{source}", f"ops-feed-{source}"
    refused_key = "031309100003"
    calls = Counter()

    def answer(body: dict) -> int:
        calls["all"] += 1
        if body["key"] == refused_key:
            return 422
        return 500 if calls["all"] % 4 == 0 else 200

    receiver = Receiver(RECEIVER_PORT, SUB_SECRET.encode(), answer).start()
    extra = {
        "connect": {"port": CONNECT_PORT, "offsets_topic": f"{source}.connect-offsets"},
        "connectors": [{"name": f"portal-{portal}", "kind": "http", "source": portal, "port": INGEST_PORT,
                        "secret_env": "EDUHUB_TEST_HTTP_SECRET"}],
    }
    subscriptions = [
        {"id": feed, "entities": ["*"], "pii_default": "keep"},
        {"id": subscriber, "entities": ["school.student"], "pii_default": "keep",
         "delivery": {"kind": "http", "url": receiver.url, "secret_env": "EDUHUB_TEST_SUB_SECRET", "max_attempts": 2,
                      "backoff_initial_s": 0.05, "backoff_max_s": 0.2}},
    ]
    config_path = write_config(tmp / "hub.yaml", local_stack, [source, portal], web_port=WORKER_PORT,
                               instance_id=f"it-ops-{uuid.uuid4().hex[:6]}", subscriptions=subscriptions, extra=extra)
    env = {**os.environ, "EDUHUB_CONFIG": str(config_path), "EDUHUB_PSEUDONYM_KEY": KEY,
           "EDUHUB_TEST_SUB_SECRET": SUB_SECRET, "EDUHUB_TEST_HTTP_SECRET": HTTP_SECRET}
    # WorkerProcess passes os.environ on: set the worker's secrets there for the module, then put it back.
    environment = pytest.MonkeyPatch()  # module-scoped: undone in the finally below
    for name in ("EDUHUB_PSEUDONYM_KEY", "EDUHUB_TEST_SUB_SECRET"):
        environment.setenv(name, env[name])
    worker = WorkerProcess(config_path, tmp / "worker.log")
    connect = Child("connect", [sys.executable, "-m", "hub", "connect"], env, tmp / "connect.log")
    traffic = Traffic(local_stack.bootstrap_servers, source)
    try:
        worker.start()
        connect.wait_ready(f"http://127.0.0.1:{CONNECT_PORT}/readyz")
        body = json.dumps(student(portal, 1)).encode()
        answer_ = httpx.post(f"http://127.0.0.1:{INGEST_PORT}/ingest/{portal}", content=body, timeout=30,
                             headers={"Content-Type": "application/json", **signed_headers(HTTP_SECRET.encode(),
                                                                                          int(time.time()), body)})
        assert answer_.status_code == 202, answer_.text
        traffic.start()
        yield {"worker": worker, "connect_port": CONNECT_PORT, "source": source, "subscriber": subscriber,
               "tmp": tmp}
    finally:
        traffic.stopping.set()
        if traffic.is_alive():
            traffic.join(30)
        connect.stop()
        worker.stop()
        receiver.stop()
        environment.undo()


def test_every_dashboard_and_alert_expression_returns_data_from_a_real_prometheus(running_hub):
    binary = _need("prometheus")
    tmp: Path = running_hub["tmp"]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy" / "prometheus" / "rules" / "eduhub-alerts.yml")],
        "scrape_configs": [
            {"job_name": "eduhub-worker", "static_configs": [{"targets": [f"127.0.0.1:{WORKER_PORT}"]}]},
            {"job_name": "eduhub-connect", "static_configs": [{"targets": [f"127.0.0.1:{CONNECT_PORT}"]}]},
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = Child("prometheus", [binary, f"--config.file={tmp / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={tmp / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"], dict(os.environ),
                       tmp / "prometheus.log")
    api = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1"
    try:
        prometheus.wait_ready(f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready")
        expressions = promql_expressions()
        assert len(expressions) >= 20

        def empty() -> list[str]:
            missing = []
            for where, expr in expressions:
                result = httpx.get(f"{api}/query", params={"query": expr}, timeout=10).json()
                assert result["status"] == "success", (where, expr, result)
                if not result["data"]["result"]:
                    missing.append(f"{where}: {expr}")
            return missing

        # Rates need two scrapes of a series, and some series appear only once their first event passed.
        wait_until(lambda: not empty(), bound_s=180, interval_s=3)
        assert empty() == []
        rules = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} >= {"EduhubConnectorDown", "EduhubDlqRateHigh"}
        assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
    finally:
        prometheus.stop()


def test_the_status_page_shows_live_rates_and_switches_language_in_headless_chromium(running_hub):
    chromium, driver_path = _need("chromium"), _need("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--window-size=1400,1000", "--lang=vi-VN"):
        options.add_argument(flag)
    # The Debian driver, named explicitly: Selenium Manager would otherwise try to download one.
    browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    url = running_hub["worker"].url + "/"
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 120, poll_frequency=0.5)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "vi"  # Vietnamese by default
        title_vi = browser.find_element(By.ID, "title").text
        assert "Trạng thái" in title_vi

        def value(selector: str) -> float:
            return float(browser.find_element(By.CSS_SELECTOR, selector).get_attribute("data-value") or 0)

        wait.until(lambda b: value("#hub-ingest-rate") > 0 and value("#hub-delivered-rate") > 0)
        source = running_hub["source"]
        wait.until(lambda b: value(f'[data-source="{source}"] .rate') > 0)
        assert value("#hub-dlq-total") > 0
        connector = browser.find_element(By.CSS_SELECTOR, "[data-connector]")
        assert connector.get_attribute("data-state") == "RUNNING"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "status-page-vi.png"))

        browser.find_element(By.ID, "lang-toggle").click()
        wait.until(lambda b: b.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en")
        assert "status" in browser.find_element(By.ID, "title").text.lower()
        browser.refresh()  # the choice is remembered
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
        browser.save_screenshot(str(ARTIFACTS / "status-page-en.png"))
        assert (ARTIFACTS / "status-page-en.png").stat().st_size > 10_000
        # No request left the machine: every resource the page loaded came from the hub itself.
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(r.startswith(running_hub["worker"].url) for r in resources), resources
    finally:
        browser.quit()


def test_health_and_readiness_of_the_worker_and_the_connector_runtime(running_hub):
    worker = running_hub["worker"].url
    connect = f"http://127.0.0.1:{running_hub['connect_port']}"
    assert httpx.get(f"{connect}/healthz", timeout=10).json() == {"status": "ok"}
    # The worker's liveness names each running stage whose loop is turning.
    assert httpx.get(f"{worker}/healthz", timeout=10).json() == {
        "status": "ok", "stages": {"validate": True, "route": True, "deliver": True}}
    ready = httpx.get(f"{worker}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"broker": True, "registry": True, "validate_stage": True,
                                      "partitions_assigned": True, "route_stage": True, "http_delivery": True}
    ready = httpx.get(f"{connect}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"] == {"broker": True}
    assert set(ready.json()["connectors"].values()) == {"RUNNING"}
