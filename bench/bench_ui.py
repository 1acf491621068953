"""Dashboard page benchmark (and the README screenshots): the starter dashboard's first render
in headless Chromium, over HTTP, on the 3,804 films of tmdb_5000_movies.train.csv.

The films are loaded into a throwaway local FerretDB (started and stopped here, by PID)
through the project's own CSV import (`app.services.csv_io`), a viewer is created, and the
service runs in uvicorn on a loopback port. Chromium is Debian's (`/usr/bin/chromium`, or
CHROMIUM_PATH), driven by Playwright; no browser is downloaded.

"First render" is the time from the start of navigation to /ui (token already in
sessionStorage, as after logging in) until every widget's chart is drawn, as the page itself
records it (`window.__ui.renderedAt`, a `performance.now()` reading). Measured:

* the very first visit of a new user: the starter dashboard is created, and the service
  computes every aggregate for the first time (its result cache is empty);
* later first visits in a fresh browser profile (no HTTP cache: plotly.js is fetched and
  parsed every time; the service's result cache is warm);
* reloads in the same profile (plotly.js from the browser cache).

    .venv/bin/python -m bench.bench_ui                        # figures -> bench/RESULTS.md
    .venv/bin/python -m bench.bench_ui --screenshots docs     # also docs/ui-1440.png, ui-375.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Page, ViewportSize, async_playwright
from pymongo import AsyncMongoClient

from app.db import Document
from app.localdb import LocalServer, free_port
from app.security import Role
from app.services import credentials
from app.services.csv_io import import_imdb_csv, import_tmdb_csv
from app.services.indexes import ensure_indexes
from bench.common import RESULTS, server_process, service_command, write_section

ROOT = Path(__file__).resolve().parent.parent
SECTION = "ui-bench"
DATA = ROOT.parent / "shared" / "data"
TMDB_CSV = DATA / "tmdb_5000_movies.train.csv"
IMDB_CSV = DATA / "imdb_5000_movie_metadata.csv"
USER, PASSWORD = "demo", "demo-password-123"
TARGET_SECONDS = 1.5
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


def chromium_path() -> str:
    for candidate in (os.environ.get("CHROMIUM_PATH"), shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    sys.exit("needs Chromium: apt-get install chromium (or set CHROMIUM_PATH)")


@contextmanager
def database(workdir: Path) -> Iterator[str]:
    """MONGODB_URI's server when set, else a local FerretDB of our own for this run."""
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    server = LocalServer(directory=workdir / "ferretdb", port=free_port())
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


async def load(uri: str, db_name: str) -> dict[str, Any]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    try:
        db = client[db_name]
        await ensure_indexes(db)
        started = time.perf_counter()
        report = await import_tmdb_csv(db, TMDB_CSV)
        if IMDB_CSV.exists():
            await import_imdb_csv(db, IMDB_CSV)
        seconds = time.perf_counter() - started
        await credentials.create_user(db, USER, Role.viewer, PASSWORD)
        return {"films": report.summary.inserted, "import_seconds": seconds}
    finally:
        await client.close()


async def drop(uri: str, db_name: str) -> None:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    try:
        await client.drop_database(db_name)
    finally:
        await client.close()


@contextmanager
def service(uri: str, db_name: str, workdir: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "MONGODB_URI": uri,
        "MONGODB_DB": db_name,
        "APP_ENV": "development",
        "RATE_LIMIT_PER_MINUTE": str(10**6),
        "LOCAL_DB_DIR": str(workdir / "unused-localdb"),
        "ARTIFACTS_DIR": str(workdir / "artifacts"),
        "LOG_LEVEL": "WARNING",
    }
    base = f"http://127.0.0.1:{port}"
    with server_process(service_command(port), env) as server:
        deadline = time.monotonic() + 120
        while True:  # database up and the first catalogue snapshot built (no models needed)
            try:
                checks = httpx.get(f"{base}/ready", timeout=5).json().get("checks", {})
                if checks.get("database") == "ok" and checks.get("analytics") == "ok":
                    break
            except (httpx.TransportError, ValueError):
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the service did not become ready")
            time.sleep(0.2)
        yield base


def login(base: str) -> str:
    answer = httpx.post(f"{base}/v1/auth/token", data={"username": USER, "password": PASSWORD})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


def token_script(token: str) -> str:
    return (
        f"sessionStorage.setItem('tmdb.token', {json.dumps(token)});"
        f"sessionStorage.setItem('tmdb.user', {json.dumps(USER)});"
    )


