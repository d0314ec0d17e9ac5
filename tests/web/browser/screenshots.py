"""The README's screenshots, from a seeded node: `python -m tests.web.browser.screenshots`
writes docs/screenshots/overview.png, identity.png and lineage.png (`--out DIR` elsewhere)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

from tests.web.browser.harness import (
    LEASED,
    OTHER_OWNERS,
    VIEWPORT,
    Node,
    chromium_args,
    require_chromium,
    running_node,
    sign_in,
)

SHOTS = {
    "overview.png": "/ui/",
    "identity.png": f"/ui/identities/{LEASED}",
    "lineage.png": f"/ui/lineage?identity={LEASED}",
}


def seed(node: Node) -> None:
    """Enough life for the pictures: leases, a revocation, usage over the month, a review."""
    for identity in (LEASED, LEASED, LEASED, OTHER_OWNERS):
        node.lease(identity)
    revoked, _ = node.lease(LEASED)
    node.api("POST", "/v1/leases/revoke", json={"lease": revoked, "reason": "rotated"})
    now = dt.datetime.now(dt.UTC)
    usage = [
        {
            "identity": LEASED,
            "at": (now - dt.timedelta(days=day, hours=hour)).isoformat(),
            "source": f"10.0.4.{day % 7 + 10}",
            "action": "push",
            "scopes": ["push"],
        }
        for day in range(0, 28)
        for hour in range(0, 1 + (day * 7) % 5)
    ]
    node.api("POST", "/v1/usage", json=usage)
    node.api("POST", "/v1/findings/evaluate")
    node.api("POST", "/v1/reviews", json={"owner": "team-a"})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.web.browser.screenshots")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="tether-shots-") as tmp,
        running_node(Path(tmp)) as node,
    ):
        seed(node)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=chromium_args())
            page = browser.new_page(viewport=VIEWPORT)
            sign_in(page, node, node.admin)
            # Verified once, so the overview shows the chain's status.
            page.goto(f"{node.addr}/ui/audit/verify")
            for name, path in SHOTS.items():
                answer = page.goto(node.addr + path)
                assert answer is not None and answer.status == 200, (path, answer and answer.status)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(args.out / name))
                print(f"wrote {args.out / name}", file=sys.stderr)
            browser.close()


if __name__ == "__main__":
    main()
