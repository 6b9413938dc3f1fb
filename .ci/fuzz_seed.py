"""Seeds a fresh `bulkhead dev` for the contract fuzzer and writes one Schemathesis config per
principal (a platform admin, a tenant admin) into OUT_DIR.

usage: fuzz_seed.py BASE_URL SERVER_LOG OUT_DIR

Every operation runs against real objects: path parameters are drawn mostly from what is seeded
here (tenants, an environment, a job, members, keys), in tenants of each run's own. The
destructive operations (offboarding a tenant, destroying an environment, removing a member,
revoking a key, logging out) get targets of their own and draw nothing from other responses, so
the fuzzer cannot wreck the tenant most operations run against. Stdlib only.
"""

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

ADMIN_EMAIL = "admin@bulkhead.local"
ADMIN_PASSWORD = "change-me-bulkhead-dev"
TENANT_ADMIN_EMAIL = "fuzz-tenant-admin@bulkhead.local"
TENANT_ADMIN_PASSWORD = "fuzzing the contract, not the password"
COST_TAGS = {"business_unit": "fuzzing", "cost_center": "cc-0001"}
# How often a path parameter takes a seeded value; the rest are drawn by the fuzzer.
SEEDED_PROBABILITY = 0.9
HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_hooks.py")


def call(base, method, path, token=None, body=None, expect=(200, 201, 202, 204)):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    if status not in expect:
        sys.exit(f"fuzz seed: {method} {path} answered {status}: {raw[:500]!r}")
    return json.loads(raw) if raw else None


def login(base, email, password):
    return call(base, "POST", "/v1/auth/login", body={"email": email, "password": password})[
        "access_token"
    ]


def mailed_token(log_path, email):
    """The invitation token `bulkhead dev` wrote to its log for `email` (BULKHEAD_MAIL=log)."""
    pattern = re.compile(r"MAIL NOT DELIVERED.*?to " + re.escape(email) + r" .*?(bki_[0-9a-f]+)", re.S)
    for _ in range(100):
        with open(log_path, encoding="utf-8", errors="replace") as log:
            found = pattern.findall(log.read())
        if found:
            return found[-1]
        time.sleep(0.1)
    sys.exit(f"fuzz seed: no invitation mail to {email} in {log_path}")


class Seed:
    def __init__(self, base, log_path):
        self.base = base
        self.log_path = log_path
        self.admin = login(base, ADMIN_EMAIL, ADMIN_PASSWORD)
        self.tenant_admin = None
        self.tenant_admin_id = None

    def tenant(self, slug):
        return call(
            self.base,
            "POST",
            "/v1/tenants",
            self.admin,
            {"slug": slug, "name": f"Fuzz {slug}", "tier": "shared", "region": "eu-west-1",
             "cost_tags": COST_TAGS},
        )

    def join_as_tenant_admin(self, tenant):
        """Makes the tenant admin a member of `tenant`: the first time through the mailed
        invitation (account made), later as an offer the signed-in account accepts."""
        path = f"/v1/tenants/{tenant['id']}/members"
        body = {"email": TENANT_ADMIN_EMAIL, "role": "tenant_admin"}
        added = call(self.base, "POST", path, self.admin, body)
        if self.tenant_admin is None:
            token = mailed_token(self.log_path, TENANT_ADMIN_EMAIL)
            accepted = call(self.base, "POST", "/v1/auth/accept-invitation",
                            body={"token": token, "password": TENANT_ADMIN_PASSWORD})
            self.tenant_admin_id = accepted["principal_id"]
            self.tenant_admin = login(self.base, TENANT_ADMIN_EMAIL, TENANT_ADMIN_PASSWORD)
        else:
            call(self.base, "POST", f"/v1/me/invitations/{tenant['id']}/accept", self.tenant_admin)
        return added

    def member(self, tenant, email):
        path = f"/v1/tenants/{tenant['id']}/members"
        added = call(self.base, "POST", path, self.admin, {"email": email, "role": "viewer"})
        return added["member"]["principal_id"]

    def api_key(self, tenant, name, token):
        path = f"/v1/tenants/{tenant['id']}/api-keys"
        created = call(self.base, "POST", path, token,
                       {"name": name, "role": "viewer", "expires_in_days": 30})
        return created["api_key"]["id"]

    def environment(self, tenant, name):
        path = f"/v1/tenants/{tenant['id']}/environments"
        created = call(self.base, "POST", path, self.admin,
                       {"name": name, "stage": "development", "cost_tags": COST_TAGS})
        return created["environment"]["id"], created["job"]["id"]


