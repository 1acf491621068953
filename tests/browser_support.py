"""Real-browser tests: Debian's Chromium driven by Playwright for Python, against the service
running in uvicorn on a loopback port.

Nothing downloads a browser: Playwright only drives the executable found here. Without one the
tests skip and say how to get it (`.ci/run` installs it on CI).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, BrowserContext, Route, async_playwright

# Flags that keep Chromium from reaching out to Google's hosts on start (refused here, and
# slow when refused) and let it run as root in a container.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_executable() -> str:
    """Path of a Chromium to drive, or skip the test saying how to get one."""
    candidates = [os.environ.get("CHROMIUM_PATH"), shutil.which("chromium"), "/usr/bin/chromium"]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip(
        "browser tests need Chromium: `apt-get install chromium` (Debian's package; .ci/run "
        "installs it) or set CHROMIUM_PATH; no browser is ever downloaded"
    )


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Run `app` (lifespan included) in uvicorn on 127.0.0.1 in a background thread; yields
    the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = chromium_executable()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def offline_context(
    browser: Browser, allowed_origins: list[str], **options: object
) -> AsyncIterator[tuple[BrowserContext, list[str]]]:
    """A browser context that can reach only `allowed_origins` (scheme://host:port): every
    other request is aborted and recorded, so a page that needs a CDN visibly breaks."""
    blocked: list[str] = []
    allowed = {_origin(o) for o in allowed_origins}
    context = await browser.new_context(**options)  # type: ignore[arg-type]

    async def gate(route: Route) -> None:
        url = route.request.url
        if _origin(url) in allowed or url.startswith(("data:", "blob:")):
            await route.continue_()
        else:
            blocked.append(url)
            await route.abort()

    await context.route("**/*", gate)
    try:
        yield context, blocked
    finally:
        await context.close()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