async def rendered(page: Page) -> dict[str, Any]:
    """Wait until every chart is drawn; the page's own timings."""
    # A selector, not a JS predicate: the page's content policy forbids eval.
    await page.wait_for_selector('body[data-rendered="true"]', state="attached", timeout=60_000)
    figures: dict[str, Any] = await page.evaluate(
        """() => {
          const nav = performance.getEntriesByType('navigation')[0];
          const plotly = performance.getEntriesByType('resource')
            .find(r => r.name.includes('/plotly-'));
          const widgets = [...document.querySelectorAll('.widget')];
          return {
            rendered_ms: window.__ui.renderedAt,
            dom_content_loaded_ms: nav.domContentLoadedEventEnd,
            plotly_fetch_ms: plotly ? plotly.responseEnd - plotly.startTime : null,
            plotly_bytes: plotly ? plotly.transferSize : null,
            widgets: widgets.length,
            ready: widgets.filter(w => w.dataset.state === 'ready').length,
            timeline: performance.getEntriesByType('resource').map(r =>
              [r.name.replace(location.origin, '').slice(0, 48),
               Math.round(r.startTime), Math.round(r.responseEnd)]),
          };
        }"""
    )
    assert figures["widgets"] and figures["ready"] == figures["widgets"], figures
    return figures


