"""Accounts and bearer tokens."""

from __future__ import annotations

import time

import jwt
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import assert_error, register


def test_register_login_and_me(client: FlaskClient) -> None:
    created = client.post("/api/v1/auth/register",
                          json={"email": "Ana@Example.com", "password": "s3cret-passphrase"})
    assert created.status_code == 201
    body = created.get_json()
    assert body["tokenType"] == "Bearer" and body["expiresIn"] > 0
    assert body["user"]["email"] == "ana@example.com"
    assert "password" not in str(body).lower().replace("passphrase", "")

    token = client.post("/api/v1/auth/token",
                        json={"email": "ana@example.com", "password": "s3cret-passphrase"})
    assert token.status_code == 200
    headers = {"Authorization": f"Bearer {token.get_json()['accessToken']}"}
    me = client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200
    assert me.get_json()["email"] == "ana@example.com"


def test_duplicate_email_conflicts(client: FlaskClient) -> None:
    register(client, "dup@example.com")
    again = client.post("/api/v1/auth/register",
                        json={"email": "DUP@example.com", "password": "another-password"})
    assert again.status_code == 409
    assert "already exists" in again.get_json()["message"]


def test_wrong_password_and_unknown_email_look_the_same(client: FlaskClient) -> None:
    register(client, "known@example.com", "right-password")
    wrong = client.post("/api/v1/auth/token",
                        json={"email": "known@example.com", "password": "wrong-password"})
    unknown = client.post("/api/v1/auth/token",
                          json={"email": "nobody@example.com", "password": "wrong-password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json()["message"] == unknown.get_json()["message"]


def test_requests_without_valid_token_are_401(client: FlaskClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"}):
        response = client.get("/api/v1/spaces", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["message"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_and_forged_tokens_are_rejected(client: FlaskClient, app: Flask) -> None:
    headers = register(client)
    claims = jwt.decode(headers["Authorization"].split()[1], options={"verify_signature": False})
    secret = app.extensions["lifetales"].settings.secret_key
    expired = jwt.encode({**claims, "exp": int(time.time()) - 10}, secret, algorithm="HS256")
    forged = jwt.encode(claims, "another-secret-of-at-least-32-bytes!", algorithm="HS256")
    for token in (expired, forged):
        response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401


def test_register_validation(client: FlaskClient) -> None:
    short = client.post("/api/v1/auth/register", json={"email": "a@example.com", "password": "x"})
    assert short.status_code == 422
    assert "password" in short.get_json()["errors"]["json"]
    bad_email = client.post("/api/v1/auth/register",
                            json={"email": "not-an-email", "password": "long-enough-pw"})
    assert bad_email.status_code == 422
    extra = client.post("/api/v1/auth/register",
                        json={"email": "b@example.com", "password": "long-enough-pw", "x": 1})
    assert extra.status_code == 422
    assert "x" in extra.get_json()["errors"]["json"]


def test_tokens_expire_after_the_configured_lifetime(client: FlaskClient, app: Flask) -> None:
    headers = register(client)
    claims = jwt.decode(headers["Authorization"].split()[1], options={"verify_signature": False})
    ttl = app.extensions["lifetales"].settings.access_token_ttl_s
    assert claims["exp"] - claims["iat"] == ttl
    secret = app.extensions["lifetales"].settings.secret_key
    # The same token, one second past its lifetime.
    stale = jwt.encode({**claims, "iat": claims["iat"] - ttl - 1, "exp": claims["exp"] - ttl - 1},
                       secret, algorithm="HS256")
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {stale}"}
                      ).status_code == 401
    assert client.get("/api/v1/me", headers=headers).status_code == 200


def test_changing_the_password_revokes_every_older_token(client: FlaskClient) -> None:
    old = register(client, "pat@example.com", "first long password")
    other_session = {"Authorization": "Bearer " + client.post("/api/v1/auth/token", json={
        "email": "pat@example.com", "password": "first long password"}).get_json()["accessToken"]}
    changed = client.post("/api/v1/auth/password", headers=old, json={
        "currentPassword": "first long password", "newPassword": "second long password"})
    assert changed.status_code == 200, changed.get_json()
    fresh = {"Authorization": f"Bearer {changed.get_json()['accessToken']}"}
    for stale in (old, other_session):
        assert_error(client.get("/api/v1/me", headers=stale), 401, "token")
    assert client.get("/api/v1/me", headers=fresh).get_json()["email"] == "pat@example.com"
    # Only the new password signs in now.
    assert client.post("/api/v1/auth/token", json={
        "email": "pat@example.com", "password": "first long password"}).status_code == 401
    assert client.post("/api/v1/auth/token", json={
        "email": "pat@example.com", "password": "second long password"}).status_code == 200


def test_password_change_needs_the_current_password_and_a_valid_new_one(
        client: FlaskClient) -> None:
    headers = register(client, "sam@example.com", "the current password")
    wrong = client.post("/api/v1/auth/password", headers=headers, json={
        "currentPassword": "a guess", "newPassword": "a brand new password"})
    body = assert_error(wrong, 422, "currentPassword")
    assert "currentPassword" in body["errors"]["json"]
    short = client.post("/api/v1/auth/password", headers=headers, json={
        "currentPassword": "the current password", "newPassword": "short"})
    assert_error(short, 422, "newPassword")
    assert_error(client.post("/api/v1/auth/password", json={
        "currentPassword": "the current password", "newPassword": "a brand new password"}), 401)
    # Nothing changed: the token still works, the password still signs in.
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    assert client.post("/api/v1/auth/token", json={
        "email": "sam@example.com", "password": "the current password"}).status_code == 200
