"""The viewer in a real browser: ``ise view`` serving a real run, Debian's headless Chromium.

Each test saves a screenshot of the page it checked under ``test-artifacts/viewer/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.viewer import browser
from tests.viewer.conftest import Project
from tests.viewer.servers import free_port, ise_command, python_env, running

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def viewer_url(
    project: Project, older_version: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``ise view`` on the project, with the older version to compare; stopped afterwards."""
    port = free_port()
    log = tmp_path_factory.mktemp("ise-view") / "ise-view.log"
    argv = ise_command(
        "view",
        "--params",
        str(project.params),
        "--port",
        str(port),
        "--compare",
        f"older={older_version}",
    )
    url = f"http://127.0.0.1:{port}"
    with running(argv, python_env(), project.root, log, url + "/static/viewer.css", 120):
        yield url


def wait(driver: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def stats(project: Project, stage: str) -> dict[str, Any]:
    folder = {"intents": "intents", "trajectories": "trajectories", "sft": "sft"}[stage]
    return json.loads((project.root / "data" / folder / "stats.json").read_text())


def index_rows(project: Project) -> list[dict[str, Any]]:
    text = (project.root / "data/trajectories/episode_index.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_overview_shows_the_funnel_gates_and_plots(
    driver: Any, viewer_url: str, project: Project
) -> None:
    driver.get(viewer_url + "/")
    funnel = {
        step.get_attribute("data-step"): step.find_element("css selector", ".value").text
        for step in css(driver, ".funnel .step")
    }
    intents, trajectories, sft = (stats(project, s) for s in ("intents", "trajectories", "sft"))
    assert funnel == {
        "sampled": str(intents["n_sampled"]),
        "unique": str(intents["n_unique"]),
        "simulated": str(trajectories["n_episodes"]),
        "kept": str(trajectories["n_kept"]),
        "train": str(sft["n_train"]),
        "valid": str(sft["n_valid"]),
    }
    published = css(driver, "#published tbody tr")
    assert any("23,132" in row.text for row in published)  # the published figures beside ours
    # The trajectories gate failed on purpose: its failed expectation with value and bound.
    gate = css(driver, "#gate-trajectories")[0]
    assert "failed" in gate.find_element("css selector", "h3").text
    failed = gate.find_elements("css selector", "tr.failed")
    assert len(failed) == 1
    cells = [td.text for td in failed[0].find_elements("css selector", "td")]
    assert cells[1] == "mean user turns within bounds"
    assert float(cells[3]) == pytest.approx(trajectories["user_turns"]["mean"])
    assert cells[4] == "mean between 0.0 and 1.0" and cells[5] == "FAILED"
    held = css(driver, "#gate-intents tr.held")
    assert len(held) >= 10 and not css(driver, "#gate-intents tr.failed")
    images = css(driver, "#plots img")
    assert len(images) >= 3
    assert all(driver.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
    browser.screenshot(driver, "overview")


def test_the_list_filters_sorts_and_pages(driver: Any, viewer_url: str, project: Project) -> None:
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    rows = index_rows(project)
    driver.get(viewer_url + "/episodes")
    assert len(css(driver, "#episode-table tbody tr")) == len(rows)
    # Choosing a value applies the filter at once (the form submits itself).
    Select(css(driver, "select[name=status]")[0]).select_by_value("rejected")
    wait(driver, ec.url_contains("status=rejected"))
    badges = [b.text for b in css(driver, "#episode-table tbody tr td:nth-child(2) .badge")]
    assert badges == ["rejected"] * sum(1 for r in rows if r["status"] == "rejected") != []
    browser.screenshot(driver, "episodes-rejected")

    driver.get(viewer_url + "/episodes?compactions=any")
    assert [a.text for a in css(driver, "a.episode-link")] == [project.flagged_id]
    driver.get(viewer_url + "/episodes?text_tool_calls=none&sort=tool_calls&desc=1&per_page=2")
    shown = [int(td.text.split()[0]) for td in css(driver, "#episode-table tbody td:nth-child(9)")]
    assert (
        len(shown) == 2
        and shown
        == sorted((r["tool_calls"] for r in rows if not r["text_tool_calls"]), reverse=True)[:2]
    )
    css(driver, "#next-page")[0].click()
    wait(driver, ec.url_contains("page=2"))
    assert "page 2 of" in css(driver, ".pager")[0].text
    driver.get(viewer_url + "/episodes")
    browser.screenshot(driver, "episodes")


def test_an_episode_opens_from_the_list_and_a_tool_output_expands(
    driver: Any, viewer_url: str, project: Project
) -> None:
    from selenium.webdriver.support import expected_conditions as ec

    driver.get(viewer_url + "/episodes?status=kept")
    link = next(a for a in css(driver, "a.episode-link") if a.text == project.planted_id)
    link.click()
    wait(driver, ec.url_contains("/episodes/" + project.planted_id))
    episode = json.loads(
        (project.root / f"data/trajectories/episodes/{project.planted_id}.json").read_text()
    )
    assert css(driver, "#stop-reason")[0].text == episode["stop_reason"]
    assert css(driver, "#intent pre")[0].text.strip() == episode["messages"][1]["content"].strip()
    calls = sum(len(m.get("tool_calls") or []) for m in episode["messages"])
    assert len(css(driver, "#conversation .call")) == calls
    checks = css(driver, "#checks tr")
    assert len(checks) == len(episode["checks"])
    browser.screenshot(driver, "episode", full=False)
    browser.screenshot(driver, "episode-full")
    # A failed tool call is marked as an error, with its output in the error colour.
    errors = css(driver, ".call.error")
    assert len(errors) == sum(1 for m in episode["messages"] if m.get("success") is False)
    if errors:
        assert errors[0].find_element("css selector", ".badge.bad").text == "error"
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", errors[0])
        browser.screenshot(driver, "episode-tool-error", full=False)

    # The planted tool output is long, so it starts collapsed to its first lines.
    box = next(
        b
        for b in css(driver, ".call .collapsible")
        if "line 8 after the planted markup" in b.get_attribute("textContent")
    )
    full = box.find_element("css selector", "pre.full")
    assert not full.is_displayed()
    button = box.find_element("css selector", "button.toggle")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    assert full.is_displayed() and "line 8 after the planted markup" in full.text
    assert not box.find_element("css selector", "pre.preview").is_displayed()
    assert button.text == "collapse"
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", box)
    browser.screenshot(driver, "episode-tool-output-expanded", full=False)


def test_a_planted_script_is_shown_as_text_and_never_runs(
    driver: Any, viewer_url: str, project: Project
) -> None:
    driver.get(viewer_url + f"/episodes/{project.planted_id}")
    for button in css(driver, "button.toggle"):
        driver.execute_script("arguments[0].click()", button)  # every text open
    assert driver.execute_script("return window.__ise_planted === undefined")
    assert driver.title != "planted"
    # Shown as the characters the tool wrote...
    page = css(driver, "body")[0].text
    assert "<script>window.__ise_planted = 1; document.title = 'planted';</script>" in page
    assert '<img src="x" onerror="window.__ise_planted = 2">' in page
    # ...and nothing of it became an element: one script (the viewer's own), no such image.
    scripts = [s.get_attribute("src") for s in css(driver, "script")]
    assert len(scripts) == 1 and scripts[0].endswith("/static/viewer.js")
    assert css(driver, "img") == [] and css(driver, "b") == []
    marker = next(p for p in css(driver, "pre.full") if "__ise_planted" in p.text)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", marker)
    browser.screenshot(driver, "episode-planted-script", full=False)


def test_compare_lists_the_intents_that_changed_status(
    driver: Any, viewer_url: str, project: Project
) -> None:
    driver.get(viewer_url + "/compare?a=older&b=current")
    metrics = {
        row.find_elements("css selector", "td")[0].text: row.text
        for row in css(driver, "#metrics tbody tr")
    }
    assert "kept" in metrics and "episodes" in metrics
    changed = {
        row.find_elements("css selector", "td")[0].text
        for row in css(driver, "#changed-table tbody tr")
    }
    rows = index_rows(project)
    assert changed == {rows[0]["id"], rows[1]["id"], rows[-1]["id"]}  # see older_version
    assert "absent → " in css(driver, "#changed")[0].text
    browser.screenshot(driver, "compare")