async def log_in_and_render(browser: Browser, base: str, pause: float) -> dict[str, Any]:
    """A visitor with a fresh browser profile: the log-in form, submitted after `pause`
    seconds (the time a person takes to type), until every chart is drawn."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    await page.goto(f"{base}/ui")
    await page.wait_for_selector("#login-form", state="visible")
    await page.wait_for_timeout(pause * 1000)
    await page.fill("#username", USER)
    await page.fill("#password", PASSWORD)
    submitted: float = await page.evaluate("performance.now()")
    await page.click("#login-form button[type=submit]")
    figures = await rendered(page)
    figures["submitted_ms"] = submitted
    figures["after_submit_ms"] = figures["rendered_ms"] - submitted
    await context.close()
    return figures


async def measure(base: str, token: str, runs: int) -> dict[str, Any]:
    viewport = ViewportSize(width=1440, height=900)
    out: dict[str, Any] = {
        "first_visit": None,
        "fresh_profile": [],
        "reload": [],
        "login_at_once": [],
        "login_after_3s": [],
    }
    async with chromium() as browser:
        for run in range(runs + 1):
            context = await browser.new_context(viewport=viewport)
            await context.add_init_script(token_script(token))
            page = await context.new_page()
            await page.goto(f"{base}/ui")
            figures = await rendered(page)
            if run == 0:
                out["first_visit"] = figures
            else:
                out["fresh_profile"].append(figures)
                await page.reload()
                out["reload"].append(await rendered(page))
            await context.close()
        for _ in range(runs):
            out["login_at_once"].append(await log_in_and_render(browser, base, 0))
            out["login_after_3s"].append(await log_in_and_render(browser, base, 3))
    return out


async def screenshots(base: str, token: str, directory: Path) -> list[Path]:
    written = []
    async with chromium() as browser:
        for width, height in ((1440, 900), (375, 812)):
            context = await browser.new_context(
                viewport={"width": width, "height": height}, device_scale_factor=1
            )
            await context.add_init_script(token_script(token))
            page = await context.new_page()
            await page.goto(f"{base}/ui")
            await rendered(page)
            await page.wait_for_timeout(300)  # let plotly finish its transitions
            path = directory / f"ui-{width}.png"
            await page.screenshot(path=str(path), full_page=True)
            written.append(path)
            await context.close()
    return written


def report(load_info: dict[str, Any], figures: dict[str, Any], command: str) -> str:
    first = figures["first_visit"]
    fresh = [f["rendered_ms"] for f in figures["fresh_profile"]]
    reload = [f["rendered_ms"] for f in figures["reload"]]
    at_once = [f["after_submit_ms"] for f in figures["login_at_once"]]
    at_once_total = [f["rendered_ms"] for f in figures["login_at_once"]]
    typed = [f["after_submit_ms"] for f in figures["login_after_3s"]]
    plotly = [f["plotly_fetch_ms"] for f in figures["fresh_profile"] if f["plotly_fetch_ms"]]
    dcl = [f["dom_content_loaded_ms"] for f in figures["fresh_profile"]]

    def verdict(values: list[float]) -> str:
        return "yes" if max(values) <= TARGET_SECONDS * 1000 else "no"

    def ms(value: float) -> str:
        return f"{value:,.0f} ms"

    return "\n".join(
        [
            "## Dashboard page (first render)",
            "",
            f"`{command}` on {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, headless Chromium (Debian's), FerretDB v1 local, "
            f"{load_info['films']:,} films of tmdb_5000_movies.train.csv loaded with the CSV "
            f"import ({load_info['import_seconds']:.1f} s), uvicorn on 127.0.0.1, viewport "
            "1440x900. Time until every chart of the starter dashboard is drawn "
            f"({first['widgets']} widgets: 6 plotly charts and a table), as the page records "
            "it (`window.__ui.renderedAt`, from navigation start). The machine was shared with "
            f"other work: load average {figures['load'][0]:.1f} at the start and "
            f"{figures['load'][1]:.1f} at the end of the measurements (2 cores).",
            "",
            f"| case (median / worst of {len(fresh)}) | all charts drawn | within "
            f"{TARGET_SECONDS} s |",
            "|---|---|---|",
            f"| reload or return in the same browser (plotly.js from the browser cache), from "
            f"navigation start | {ms(statistics.median(reload))} / {ms(max(reload))} | "
            f"{verdict(reload)} |",
            f"| new browser profile, log-in form filled after 3 s (as a person types), from "
            f"pressing *Log in* | {ms(statistics.median(typed))} / {ms(max(typed))} | "
            f"{verdict(typed)} |",
            f"| new browser profile, log-in submitted at once (by the script), from pressing "
            f"*Log in* | {ms(statistics.median(at_once))} / {ms(max(at_once))} | "
            f"{verdict(at_once)} |",
            f"| the same, from navigation start | {ms(statistics.median(at_once_total))} / "
            f"{ms(max(at_once_total))} | {verdict(at_once_total)} |",
            f"| new browser profile with a token already in sessionStorage, from navigation "
            f"start | {ms(statistics.median(fresh))} / {ms(max(fresh))} | {verdict(fresh)} |",
            f"| the very first visit of a new user (starter dashboard created, every aggregate "
            f"computed for the first time), from navigation start | "
            f"{ms(first['rendered_ms'])} | {verdict([first['rendered_ms']])} |",
            "",
            "What sets the figures: plotly.js is 4.8 MB of JavaScript "
            f"({figures['fresh_profile'][0]['plotly_bytes'] / 1e6:.1f} MB gzipped, fetched in "
            f"{ms(statistics.median(plotly))} here). A browser that has never run it compiles "
            "it first, which takes seconds on this machine; once it has (the second load, or "
            "while a person types on the log-in form, where the page already runs it) it comes "
            "from the browser's code cache and the dashboard is drawn within the target (the "
            "form itself does not react to typing while that first compile runs, which is why "
            "the script's at-once submit lands seconds after navigation). The "
            "page sends its data requests before running plotly.js, so the service's answers "
            f"are never the bottleneck (DOMContentLoaded at {ms(statistics.median(dcl))}, "
            "median, in a fresh profile). A partial plotly bundle would shorten the fresh-"
            "profile case, but the plotly wheel ships only the full one.",
        ]
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh-profile visits")
    parser.add_argument("--screenshots", type=Path, help="write ui-1440.png and ui-375.png here")
    parser.add_argument("--no-results", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()
    if not TMDB_CSV.exists():
        sys.exit(f"needs {TMDB_CSV}")
    command = "python -m bench.bench_ui " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp, database(Path(tmp)) as uri:
        db_name = f"bench_ui_{uuid.uuid4().hex[:8]}"
        try:
            load_info = await load(uri, db_name)
            print(f"loaded {load_info['films']} films in {load_info['import_seconds']:.1f}s")
            with service(uri, db_name, Path(tmp)) as base:
                token = login(base)
                load_before = os.getloadavg()[0]
                figures = await measure(base, token, args.runs)
                figures["load"] = [load_before, os.getloadavg()[0]]
                print(json.dumps(figures, indent=1))
                if args.screenshots:
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                    for path in await screenshots(base, token, args.screenshots):
                        print("wrote", path)
        finally:
            await drop(uri, db_name)
    markdown = report(load_info, figures, command.strip())
    print(markdown)
    if not args.no_results:
        write_section(SECTION, markdown, RESULTS)


if __name__ == "__main__":
    asyncio.run(main())
