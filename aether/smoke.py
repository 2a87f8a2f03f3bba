"""The blue/green smoke check (`python -m aether.smoke URL...`): every service answers `/readyz` with 200.

The chart's `helm test` pod runs it against one colour's Services before traffic is switched to that colour
(docs/deployment/blue_green_rollout.md). Exit 0 when all are ready, 1 naming each that is not, 2 on bad arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

READY_PATH = "/readyz"
TIMEOUT_S = 5.0


def check(base_urls: Sequence[str], client: httpx.Client) -> list[str]:
    """The failures, one line per service that is not ready (empty: all ready)."""
    failures: list[str] = []
    for base in base_urls:
        url = base.rstrip("/") + READY_PATH
        try:
            response = client.get(url)
        except httpx.HTTPError as exc:
            failures.append(f"{url}: {type(exc).__name__}")
            continue
        if response.status_code != 200:
            failures.append(f"{url}: HTTP {response.status_code}")
    return failures


def main(argv: Sequence[str]) -> int:
    """Check each URL given; print one line per service."""
    bad = [arg for arg in argv if urlsplit(arg).scheme not in ("http", "https") or not urlsplit(arg).netloc]
    if not argv or bad:
        sys.stderr.write(
            f"usage: python -m aether.smoke http://service:8000 ...; not a URL: {', '.join(bad) or 'none given'}\n"
        )
        return 2
    with httpx.Client(timeout=TIMEOUT_S) as client:
        failures = check(argv, client)
    for line in failures:
        sys.stdout.write(f"NOT READY {line}\n")
    sys.stdout.write(f"{len(argv) - len(failures)} of {len(argv)} services ready\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
