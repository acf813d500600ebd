"""The dashboard's pages. Everything is read from the runs folder at request time, so a ladder
running in another process shows up, and updates, without the dashboard knowing about it: a
running run's page refreshes itself every few seconds (a meta refresh; no script needed).

Security as `tailor serve`: loopback unless told otherwise, and then a key, compared in constant
time, given once as `?key=` (kept in an HttpOnly cookie) or as `Authorization: Bearer KEY`. Names
in paths are only ever direct children of the runs folder (or arms of that run)."""

from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from . import runs as R

REFRESH_S = 2
PAGE = 100
KEY_COOKIE = "tailor_ui_key"


def create_app(root: str | Path, api_key: str | None = None) -> FastAPI:
    root = Path(root)
    app = FastAPI(title="Tailor", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
    templates.env.filters["pct"] = lambda v: "" if v is None else f"{v:.0%}"
    templates.env.filters["num"] = lambda v, d=3: "" if v is None else f"{v:.{d}f}"
    templates.env.filters["clock"] = _clock

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if api_key is None:
            return await call_next(request)
        given = request.query_params.get("key") or request.cookies.get(KEY_COOKIE) or \
            request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            return HTMLResponse("<h1>401</h1><p>This dashboard needs its key: open it once as /?key=KEY.</p>", 401)
        response = await call_next(request)
        if request.query_params.get("key"):
            response.set_cookie(KEY_COOKIE, api_key, httponly=True, samesite="strict")
        return response

    def page(request: Request, name: str, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"root": str(root), **context})

    def find(name: str) -> tuple[Path, R.RunSummary]:
        try:
            path = R.run_path(root, name)
        except KeyError:
            raise HTTPException(404, f"no run named {name!r} in {root}") from None
        return path, R.summarise(path)

    @app.get("/", response_class=HTMLResponse)
    def runs_page(request: Request, task: str = ""):
        listed = R.list_runs(root)
        if task:
            listed = [r for r in listed if r.task == task]
        refresh = REFRESH_S if any(r.state == "running" for r in listed) else None
        return page(request, "runs.html", runs=listed, task=task, refresh=refresh)

    @app.get("/run/{name}", response_class=HTMLResponse)
    def run_page(request: Request, name: str):
        path, run = find(name)
        curation = R.read_json(path / "curation.json", [])
        return page(request, "run.html", run=run, refresh=REFRESH_S if run.state == "running" else None,
                    has_report=(path / "report.html").is_file(), curation=curation)

    @app.get("/run/{name}/report")
    def report(name: str):
        path, _ = find(name)
        if not (path / "report.html").is_file():
            raise HTTPException(404, f"run {name!r} has no report.html")
        return FileResponse(path / "report.html", media_type="text/html")

    @app.get("/run/{name}/predictions/{arm}", response_class=HTMLResponse)
    def predictions_page(request: Request, name: str, arm: str, wrong: bool = False, label: str = "", q: str = "",
                         sort: str = Query("", pattern="^(|score)$"), offset: int = Query(0, ge=0, le=10**9)):
        path, run = find(name)
        try:
            file = R.predictions_file(path, arm, run)
        except KeyError:
            raise HTTPException(404, f"run {name!r} has no arm {arm!r}") from None
        got = R.predictions(file, wrong=wrong, label=label, text=q, sort=sort, offset=offset, limit=PAGE)
        return page(request, "predictions.html", run=run, arm=arm, page=got, wrong=wrong, label=label, q=q,
                    sort=sort, offset=offset, size=PAGE)

    @app.get("/compare", response_class=HTMLResponse)
    def compare(request: Request, task: str):
        same = [r for r in R.list_runs(root) if r.task == task and r.arms]
        names = sorted({a.name for r in same for a in r.arms})
        table = {(r.name, a.name): a for r in same for a in r.arms}
        return page(request, "compare.html", task=task, runs=same, arms=names, table=table)

    @app.get("/api/runs")
    def api_runs():
        return [{"name": r.name, "command": r.command, "task": r.task, "model": r.model, "state": r.state,
                 "started": r.started, "wall_s": r.wall_s, "best": r.best and r.best.name,
                 "best_value": r.best and r.best.value, "best_interval": r.best and r.best.interval}
                for r in R.list_runs(root)]

    @app.get("/api/run/{name}/status")
    def api_status(name: str):
        path, run = find(name)
        return JSONResponse({"state": run.state, "live": run.live, "arms": [a.__dict__ for a in run.arms]})

    @app.get("/favicon.ico")
    def favicon():   # browsers ask for one; an empty answer keeps the console clean
        return Response(status_code=204)

    return app


def _clock(seconds) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
