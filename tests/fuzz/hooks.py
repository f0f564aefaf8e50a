"""Schemathesis hooks for LightTech: a fresh access token for every test case.

The fuzzer calls logout and session revocation, which (correctly) kill the token they were sent
with; logging in again per case keeps every other operation authenticated. The account is a
staff user, so the admin operations are exercised past `403` too.
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
    def get(self, case, ctx):
        request = urllib.request.Request(
            BASE + "/api/auth/v1/login/",
            data=json.dumps({"username": USERNAME, "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["access"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
