"""The viewer inside a real Airflow API server: behind Airflow's login, in Airflow's UI.

Starts ``airflow api-server`` and ``airflow dag-processor`` (so the ise_refresh DAG and its
tasks have pages) on 127.0.0.1 with this repository's plugins and the viewer project's
params, and stops both afterwards.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.dags.airflow_env import BIN, api_server_env, migrate_airflow_db
from tests.viewer import browser
from tests.viewer.conftest import Project
from tests.viewer.servers import free_port, get, running

pytestmark = pytest.mark.slow

PASSWORD = "viewer-" + secrets.token_hex(8)
VIEWER = "/ise-viewer"
# Every kind of route the app has: pages, a plot, a static file, the Airflow tab routes.
ROUTES = [
    "/",
    "/episodes",
    "/episodes?status=kept",
    "/gates/trajectories",
    "/compare",
    "/plots/plots/user_turns.png",
    "/static/viewer.js",
    "/static/viewer.css",
    "/dag/ise_refresh",
    "/task/ise_refresh/gate_sft",
]


@dataclass(frozen=True)
class Airflow:
    url: str
    token: str
    project: Project


def _token(url: str) -> str:
    request = urllib.request.Request(
        url + "/auth/token",
        data=json.dumps({"username": "admin", "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.load(response)["access_token"])


@pytest.fixture(scope="module")
def airflow(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    migrate_airflow_db()
    logs = tmp_path_factory.mktemp("airflow-viewer")
    port = free_port()
    env = api_server_env(project.params, logs, port, PASSWORD)
    url = f"http://127.0.0.1:{port}"
    api = [str(BIN / "airflow"), "api-server"]
    parser = [str(BIN / "airflow"), "dag-processor"]
    with (
        running(api, env, project.root, logs / "api-server.log", url + "/api/v2/version", 240),
        running(parser, env, project.root, logs / "dag-processor.log", url + "/api/v2/version", 60),
    ):
        token = _token(url)
        deadline = time.monotonic() + 240
        auth = {"Authorization": f"Bearer {token}"}
        while get(url + "/api/v2/dags/ise_refresh", auth)[0] != 200:
            assert time.monotonic() < deadline, (logs / "dag-processor.log").read_text()[-4000:]
            time.sleep(2)
        yield Airflow(url, token, project)


def test_every_route_refuses_a_request_without_an_airflow_login(airflow: Airflow) -> None:
    for route in ROUTES:
        status, body = get(airflow.url + VIEWER + route)
        assert status == 401, (route, status)
        assert "Not authenticated" in body and airflow.project.planted_id not in body
        status, _ = get(airflow.url + VIEWER + route, {"Authorization": "Bearer not.a.token"})
        assert status in (401, 403), (route, status)
        status, _ = get(airflow.url + VIEWER + route, {"Cookie": "_token=forged"})
        assert status in (401, 403), (route, status)


def test_a_logged_in_user_gets_every_route(airflow: Airflow) -> None:
    for route in ROUTES:
        status, body = get(airflow.url + VIEWER + route, {"Cookie": f"_token={airflow.token}"})
        assert status in (200, 303), (route, status, body[:500])
    status, body = get(airflow.url + VIEWER + "/", {"Authorization": f"Bearer {airflow.token}"})
    assert status == 200 and "Run overview" in body
    # The gate task's tab leads to that gate's results.
    status, _ = get(
        airflow.url + VIEWER + "/task/ise_refresh/gate_trajectories",
        {"Cookie": f"_token={airflow.token}"},
    )
    assert status == 303


def test_the_plugin_adds_the_navigation_entry_and_the_dag_and_task_tabs(airflow: Airflow) -> None:
    status, body = get(
        airflow.url + "/api/v2/plugins", {"Authorization": f"Bearer {airflow.token}"}
    )
    assert status == 200
    plugin = next(p for p in json.loads(body)["plugins"] if p["name"] == "ise_viewer")
    views = {view["destination"]: view for view in plugin["external_views"]}
    assert set(views) == {"nav", "dag", "task"}
    assert views["task"]["href"] == "ise-viewer/task/{DAG_ID}/{TASK_ID}"
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == [VIEWER]


def _frame_heading(driver: Any) -> str:
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(
        ec.frame_to_be_available_and_switch_to_it(("css selector", "iframe"))
    )
    try:
        heading = WebDriverWait(driver, 30).until(
            ec.presence_of_element_located(("css selector", "h1, h3"))
        )
        return str(heading.text)
    finally:
        driver.switch_to.default_content()


def test_in_the_browser_the_login_decides(driver: Any, airflow: Airflow) -> None:
    driver.get(airflow.url + VIEWER + "/")
    assert "401" in driver.title and "Not authenticated" in driver.page_source
    assert airflow.project.planted_id not in driver.page_source
    browser.screenshot(driver, "airflow-unauthenticated", full=False)

    # Signed in: the UI's session cookie is what the browser sends to the mounted viewer.
    driver.add_cookie({"name": "_token", "value": airflow.token, "path": "/"})
    driver.get(airflow.url + VIEWER + "/")
    assert driver.title.startswith("Overview")

    driver.get(airflow.url + "/plugin/ise-viewer")  # the navigation entry: the viewer framed
    assert _frame_heading(driver).startswith("Run overview")
    browser.screenshot(driver, "airflow-navigation", full=False)

    driver.get(airflow.url + "/dags/ise_refresh/tasks/gate_trajectories/plugin/ise-viewer-task")
    assert _frame_heading(driver).startswith("gate trajectories")
    browser.screenshot(driver, "airflow-gate-task-tab", full=False)

    driver.get(airflow.url + "/dags/ise_refresh/plugin/ise-viewer-dag")
    assert _frame_heading(driver).startswith("Run overview")
    driver.delete_all_cookies()


def test_the_viewer_follows_the_params_variable_the_dag_uses(
    airflow: Airflow, older_version: Path
) -> None:
    """Set in the UI, the ``ise_params`` Variable points the DAG's tasks at another params
    file; the viewer then shows that run's data too."""
    params = older_version.parent / "params.yaml"
    params.write_text("seed: 7\n", encoding="utf-8")  # every stage folder under ./data
    auth = {"Authorization": f"Bearer {airflow.token}", "Content-Type": "application/json"}
    body = json.dumps({"key": "ise_params", "value": str(params)}).encode()
    request = urllib.request.Request(
        airflow.url + "/api/v2/variables", data=body, headers=auth, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
    try:
        episodes = len(list((older_version / "trajectories" / "episodes").glob("*.json")))
        status, page = get(airflow.url + VIEWER + "/episodes", auth)
        assert status == 200 and f"of {episodes} episodes match" in page
    finally:
        delete = urllib.request.Request(
            airflow.url + "/api/v2/variables/ise_params", headers=auth, method="DELETE"
        )
        with urllib.request.urlopen(delete, timeout=30) as response:
            assert response.status == 204
    status, page = get(airflow.url + VIEWER + "/episodes", auth)
    current = len(list((airflow.project.root / "data/trajectories/episodes").glob("*.json")))
    assert status == 200 and f"of {current} episodes match" in page
