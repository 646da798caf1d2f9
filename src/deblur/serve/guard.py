"""Who may use the server: its Host names, the Origin of writes, and the token.

- **Host.** A foreign ``Host:`` is refused (421), so a page on another site whose name is
  made to resolve to 127.0.0.1 (DNS rebinding) reaches nothing. The loopback names are
  allowed, and the address ``--host`` names; ``serve.allowed_hosts`` adds others.
- **Origin.** A write (POST, PUT, PATCH, DELETE) that a browser sends from another site
  is refused (403): a plain form post needs no CORS preflight, so without this any page
  could upload. Browsers send ``Origin`` on every cross-site POST, and ``Sec-Fetch-Site``
  too; the demo page's own requests are same-origin; curl and scripts send neither.
- **Token.** With one (``--token``, or DEBLUR_SERVE_TOKEN), every API call must carry it
  as ``Authorization: Bearer <token>`` (401 otherwise); the page, opened at the address
  `deblur serve` prints (``#token=...``), keeps it and sends it. The page itself, its
  static files, /health and the API's docs need none: they hold nothing of anyone's.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

LOOPBACK = ("localhost", "127.0.0.1", "::1")
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
# Paths anyone who reaches the server may read: the page and the API's description.
OPEN = ("/", "/health", "/openapi.json")
OPEN_PREFIXES = ("/static/", "/api/docs")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name) only listens on this machine."""
    if host.lower() in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(netloc: str) -> str:
    """'Example.com:8000' -> 'example.com'; '[::1]:80' -> '::1'."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


@dataclass
class Guard:
    hosts: set[str] = field(default_factory=lambda: set(LOOPBACK))
    token: str | None = None

    @classmethod
    def of(cls, bind: str, allowed: list[str], token: str | None) -> Guard:
        hosts = set(LOOPBACK) | {h.lower().strip("[]") for h in allowed}
        if bind not in ("0.0.0.0", "::", ""):
            hosts.add(bind.lower().strip("[]"))
        return cls(hosts, token or None)

    def refusal(self, method: str, path: str, headers) -> JSONResponse | None:
        """None when the request may go on, else the answer it gets."""
        host = _hostname(headers.get("host", ""))
        if host not in self.hosts:
            return _error(
                421,
                f"this server does not answer to the host name '{host}'; add it to "
                "serve.allowed_hosts in params.yaml if it is yours",
            )
        if method in WRITES and self._cross_site(headers):
            return _error(
                403,
                "a write from another site's page is refused; use the demo page itself, "
                "or a script (which sends no Origin)",
            )
        if self.token and not _open(path) and not self._authorised(headers):
            return _error(
                401,
                "this server needs its token: send `Authorization: Bearer <token>`, or "
                "open the page at the address `deblur serve` printed",
                {"WWW-Authenticate": "Bearer"},
            )
        return None

    def _cross_site(self, headers) -> bool:
        if headers.get("sec-fetch-site", "") in ("cross-site", "same-site"):
            return True
        origin = headers.get("origin")
        if origin is None:
            return False  # not a browser's cross-site request (they always send it)
        parts = urlsplit(origin)
        return parts.netloc.lower() != headers.get("host", "").lower() or not parts.scheme

    def _authorised(self, headers) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return False
        return secrets.compare_digest(given.strip().encode(), self.token.encode())


def _open(path: str) -> bool:
    return path in OPEN or path.startswith(OPEN_PREFIXES)


def _error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    # The body is never read: close rather than drain it.
    headers = {**(headers or {}), "Connection": "close"}
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class GuardMiddleware:
    """ASGI middleware: every HTTP request passes Guard.refusal before the app sees it."""

    def __init__(self, app, guard: Guard):
        self.app, self.guard = app, guard

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            refused = self.guard.refusal(scope["method"], scope["path"], headers)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)
