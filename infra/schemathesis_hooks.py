"""schemathesis hooks for `make contract-test`: credentials only, no test cases.

The broker webhook is authenticated by an HMAC over the exact body bytes, which no static
header can carry, so this auth provider signs the generated body as it will be sent. It is
an auth provider (not a blanket hook), so schemathesis still knows how to leave the
signature out when it checks that unsigned calls are refused (`ignored_auth`).
"""

import hashlib
import hmac
import os
import time

import schemathesis
from requests.compat import json as requests_json
from schemathesis.core import NOT_SET
from schemathesis.core.parameters import ParameterLocation

SECRET = os.environ["WEBHOOK_SECRET"].encode()


def sent_bytes(body):
    """The bytes the requests transport sends for a JSON body (see `serialize_json` in
    schemathesis and `prepare_body` in requests). The body itself is left as generated:
    replacing it with bytes would make schemathesis judge the case as schema-violating."""
    if body is NOT_SET:
        return b""
    if body is None:
        return b"null"
    if isinstance(body, bytes):
        return body
    text = requests_json.dumps(body, allow_nan=False)
    return text.encode("utf-8") if isinstance(text, str) else text


@schemathesis.auth(refresh_interval=None).apply_to(path="/webhooks/broker")
class WebhookSignature:
    def get(self, case, ctx):
        return SECRET

    def set(self, case, secret, ctx):
        if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
            # The generator made the signature header invalid on purpose: send it as is.
            return
        try:
            raw = sent_bytes(case.body)
        except (TypeError, ValueError):
            # Not serialisable as JSON (the transport sends it another way): leave it unsigned.
            return
        t = str(int(time.time()))
        mac = hmac.new(secret, t.encode() + b"." + raw, hashlib.sha256).hexdigest()
        case.headers = dict(case.headers or {})
        case.headers["X-Closeflow-Signature"] = f"t={t},v1={mac}"