def toml_value(value):
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


# Operations that destroy what they are given. They draw only from their own targets: no ids
# seen in other responses (Schemathesis reuses those), no stateful links.
DESTRUCTIVE = ("deleteTenant", "destroyEnvironment", "removeMember", "revokeApiKey")

# 422 answers to schema-valid requests that the document states but JSON Schema cannot (not
# without `anyOf` shapes that generated clients turn into unions): rules that depend on the
# installation, the tenant or other fields. The blueprint must be in the installation's catalog
# and suit the isolation, and the cost tags the tenant lacks are required (createEnvironment);
# `plan_job_id` must name a succeeded plan job of this environment (applyEnvironment); a patch
# must change something (updateTenant: not all `null`); `partner` goes only to partner accounts
# (addMember). Costs: `from` before `to` and at most 400 days apart, a currency equal to the
# installation's billing currency (getTenantCosts, getPlatformCosts, exportTenantCosts,
# exportPlatformCosts); a budget in the billing currency with no more decimal places than it has
# (setTenantBudget). A tenant policy: a real IANA time zone, a schedule whose end differs from its
# start, days and promotion stages each named once, no schedule or TTL on production
# (setTenantPolicy; utoipa cannot state uniqueItems on a field). A TTL only on a non-production
# environment (updateEnvironment). An upgrade names a released version of the environment's own
# blueprint (upgradeEnvironment: the catalog is the installation's). A webhook URL must parse
# as a URL (the pattern cannot state every rule of a host) and, when its host is a literal
# address, a public one (createWebhook).
STATEFUL_422 = ("createEnvironment", "applyEnvironment", "updateTenant", "addMember",
                "getTenantCosts", "getPlatformCosts", "exportTenantCosts", "exportPlatformCosts",
                "setTenantBudget", "setTenantPolicy", "updateEnvironment", "upgradeEnvironment",
                "createWebhook")


