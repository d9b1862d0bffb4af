"""HTTP hardening: CORS allowlist and preflights, security headers and CSPs (the docs page's
Swagger UI is served from this origin), HTTPS redirect and HSTS, trusted proxy hops, and error
bodies that never carry a stack trace or an exception's text."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from config import HttpSettings, Settings
from tests.conftest import register

AppFactory = Callable[..., Flask]
FRONTEND = "https://app.lifetales.example"


@pytest.fixture
def http_app(settings: Settings, session_factory: sessionmaker[Session]) -> AppFactory:
    def build(**http: Any) -> Flask:
        configured = dataclasses.replace(settings, http=HttpSettings(**http))
        app = create_app(configured, session_factory=session_factory)
        app.testing = True
        return app

    return build


# --- CORS --------------------------------------------------------------------------------


def test_preflight_from_an_allowed_origin(http_app: AppFactory) -> None:
    client = http_app(cors_origins=(FRONTEND, "http://localhost:5173")).test_client()
    response = client.options("/api/v1/spaces", headers={
        "Origin": FRONTEND, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    allowed = {h.strip() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"Authorization", "Content-Type", "Idempotency-Key", "Prefer", "Last-Event-ID",
            "X-Request-ID"} <= allowed
    assert {"GET", "POST"} <= set(response.headers["Access-Control-Allow-Methods"].split(", "))
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in response.headers["Vary"]
    # Bearer tokens, not cookies: credentials are never allowed, so no wildcard question arises.
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_actual_request_from_an_allowed_origin_exposes_the_headers_clients_read(
        http_app: AppFactory) -> None:
    client = http_app(cors_origins=(FRONTEND,)).test_client()
    auth = register(client)
    response = client.post("/api/v1/illustrations", json={"prompt": "a kite"},
                           headers={**auth, "Origin": FRONTEND})
    assert response.status_code == 202
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Location", "Retry-After", "ETag", "Preference-Applied", "RateLimit-Limit",
            "RateLimit-Remaining", "RateLimit-Reset", "X-Request-ID"} <= exposed


@pytest.mark.parametrize("origin", ["https://evil.example", "null", FRONTEND + ".evil.example"])
def test_other_origins_get_no_cors_headers(http_app: AppFactory, origin: str) -> None:
    client = http_app(cors_origins=(FRONTEND,)).test_client()
    preflight = client.options("/api/v1/spaces", headers={
        "Origin": origin, "Access-Control-Request-Method": "DELETE"})
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert "Access-Control-Allow-Origin" not in client.get("/health",
                                                           headers={"Origin": origin}).headers


def test_no_cors_origins_means_no_cross_origin_access(client: FlaskClient) -> None:
    response = client.options("/api/v1/spaces", headers={
        "Origin": FRONTEND, "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_origins_from_env() -> None:
    http = HttpSettings.from_env({"CORS_ORIGINS": "https://a.example, http://localhost:5173/"})
    assert http.cors_origins == ("https://a.example", "http://localhost:5173")
    for bad in ("*", "https://*.example", "a.example", "https://a.example/app"):
        with pytest.raises(RuntimeError, match="CORS_ORIGINS"):
            HttpSettings.from_env({"CORS_ORIGINS": bad})


# --- security headers and CSP ---------------------------------------------------------------


def test_every_response_has_the_security_headers(client: FlaskClient,
                                                 auth: dict[str, str]) -> None:
    for response in (client.get("/api/v1/spaces", headers=auth), client.get("/api/v1/spaces"),
                     client.get("/health"), client.get("/api/v1/nowhere"),
                     client.get("/api/openapi.json")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "Strict-Transport-Security" not in response.headers  # HTTPS not forced


def test_docs_page_loads_swagger_ui_from_this_origin_and_nothing_else(
        client: FlaskClient) -> None:
    response = client.get("/api/docs")
    assert response.status_code == 200
    csp = dict(part.strip().split(" ", 1) for part in
               response.headers["Content-Security-Policy"].split(";"))
    html = response.get_data(as_text=True)
    # Every file the page loads is served here, from the package that ships Swagger UI...
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(urls) == 3
    for url in urls:
        assert url.startswith("/api/docs/assets/"), url
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.get_data()) > 1000, url
    # ...so the policy names no other origin...
    assert csp["style-src"] == "'self'"
    assert csp["script-src"].split()[0] == "'self'"
    assert "http" not in response.headers["Content-Security-Policy"]
    # ...its one inline script runs by hash (no 'unsafe-inline' anywhere)...
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    inline = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert csp["script-src"] == f"'self' 'sha256-{digest}'"
    # ...it may fetch the spec from here, and nothing may frame it.
    assert csp["connect-src"] == "'self'"
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"


def test_docs_assets_serve_swagger_ui_files_only(client: FlaskClient) -> None:
    for path in ("/api/docs/assets/nothing.js", "/api/docs/assets/../../../etc/passwd",
                 "/api/docs/assets/%2e%2e/__init__.py"):
        assert client.get(path).status_code == 404, path
    script = client.get("/api/docs/assets/swagger-ui-bundle.js")
    assert script.mimetype == "text/javascript"
    assert "max-age=86400" in script.headers["Cache-Control"]


# --- HTTPS and proxies ----------------------------------------------------------------------


def test_force_https_redirects_plain_http_with_308(http_app: AppFactory) -> None:
    client = http_app(force_https=True).test_client()
    response = client.post("/api/v1/spaces?x=1", json={"title": "t"})
    assert response.status_code == 308  # method and body kept
    assert response.headers["Location"] == "https://localhost/api/v1/spaces?x=1"
    # Probes reach the process directly, over plain HTTP.
    assert client.get("/health").status_code == 200
    secure = client.get("/api/v1/spaces", base_url="https://localhost")
    assert secure.status_code == 401
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")


def test_behind_a_trusted_proxy_the_forwarded_scheme_and_address_count(
        http_app: AppFactory) -> None:
    client = http_app(force_https=True, trusted_proxy_hops=1).test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.9",
                 "X-Forwarded-Host": "api.lifetales.example"}
    response = client.get("/health", headers=forwarded)
    assert response.status_code == 200
    assert "Strict-Transport-Security" in response.headers
    plain = client.get("/api/v1/spaces", headers={**forwarded, "X-Forwarded-Proto": "http"})
    assert plain.status_code == 308
    assert plain.headers["Location"] == "https://api.lifetales.example/api/v1/spaces"


def test_untrusted_forwarded_headers_are_ignored(http_app: AppFactory) -> None:
    client = http_app(force_https=True).test_client()  # TRUST_PROXY unset
    response = client.get("/api/v1/spaces", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 308


def test_trust_proxy_from_env() -> None:
    assert HttpSettings.from_env({}).trusted_proxy_hops == 0
    assert HttpSettings.from_env({"TRUST_PROXY": "true"}).trusted_proxy_hops == 1
    assert HttpSettings.from_env({"TRUST_PROXY": "2"}).trusted_proxy_hops == 2
    assert HttpSettings.from_env({"TRUST_PROXY": "off"}).trusted_proxy_hops == 0
    assert HttpSettings.from_env({"FORCE_HTTPS": "yes"}).force_https is True
    with pytest.raises(RuntimeError, match="TRUST_PROXY"):
        HttpSettings.from_env({"TRUST_PROXY": "the load balancer"})


# --- errors never carry a stack trace --------------------------------------------------------


def test_an_internal_error_answers_500_without_trace_or_exception_text(app: Flask) -> None:
    secret = "sk-internal-detail-4711"

    @app.route("/api/v1/test-only/boom")
    def boom() -> str:
        raise RuntimeError(f"database password is {secret}")

    app.testing = False  # as in production: the error handler answers, nothing propagates
    response = app.test_client().get("/api/v1/test-only/boom")
    assert response.status_code == 500
    body = response.get_json()
    assert body == {"code": 500, "status": "Internal Server Error",
                    "message": "an internal error occurred"}
    text = response.get_data(as_text=True)
    for leak in (secret, "Traceback", "RuntimeError", "File \"", ".py"):
        assert leak not in text
    assert response.headers["Content-Type"] == "application/json"
