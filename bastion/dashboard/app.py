"""The dashboard's application, mounted at /dashboard on the FastAPI side of Bastion (never in front of
the `/v1` routes, which do not pass through it): its pages, its static files, its error pages, and the
security headers on every answer."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from bastion.billing.live import RedisLive
from bastion.dashboard import account_pages, keys_pages, members_pages, operator_pages, signin
from bastion.dashboard.context import Dashboard, PageError, SignInRequired, dashboard_of
from bastion.dashboard.instance import Instance, gateway_state
from bastion.dashboard.links import served_over_https
from bastion.dashboard.render import STATIC, Renderer
from bastion.dashboard.security import FormRefused, SecurityHeaders
from bastion.dashboard.throttle import Limits, MemoryThrottle, RedisThrottle, Throttle
from bastion.errors import ApiError, not_found
from bastion.services import Services

log = logging.getLogger("bastion.dashboard")


def build_dashboard(instance: Instance, services: Services) -> Any:
    settings = services.settings
    limits = Limits(
        settings.signin_failures_per_email,
        settings.signin_failures_per_address,
        settings.signin_window_seconds,
    )
    throttle: Throttle = (
        RedisThrottle(services.live.redis, settings.redis_prefix, limits)
        if isinstance(services.live, RedisLive)
        else MemoryThrottle(limits)
    )
    https = served_over_https(settings)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.dashboard = Dashboard(
        settings,
        services.management,
        services.live,
        services.periods,
        throttle,
        Renderer(),
        lambda: instance.catalog,
        lambda: gateway_state(instance),
        https,
    )
    for module in (signin, account_pages, keys_pages, members_pages, operator_pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _error_pages(app)
    return SecurityHeaders(app, https)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") or request.method == "POST"


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    if not _wants_html(request):  # a script or an API client: OpenAI's envelope, as everywhere else
        error = (
            not_found(request.url.path)
            if status == 404
            else ApiError(status, "invalid_request", "invalid_request_error", message)
        )
        return Response(error.body(), status_code=status, media_type="application/json")
    renderer = dashboard_of(request).renderer
    return renderer.html("error.html", {"title": title, "message": message, "status": status}, status)


def _error_pages(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, exc: SignInRequired) -> Response:
        if request.method != "GET":
            return RedirectResponse("/dashboard/signin", status_code=303)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/dashboard/signin?next={_quote(target)}", status_code=303)

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        return _error_page(request, exc.status, exc.title, exc.message)

    @app.exception_handler(FormRefused)
    async def form_refused(request: Request, exc: FormRefused) -> Response:
        return _error_page(request, exc.status, "Not done", exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _error_page(request, 404, "Not found", "There is no such page.")
        if exc.status_code == 405:
            return _error_page(request, 405, "Not allowed", f"{request.method} is not allowed here.")
        return _error_page(request, exc.status_code, "Error", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_input(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:])
        return _error_page(request, 400, "Bad request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("dashboard error path=%s", request.url.path, exc_info=exc)
        return _error_page(
            request, 500, "Something went wrong", "The error was logged. Nothing you typed is lost."
        )


def _quote(target: str) -> str:
    from urllib.parse import quote

    return quote(target, safe="/")
