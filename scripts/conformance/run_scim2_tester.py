"""Runs scim2-tester (PyPI) against a SCIM server and prints per-check counts.

Usage: run_scim2_tester.py BASE_URL TOKEN MIN_RESULTS

Exits 0 only if every result is SUCCESS and there are at least MIN_RESULTS of them: a
discovery failure makes scim2-tester return only a handful of results, which must not pass.
"""

import collections
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server


def main() -> int:
    url, token, minimum = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = SyncSCIMClient(Client(base_url=url, headers={"Authorization": f"Bearer {token}"}))
    results = check_server(client)
    counts = collections.Counter((r.title, r.status.name) for r in results)
    for (title, status), n in sorted(counts.items()):
        print(f"  {status:10} {n:3} {title}")
    bad = [r for r in results if r.status != Status.SUCCESS]
    for r in bad[:40]:
        print(f"NOT SUCCESS {r.status.name} {r.title} [{r.resource_type}] {(r.reason or '')[:300]}")
    by_status = collections.Counter(r.status.name for r in results)
    print(f"scim2-tester: {len(results)} results: " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())))
    if bad:
        print(f"FAIL: {len(bad)} results are not SUCCESS")
        return 1
    if len(results) < minimum:
        print(f"FAIL: only {len(results)} results, fewer than the {minimum} expected")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
