"""Schemathesis hooks for LightTech: every test case authenticated, as a staff user.

The fuzzer calls logout and session revocation, which (correctly) kill the token they were sent
with. A token is kept until a case may have ended it — any call but a read under `/api/auth/` or
`/api/admin/`, or any `401` — and a fresh one is fetched then: every other operation stays
authenticated at a fraction of the logins (each one an argon2 hash on the server). The account is
a staff user, so the admin operations are exercised past `403` too.
"""

import json
import os
import urllib.request

import schemathesis

BASE = os.environ["LIGHTTECH_FUZZ_BASE"]
USERNAME = os.environ["LIGHTTECH_FUZZ_USER"]
PASSWORD = os.environ["LIGHTTECH_FUZZ_PASSWORD"]


@schemathesis.auth(refresh_interval=None)
class FreshToken:
    token = None

    def get(self, case, ctx):
        if FreshToken.token is None:
            FreshToken.token = login()
        return FreshToken.token

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def after_call(context, case, response):
    path = case.operation.path
    may_end_session = case.method.upper() != "GET" and path.startswith(
        ("/api/auth/", "/api/admin/")
    )
    if may_end_session or response.status_code == 401:
        FreshToken.token = None


def login():
    request = urllib.request.Request(
        BASE + "/api/auth/v1/login/",
        data=json.dumps({"username": USERNAME, "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access"]
