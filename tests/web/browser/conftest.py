"""One node and one Chromium per test process; a signed-in page per test, whose every
request is logged and checked at teardown to have gone to the node alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.web.browser.harness import (
    VIEWPORT,
    NetworkLog,
    Node,
    chromium_args,
    require_chromium,
    running_node,
    sign_in,
)

#: How long a step may wait for the page: a missing element fails fast, not after 30 s.
STEP_MS = 10_000

OpenAs = Callable[..., Any]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=chromium_args())
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def node(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A real `tether serve` with the browser estate, shared by every browser test."""
    with running_node(tmp_path_factory.mktemp("browser-node")) as running:
        yield running


@pytest.fixture
def network() -> list[NetworkLog]:
    """The network logs of this test's browser contexts."""
    return []


class Browsers:
    """Browser contexts (each a person with their own cookies) on the node, each with a
    log of its requests; `close()` closes them and fails if any went elsewhere."""

    def __init__(self, browser: Any, node: Node, logs: list[NetworkLog]) -> None:
        self.browser, self.node, self.logs = browser, node, logs
        self.contexts: list[Any] = []

    def open(
        self,
        role: str = "admin",
        *,
        token: str | None = None,
        allowed: set[str] | None = None,
        signed_in: bool = True,
    ) -> Any:
        context = self.browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(STEP_MS)
        log = NetworkLog(self.node.origin, set(allowed or ()))
        context.on("request", log.record)
        self.contexts.append(context)
        self.logs.append(log)
        page = context.new_page()
        if signed_in:
            sign_in(page, self.node, token or self.node.token_for(role))
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        foreign = [url for log in self.logs for url in log.foreign()]
        assert not foreign, f"the pages made requests to other origins: {foreign}"


@pytest.fixture
def open_as(browser: Any, node: Node, network: list[NetworkLog]) -> Iterator[OpenAs]:
    """`open_as(role)`: a new browser (its own cookies) signed in with a token of `role`
    (or `token=`), as its page; `signed_in=False` for one at the sign-in form. Every
    request its pages make must go to the node (checked at teardown); `allowed=` names
    other origins a test means to visit."""
    browsers = Browsers(browser, node, network)
    yield browsers.open
    browsers.close()


@pytest.fixture(scope="module")
def admin_page(browser: Any, node: Node) -> Iterator[Any]:
    """One signed-in admin page for a whole module of read-only checks (same network
    check, at the module's end)."""
    browsers = Browsers(browser, node, [])
    yield browsers.open()
    browsers.close()
