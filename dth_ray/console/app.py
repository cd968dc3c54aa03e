"""`dth-ray console`'s HTTP server (aiohttp): GET-only routes over data.py's reads of the manifest, HTML pages,
their live parts and the same data as JSON. Every response carries a strict Content-Security-Policy (only this
server's own script, style and SVG; no framing). On loopback without a token, requests must name a loopback
host (a web page elsewhere cannot reach it through DNS rebinding); with `console.token` every request needs
the token: `Authorization: Bearer <token>`, or once `?token=<token>` in the URL, which sets an HttpOnly cookie
and redirects to the same URL without it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib.resources
import json
import logging
import signal
import socket
import sqlite3
import sys
from urllib.parse import urlencode

from aiohttp import web

from dth_ray.config import is_loopback
from dth_ray.console import views
from dth_ray.console.data import Reader
from dth_ray.errors import DthError
from dth_ray.settings import Settings

log = logging.getLogger(__name__)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
COOKIE = "dth_console"
_STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
_MAX_KEY_CHARS = 2048

READER, TOKEN, LOOPBACK = web.AppKey("reader", Reader), web.AppKey("token", str), web.AppKey("loopback", bool)


def _cookie_value(token: str) -> str:
    """What the cookie holds: derived from the token, so the browser never stores the token itself."""
    return hmac.new(token.encode(), b"dth-ray console cookie", hashlib.sha256).hexdigest()


def _host_is_loopback(host: str) -> bool:
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return is_loopback(name)


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _refuse(request: web.Request, status: int, text: str) -> web.Response:
    if _wants_json(request):
        return web.json_response({"error": text}, status=status)
    return web.Response(status=status, text=views.message_page("Refused" if status != 404 else "Not found", text),
                        content_type="text/html")


@web.middleware
async def guard(request: web.Request, handler):
    """GET/HEAD only; the loopback host check or the token (see the module docstring)."""
    if request.method not in ("GET", "HEAD"):
        return _refuse(request, 405, "This console is read-only.")
    token = request.app[TOKEN]
    if not token:
        if request.app[LOOPBACK] and request.host and not _host_is_loopback(request.host):
            return _refuse(request, 403, "This console answers only to a loopback host name (127.0.0.1, localhost).")
        return await handler(request)
    given = request.query.get("token", "")
    if given and hmac.compare_digest(given.encode(), token.encode()):
        rest = {k: v for k, v in request.query.items() if k != "token"}
        target = request.path + ("?" + urlencode(rest) if rest else "")
        response = web.HTTPSeeOther(target)
        response.set_cookie(COOKIE, _cookie_value(token), httponly=True, samesite="Strict", path="/")
        return response
    auth = request.headers.get("Authorization", "")
    bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    cookie = request.cookies.get(COOKIE, "")
    if (bearer and hmac.compare_digest(bearer.encode(), token.encode())) or (
            cookie and hmac.compare_digest(cookie.encode(), _cookie_value(token).encode())):
        return await handler(request)
    response = _refuse(request, 401, "This console needs its token: open the URL `dth-ray console` printed, or "
                                     "send Authorization: Bearer <token>.")
    response.headers["WWW-Authenticate"] = 'Bearer realm="dth-ray console"'
    return response


@web.middleware
async def manifest_errors(request: web.Request, handler):
    """A manifest that cannot be read (DynamoDB unreachable, a locked or damaged file) is a 503 line."""
    try:
        return await handler(request)
    except (DthError, sqlite3.Error) as exc:
        log.warning("console: reading the manifest failed: %s", type(exc).__name__)
        return _refuse(request, 503, f"The manifest cannot be read now ({type(exc).__name__}); retrying.")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def _job_args(request: web.Request) -> tuple[str, int, str]:
    job = request.query.get("job", "")
    after = request.query.get("after", "")[:_MAX_KEY_CHARS]
    try:
        run = int(request.query.get("run", "0") or 0)
    except ValueError:
        raise web.HTTPBadRequest(text="run must be a number") from None
    return job, run, after


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html")


async def jobs_page(request: web.Request) -> web.Response:
    reader = request.app[READER]
    return _html(views.jobs_page(await asyncio.to_thread(reader.jobs), reader.clock()))


async def jobs_part(request: web.Request) -> web.Response:
    reader = request.app[READER]
    return _html(views.jobs_part(await asyncio.to_thread(reader.jobs), reader.clock()))


async def _job(request: web.Request) -> dict:
    job, run, after = _job_args(request)
    found = await asyncio.to_thread(request.app[READER].job, job, run, after)
    if found is None:
        raise web.HTTPNotFound(text=f"No job {job!r} in this manifest.")
    return found


async def job_page(request: web.Request) -> web.Response:
    d = await _job(request)
    part = "/part/job?" + urlencode({k: v for k, v in request.query.items() if k in ("job", "run", "after")})
    return _html(views.job_page(d, part))


async def job_part(request: web.Request) -> web.Response:
    return _html(views.job_part(await _job(request)))


async def api_jobs(request: web.Request) -> web.Response:
    return web.json_response({"jobs": await asyncio.to_thread(request.app[READER].jobs)})


async def api_job(request: web.Request) -> web.Response:
    return web.json_response(await _job(request), dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _static_handler(name: str, content_type: str):
    body = importlib.resources.files("dth_ray.console").joinpath("static", name).read_bytes()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8")

    return handler


def build_app(reader: Reader, token: str = "", loopback: bool = True) -> web.Application:
    """The console's application over `reader`; `token` ('' = none) guards every route."""
    app = web.Application(middlewares=[guard, manifest_errors])
    app[READER], app[TOKEN], app[LOOPBACK] = reader, token, loopback
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", jobs_page)
    app.router.add_get("/part/jobs", jobs_part)
    app.router.add_get("/job", job_page)
    app.router.add_get("/part/job", job_part)
    app.router.add_get("/api/jobs", api_jobs)
    app.router.add_get("/api/job", api_job)
    for name, content_type in _STATIC.items():
        app.router.add_get(f"/static/{name}", _static_handler(name, content_type))
    return app


def _url(host: str, port: int, token: str) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + ("?" + urlencode({"token": token}) if token else "")


def serve(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; prints the URL to open (with the token, if any) first. Raises ConfigError
    when the manifest cannot be opened or the address is taken."""
    console = settings.console
    reader = Reader(settings.manifest)

    async def run() -> None:
        runner = web.AppRunner(build_app(reader, console.token, console.loopback), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, console.host, console.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            from dth_ray.errors import ConfigError

            raise ConfigError(f"console.host={console.host} console.port={console.port}: cannot listen "
                              f"({exc.strerror or exc})") from None
        port = site._server.sockets[0].getsockname()[1]  # the port taken when console.port=0
        print(f"dth-ray console: {_url(console.host, port, console.token)} (read-only; Ctrl-C stops it)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    finally:
        reader.close()
    print("dth-ray console: stopped", file=sys.stderr)
    return 0