def write_config(path, token, logout_token, targets, own_targets):
    """One Schemathesis config: `targets` are the seeded values of every path parameter,
    `own_targets` maps an operationId to the values it gets instead."""
    lines = [
        "# Written by .ci/fuzz_seed.py for one run; not to be committed.",
        f"hooks = {toml_value(HOOKS)}",
        "",
        "# No crash cache between runs: each run is its seed's, wherever it runs.",
        "[cache]",
        "enabled = false",
        "",
        "[auth.openapi.bearer]",
        f"bearer = {toml_value(token)}",
        "",
        "[dictionaries]",
    ]
    for name, values in targets.items():
        lines.append(f"{name} = {{ values = {toml_value(values)} }}")
    for op, values in own_targets.items():
        for name, value in values.items():
            lines.append(f"{op}_{name} = {{ values = {toml_value(value)} }}")
    lines += ["", "[parameters]"]
    for name in targets:
        lines.append(
            f"\"path.{name}\" = {{ dictionary = \"{name}\", probability = {SEEDED_PROBABILITY} }}"
        )
    for op, values in own_targets.items():
        lines += ["", "[[operations]]", f"include-operation-id = \"{op}\""]
        if op in DESTRUCTIVE:
            lines += ["[operations.phases.stateful]", "enabled = false"]
            for phase in ("examples", "coverage", "fuzzing"):
                lines += [f"[operations.phases.{phase}.extra-data-sources]", "responses = false"]
        lines.append("[operations.parameters]")
        for name in values:
            lines.append(
                f"\"path.{name}\" = {{ dictionary = \"{op}_{name}\", probability = {SEEDED_PROBABILITY} }}"
            )
    for op in STATEFUL_422:
        lines += ["", "[[operations]]", f"include-operation-id = \"{op}\"",
                  "[operations.checks.positive_data_acceptance]",
                  'expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]']
    # A tenant has no budget until one is PUT: its GET answers the documented 404 ("this tenant
    # has no budget; PUT one") right after the tenant is created, which the stateful phase's
    # resource-availability check reads as a created resource gone missing.
    lines += ["", "[[operations]]", "include-operation-id = \"getTenantBudget\"",
              "[operations.checks.ensure_resource_availability]", "enabled = false"]
    # Logging out revokes the token presented: that operation gets a token of its own.
    lines += ["", "[[operations]]", "include-operation-id = \"logout\"",
              f"headers = {{ Authorization = {toml_value('Bearer ' + logout_token)} }}"]
    with open(path, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


def seed_run(seed, who, email):
    """Everything one principal's run works on, in tenants of its own (so what one run
    destroys cannot starve the other): the path parameters' values, and the destructive
    operations' and the invitation operations' own. The tenant admin is made a member of its
    run's tenants; keys are made by the run's principal."""

    def joined(tenant):
        if who == "tenant-admin":
            seed.join_as_tenant_admin(tenant)
        return tenant

    main = joined(seed.tenant(f"fuzz-main-{who}"))
    token = seed.tenant_admin if who == "tenant-admin" else seed.admin
    env_id, job_id = seed.environment(main, "fuzzed")
    targets = {
        "tenant": [main["id"], main["slug"]],
        "env": [env_id, "fuzzed"],
        "job": [job_id],
        "principal": [seed.member(main, f"fuzz-viewer-{who}@bulkhead.local")],
        "key": [seed.api_key(main, "fuzz-key", token)],
    }
    # One tenant to offboard (with an environment, so offboarding has work), one whose
    # environment, member and key are there to be destroyed, removed and revoked.
    doomed = joined(seed.tenant(f"fuzz-doomed-{who}"))
    seed.environment(doomed, "doomed")
    pruned = joined(seed.tenant(f"fuzz-pruned-{who}"))
    pruned_env, _ = seed.environment(pruned, "doomed")
    own = {
        "deleteTenant": {"tenant": [doomed["id"], doomed["slug"]]},
        "destroyEnvironment": {"tenant": [pruned["id"]], "env": [pruned_env, "doomed"]},
        "removeMember": {"tenant": [pruned["id"]],
                         "principal": [seed.member(pruned, f"fuzz-leaver-{who}@bulkhead.local")]},
        "revokeApiKey": {"tenant": [pruned["id"]], "key": [seed.api_key(pruned, "doomed", token)]},
    }
    # Memberships offered to the principal: one to accept, one to decline.
    for op, verb in (("acceptMyInvitation", "accept"), ("declineMyInvitation", "decline")):
        offering = seed.tenant(f"fuzz-{verb}-{who}")
        call(seed.base, "POST", f"/v1/tenants/{offering['id']}/members", seed.admin,
             {"email": email, "role": "viewer"})
        own[op] = {"tenant": [offering["id"], offering["slug"]]}
    return main, token, targets, own


def main():
    base, log_path, out_dir = sys.argv[1:4]
    seed = Seed(base, log_path)
    for who, email, password in (
        ("tenant-admin", TENANT_ADMIN_EMAIL, TENANT_ADMIN_PASSWORD),
        ("platform-admin", ADMIN_EMAIL, ADMIN_PASSWORD),
    ):
        main_tenant, token, targets, own = seed_run(seed, who, email)
        write_config(f"{out_dir}/{who}.toml", token, login(base, email, password), targets, own)
        print(f"fuzz seed: {who} works in tenant {main_tenant['slug']} ({main_tenant['id']})")


if __name__ == "__main__":
    main()
