"""Schemathesis hooks for `.ci/fuzz`.

Idempotency keys are per principal, across every endpoint: a key sent again with another
request answers 422 `idempotency-key-reused`, as documented. The fuzzer draws few distinct keys
(`0`, `A`, ...) for many different requests, so that 422 would stand for most schema-valid
requests with a key. A well-formed key is made unique to its request here (a repeated request
keeps its key, and so still tests the replay); malformed keys are sent as drawn.
"""

import hashlib
import json
import re

import schemathesis

WELL_FORMED = re.compile(r"^[!-~]([ -~]{0,253}[!-~])?$")


@schemathesis.hook
def before_call(context, case, **kwargs):
    headers = case.headers
    if not headers:
        return
    for name in list(headers):
        if name.lower() != "idempotency-key":
            continue
        key = headers[name]
        if not isinstance(key, str) or not WELL_FORMED.match(key):
            continue
        request = json.dumps(
            [case.method, case.formatted_path, case.body], default=repr, sort_keys=True
        )
        digest = hashlib.sha256(request.encode()).hexdigest()[:16]
        headers[name] = f"{key[:200]}-{digest}"
