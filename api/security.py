"""HTTP hardening: proxy headers, HTTPS, CORS and the security headers of every response."""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, Response, current_app, redirect, request
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response as BaseResponse

from api.ratelimit import PROBE_PATHS
from config import HttpSettings

HSTS = "max-age=31536000"  # a year; no includeSubDomains: other hosts of the domain are not ours
# What a browser may send cross-origin, and read of our answers.
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Prefer",
                      "Cancel-After", "Last-Event-ID", "X-Request-ID", "If-None-Match")
CORS_EXPOSE_HEADERS = ("Location", "Content-Location", "Retry-After", "ETag",
                       "Preference-Applied", "RateLimit-Limit", "RateLimit-Remaining",
                       "RateLimit-Reset", "RateLimit-Policy", "X-Request-ID", "X-Total-Count",
                       "X-Pagination")
CORS_MAX_AGE_S = 600
# JSON, event streams and media files: nothing in them may run, load or be framed.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SWAGGER_UI_ENDPOINT = "api-docs.openapi_swagger_ui"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def init_security(app: Flask, http: HttpSettings) -> None:
    """Trust ``http.trusted_proxy_hops`` proxies' X-Forwarded-* headers; redirect to HTTPS when
    forced; answer CORS preflights for allowed origins; security headers on every response."""
    if http.trusted_proxy_hops:
        hops = http.trusted_proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )
    if http.force_https:
        app.before_request(_redirect_to_https)
    if http.cors_origins:
        allowed = frozenset(http.cors_origins)
        app.before_request(lambda: _preflight(allowed))
        app.after_request(lambda response: _cors_headers(response, allowed))
    app.after_request(lambda response: _security_headers(response, http.force_https))


def _redirect_to_https() -> BaseResponse | None:
    if request.is_secure or request.path in PROBE_PATHS:
        return None  # probes and scrapes reach the process directly, over plain HTTP
    # 308, not 301: the method and body are kept, so a POST is not turned into a GET.
    return redirect(request.url.replace("http://", "https://", 1), code=308)


def _allowed_origin(allowed: frozenset[str]) -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin and origin.lower() in allowed else None


def _preflight(allowed: frozenset[str]) -> Response | None:
    """Answer a CORS preflight from an allowed origin for a route that exists; anything else goes
    on as usual (and the browser, seeing no CORS headers, refuses the call)."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    origin = _allowed_origin(allowed)
    if origin is None or request.url_rule is None:
        return None
    response = current_app.response_class(status=204)
    methods = sorted((request.url_rule.methods or set()) - {"HEAD"})
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
    response.headers["Access-Control-Allow-Headers"] = ", ".join(CORS_ALLOW_HEADERS)
    response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
    return response


def _cors_headers(response: Response, allowed: frozenset[str]) -> Response:
    # Answers differ by Origin: caches must keep them apart.
    response.vary.add("Origin")
    origin = _allowed_origin(allowed)
    if origin is not None:
        # Bearer tokens, not cookies: no Access-Control-Allow-Credentials, so no browser ever
        # sends this API a user's cookies cross-origin.
        response.headers["Access-Control-Allow-Origin"] = origin
        if request.method != "OPTIONS":
            response.headers["Access-Control-Expose-Headers"] = ", ".join(CORS_EXPOSE_HEADERS)
    return response


# On every answer, unless the view set its own.
SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                    ("X-Frame-Options", "DENY"), ("Content-Security-Policy", API_CSP))


def _security_headers(response: Response, force_https: bool) -> Response:
    headers = response.headers
    if request.endpoint == SWAGGER_UI_ENDPOINT:
        headers["Content-Security-Policy"] = swagger_ui_csp(response)
    # One pass over the headers set so far (werkzeug's setdefault searches them per call).
    present = {name.lower() for name, _ in headers.items()}
    headers.extend([(name, value) for name, value in SECURITY_HEADERS
                    if name.lower() not in present])
    if force_https and request.is_secure:
        headers["Strict-Transport-Security"] = HSTS
    return response


def swagger_ui_csp(response: Response) -> str:
    """The docs page's policy: Swagger UI's files and the spec from this origin (api/docs.py),
    its one inline script by hash; nothing else."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(response.get_data())
    )
    # Swagger UI's own SVG icons are data: URLs in its stylesheet.
    return (
        f"default-src 'none'; script-src 'self'{hashes}; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
