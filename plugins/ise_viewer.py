"""The ISE viewer inside the Airflow UI: the app of ``ise view``, behind Airflow's login.

- ``fastapi_apps`` mounts it at ``/ise-viewer`` on the API server.
- ``external_views`` add "ISE viewer" to the navigation, an "ISE data" tab on the DAG's page
  and an "ISE data" tab on each task's page (the gate tasks' tabs open that gate's results,
  simulate's and collect's the episode list).

Airflow does not authenticate plugin apps: a mounted app inherits none of the core API's
dependencies. Every route of this one therefore depends on ``require_dag_reader``, which
reads the user from Airflow's JWT (the UI's ``_token`` cookie or an ``Authorization:
Bearer`` header, through Airflow's own ``get_user``) and asks the configured auth manager
whether that user may read the ``ise_refresh`` DAG: no user is a 401, a user without that
permission a 403.

The data shown is the run's of the params file the DAG uses: the Airflow Variable
``ise_params`` when set, else ``$AIRFLOW_VAR_ISE_PARAMS`` or ``$ISE_PARAMS``, else
``params.yaml`` in the project. ``$ISE_VIEW_COMPARE`` may name a second data root (a data
folder, project folder or params file) for the compare page.

The app is built on the first request: other Airflow components load plugins too, and they
need none of it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

PROJECT_DIR = Path(__file__).resolve().parent.parent
DAG_ID = "ise_refresh"
URL_PREFIX = "/ise-viewer"
PARAMS_VARIABLE = "ise_params"
COMPARE_ENV = "ISE_VIEW_COMPARE"


def _params_variable() -> str | None:
    try:
        from airflow.models.variable import Variable

        value = Variable.get(PARAMS_VARIABLE, default_var=None)
    except Exception:  # no metadata database reachable: the environment decides
        return None
    return str(value) if value else None


def data_roots() -> dict[str, Any]:
    """The data roots to show, re-read on each request (params may change between runs)."""
    from ise_core import pipeline
    from ise_core.viewer.data import DataRoot

    explicit = _params_variable() or os.environ.get("AIRFLOW_VAR_ISE_PARAMS")
    params = pipeline.resolve_params_path(explicit, PROJECT_DIR)
    roots = {"current": DataRoot.from_settings("current", pipeline.load_settings(params))}
    compare = os.environ.get(COMPARE_ENV)
    if compare:
        roots["compare"] = DataRoot.from_path("compare", Path(compare))
    return roots


def build_app() -> Any:
    """The viewer app with Airflow's authentication and DAG-read authorization on every route."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, HTTPException

    from ise_core.viewer.app import create_app

    # A default of Depends(...) rather than an Annotated alias: this module's annotations are
    # strings, and FastAPI could not resolve an alias imported inside this function.
    def require_dag_reader(user: Any = Depends(get_user)) -> None:  # noqa: B008
        allowed = get_auth_manager().is_authorized_dag(
            method="GET", details=DagDetails(id=DAG_ID), user=user
        )
        if not allowed:
            raise HTTPException(403, f"reading the {DAG_ID} DAG is not permitted for this user")

    app = create_app(data_roots, dependencies=[Depends(require_dag_reader)], dag_id=DAG_ID)
    threading.Thread(target=_warm, name="ise-viewer-warm", daemon=True).start()
    return app


def _warm() -> None:
    """Read the episode index and intent offsets in the background, so the first list and
    episode pages do not wait for them (seconds at 50,000 episodes)."""
    from ise_core.viewer.data import warm

    try:
        for root in data_roots().values():
            warm(root)
    except Exception:  # a missing or bad file: the page that needs it says so
        return


class LazyViewer:
    """An ASGI app that builds the viewer on its first request."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = build_app()
        await self._app(scope, receive, send)

    def __repr__(self) -> str:  # shown by `airflow plugins` and the plugins API
        return "ise_core.viewer.app (built on first request)"


VIEWER = LazyViewer()


class ISEViewerPlugin(AirflowPlugin):
    name = "ise_viewer"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": VIEWER, "url_prefix": URL_PREFIX, "name": "ISE viewer"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "ISE viewer",
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "url_route": "ise-viewer",
        },
        {
            "name": "ISE data",
            "href": URL_PREFIX.lstrip("/") + "/dag/{DAG_ID}",
            "destination": "dag",
            "url_route": "ise-viewer-dag",
        },
        {
            "name": "ISE data",
            "href": URL_PREFIX.lstrip("/") + "/task/{DAG_ID}/{TASK_ID}",
            "destination": "task",
            "url_route": "ise-viewer-task",
        },
    ]
