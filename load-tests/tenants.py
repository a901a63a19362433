#!/usr/bin/env python3
"""Provision N tenants, each with one client_credentials client, for the
10,000-tenant scenario. Resumable: tenants already listed in OUT are kept,
so a re-run only creates what is missing.

    tenants.py BASE_URL ADMIN_KEY COUNT OUT

Each line of OUT is `tenant base64(client_id:client_secret)`; the file holds
client secrets and lives under .local/ (never committed). Prints one JSON
object: how many tenants were created now and the mean seconds per tenant
(dominated by the RSA-2048 key generation of the tenant's first key).
"""
import base64
import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

base, admin_key, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


def post(path, body):
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + admin_key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


def provision(index):
    tenant = f"t{index:05d}"
    post("/admin/v1/tenants", {"id": tenant, "display_name": tenant})
    client = post(f"/admin/v1/tenants/{tenant}/clients", {
        "name": "bench", "grant_types": ["client_credentials"],
        "scopes": ["read"], "audience": ["bench-api"],
    })
    basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    return f"{tenant} {basic}\n"


done = set()
try:
    with open(out) as f:
        done = {line.split()[0] for line in f if line.strip()}
except FileNotFoundError:
    pass
todo = [i for i in range(count) if f"t{i:05d}" not in done]
started = time.monotonic()
with open(out, "a") as f, ThreadPoolExecutor(max_workers=4) as pool:
    for line in pool.map(provision, todo):
        f.write(line)
        f.flush()
elapsed = time.monotonic() - started
print(json.dumps({"created": len(todo), "seconds": round(elapsed, 1),
                  "seconds_per_tenant": round(elapsed / len(todo), 4) if todo else None}))
