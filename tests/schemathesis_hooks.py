"""schemathesis hooks for tests/schemathesis.sh: the two rules of the sandbox's API that
OpenAPI cannot express, supplied so generated requests reach the API's logic.

1. `PUT /devices/{uniqueId}`: the body's `yubikey.uniqueId` must equal the URL's. A valid
   URL and body get the URL's value in the body; an invalid (negative) URL or body is left
   alone, so it is still refused.
2. `GET /auth/machine-token` rotates the token it is called with: each call must present the
   token the previous call returned. The first is the sandbox's `--machine-token`
   (KEYTALLY_ST_MACHINE_TOKEN). Every other request carries the admin token
   (KEYTALLY_ST_ADMIN_TOKEN).
"""

import os
import urllib.parse

import schemathesis

DEVICE_PATH = "/api/external/ybk-management/devices/{uniqueId}"
ROTATION_PATH = "/auth/machine-token"

admin_token = os.environ["KEYTALLY_ST_ADMIN_TOKEN"]
machine_token = os.environ["KEYTALLY_ST_MACHINE_TOKEN"]


def _about_authorization(case):
    data = getattr(getattr(getattr(case, "meta", None), "phase", None), "data", None)
    return str(getattr(data, "parameter", None) or "").lower() == "authorization"


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    path = case.operation.path
    if path == DEVICE_PATH and case.method.upper() == "PUT":
        # Valid by the schema: a non-empty string in both places (the schema asks no more).
        url_id = (case.path_parameters or {}).get("uniqueId")
        yubikey = case.body.get("yubikey") if isinstance(case.body, dict) else None
        body_id = yubikey.get("uniqueId") if isinstance(yubikey, dict) else None
        if isinstance(url_id, str) and url_id and isinstance(body_id, str) and body_id:
            # The case holds the URL's value percent-encoded; the server decodes it.
            yubikey["uniqueId"] = urllib.parse.unquote(url_id)
    # The bearer token: the machine token for the rotation, the admin token elsewhere (the
    # token endpoint, which takes none, ignores it). A case about the Authorization header
    # itself (sent without it, or with a bad one) is left as generated.
    if not _about_authorization(case):
        token = machine_token if path == ROTATION_PATH else admin_token
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


@schemathesis.hook
def after_call(ctx, case, response):
    global machine_token
    if case.operation.path == ROTATION_PATH and response.status_code == 200:
        token = response.json().get("token")
        if isinstance(token, str) and token:
            machine_token = token
