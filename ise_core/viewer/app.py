"""The viewer's web app: server-rendered pages over one or more data roots.

``create_app(roots)`` returns a FastAPI app that ``ise view`` serves on 127.0.0.1 and the
Airflow plugin mounts inside the Airflow UI. It only reads: every file comes through
``DataRoot.file``; the data root a page shows is chosen by *name* among those it was given,
never by a path in the URL.

Safety:
- Jinja2 autoescaping is on for every template, so model and tool text (a ``<script>`` in a
  tool output included) renders as text.
- Every response carries a Content-Security-Policy that allows only this app's own script
  and style files: even text that escaped the escaping could not run.
- ``dependencies`` are attached to every route (the Airflow plugin passes its
  authentication there); static files are served by a route too, not a mount, so nothing
  is reachable without them. The OpenAPI and docs pages are off.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.exceptions import HTTPException

from ise_core.errors import ISEError
from ise_core.viewer import views
from ise_core.viewer.data import DataRoot, NotInRoot, episode_index
from ise_core.viewer.listing import COUNT_FILTERS, PAGE_SIZES, SORT_KEYS, EpisodeQuery

HERE = Path(__file__).resolve().parent
STATIC = {
    "viewer.css": "text/css; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "SAMEORIGIN",
    "Cache-Control": "no-store",
}
# Where an Airflow task's "ISE viewer" tab leads: the gate's results or the stage's data.
TASK_PAGES = {
    "gate_intents": "/gates/intents",
    "gate_trajectories": "/gates/trajectories",
    "gate_sft": "/gates/sft",
    "simulate": "/episodes",
    "collect": "/episodes",
}

Roots = Callable[[], Mapping[str, DataRoot]]


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = views.format_value
    return env


class Pages:
    """Renders templates with the helpers every page uses (links relative to the mount)."""

    def __init__(self, roots: Roots, dag_id: str) -> None:
        self.roots = roots
        self.dag_id = dag_id
        self.env = _environment()
        for template in (HERE / "templates").glob("*.html"):
            self.env.get_template(template.name)  # compiled now, not on a first request
        self.static = {name: (HERE / "static" / name).read_bytes() for name in STATIC}

    def available(self, request: Request) -> Mapping[str, DataRoot]:
        """The data roots, read once per request (in Airflow that reads a Variable and
        the params file)."""
        if not hasattr(request.state, "roots"):
            request.state.roots = self.roots()
        roots: Mapping[str, DataRoot] = request.state.roots
        return roots

    def root(self, request: Request, param: str = "root") -> DataRoot:
        available = self.available(request)
        name = request.query_params.get(param) or next(iter(available), "")
        if name not in available:
            raise HTTPException(404, f"no data root named {name!r}")
        return available[name]

    def render(
        self,
        request: Request,
        template: str,
        status: int = 200,
        *,
        show_roots: bool = True,
        **context: Any,
    ) -> HTMLResponse:
        prefix = request.scope.get("root_path", "").rstrip("/")

        def link(path: str, **params: Any) -> str:
            query = {k: v for k, v in params.items() if v not in (None, "")}
            suffix = "?" + urllib.parse.urlencode(query) if query else ""
            return prefix + path + suffix

        roots: list[str] = []
        if show_roots:  # not for a refused request: it learns nothing of the data
            with contextlib.suppress(ISEError):  # a bad params file: the page says why
                roots = list(self.available(request))
        html = self.env.get_template(template).render(
            link=link, roots=roots, request_root=request.query_params.get("root", ""), **context
        )
        return HTMLResponse(html, status_code=status)


def _security_headers(app: FastAPI) -> None:
    @app.middleware("http")
    async def add_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def _error_pages(app: FastAPI, pages: Pages) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        response = pages.render(
            request,
            "error.html",
            status=exc.status_code,
            show_roots=exc.status_code not in (401, 403),
            code=exc.status_code,
            message=str(exc.detail),
        )
        if headers:
            response.headers.update(headers)
        return response

    @app.exception_handler(NotInRoot)
    async def not_found(request: Request, exc: NotInRoot) -> Response:
        return pages.render(
            request, "error.html", status=404, code=404, message="not found in the data root"
        )

    @app.exception_handler(ISEError)
    async def bad_data(request: Request, exc: ISEError) -> Response:
        return pages.render(request, "error.html", status=500, code=500, message=str(exc))


def create_app(
    roots: Roots | Mapping[str, DataRoot],
    *,
    dependencies: Sequence[Depends] = (),
    title: str = "ISE viewer",
    dag_id: str = "ise_refresh",
) -> FastAPI:
    """The viewer over ``roots`` (name → DataRoot, or a callable returning them, read on
    each request so a changed params file is picked up); the first root is the default.
    ``dag_id`` is the Airflow DAG whose tabs link here."""
    if callable(roots):
        provider: Roots = roots
    else:
        fixed = dict(roots)
        provider = lambda: fixed  # noqa: E731
    app = FastAPI(
        title=title,
        dependencies=list(dependencies),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    pages = Pages(provider, dag_id)
    app.state.pages = pages
    _security_headers(app)
    _error_pages(app, pages)
    _routes(app, pages)
    return app


def _routes(app: FastAPI, pages: Pages) -> None:
    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        root = pages.root(request)
        return pages.render(request, "overview.html", root=root, view=views.overview(root))

    @app.get("/episodes", response_class=HTMLResponse)
    def episodes(request: Request) -> HTMLResponse:
        root = pages.root(request)
        index = episode_index(root)
        query = EpisodeQuery.from_params(request.query_params)
        return pages.render(
            request,
            "episodes.html",
            root=root,
            index=index,
            query=query,
            page=index.page(query),
            sort_keys=SORT_KEYS,
            count_filters=COUNT_FILTERS,
            page_sizes=PAGE_SIZES,
        )

    @app.get("/episodes/{intent_id}", response_class=HTMLResponse)
    def episode(request: Request, intent_id: str) -> HTMLResponse:
        root = pages.root(request)
        return pages.render(
            request, "episode.html", root=root, view=views.episode_page(root, intent_id)
        )

    @app.get("/gates/{stage}", response_class=HTMLResponse)
    def gate(request: Request, stage: str) -> HTMLResponse:
        if stage not in views.GATE_STAGES:
            raise NotInRoot(stage)
        root = pages.root(request)
        return pages.render(request, "gate.html", root=root, gate=views.gate_view(root, stage))

    @app.get("/compare", response_class=HTMLResponse)
    def compare(request: Request) -> HTMLResponse:
        available = list(pages.available(request))
        a = pages.root(request, "a")
        b_name = request.query_params.get("b") or (available[1] if len(available) > 1 else a.name)
        b = pages.available(request).get(b_name)
        if b is None:
            raise HTTPException(404, f"no data root named {b_name!r}")
        view = views.compare(a, b) if a.name != b.name else None
        return pages.render(request, "compare.html", a=a, b=b, view=view, names=available)

    @app.get("/eval", response_class=HTMLResponse)
    def eval_runs(request: Request) -> HTMLResponse:
        """The eval runs of the root, and two of them side by side (chosen by run name)."""
        root = pages.root(request)
        params = request.query_params
        view = views.eval_page(root, params.get("a") or None, params.get("b") or None)
        return pages.render(request, "eval.html", root=root, view=view)

    @app.get("/plots/{stage}/{name}")
    def plot(request: Request, stage: str, name: str) -> Response:
        if stage not in ("plots", "intents") or not name.endswith(".png"):
            raise NotInRoot(name)
        path = pages.root(request).file(stage, name)  # type: ignore[arg-type]
        return Response(path.read_bytes(), media_type="image/png")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise NotInRoot(name)
        return Response(pages.static[name], media_type=STATIC[name])

    @app.get("/dag/{dag_id}", response_model=None)
    def dag(request: Request, dag_id: str) -> Response:
        """The page for an Airflow DAG's tab: the run overview of the refresh DAG."""
        return _airflow_tab(request, pages, dag_id, "/")

    @app.get("/task/{dag_id}/{task_id}", response_model=None)
    def task(request: Request, dag_id: str, task_id: str) -> Response:
        """The page for an Airflow task's tab: a gate's results or its stage's data."""
        return _airflow_tab(request, pages, dag_id, TASK_PAGES.get(task_id, "/"))


def _airflow_tab(request: Request, pages: Pages, dag_id: str, target: str) -> Response:
    if dag_id != pages.dag_id:
        return pages.render(
            request,
            "error.html",
            status=404,
            code=404,
            message=f"This tab shows the data of the {pages.dag_id} DAG; {dag_id} has none.",
        )
    path, _, anchor = target.partition("#")
    prefix = request.scope.get("root_path", "").rstrip("/")
    return RedirectResponse(prefix + path + ("#" + anchor if anchor else ""), status_code=303)


__all__ = ["STATIC", "TASK_PAGES", "Roots", "create_app"]
