"""The files the dashboard page needs, served by the service itself: no CDN, no build step.

* Our own script and style sheet ship as package data in `app/static/ui/`.
* plotly.js is the file the `plotly` Python package bundles (`plotly/package_data/
  plotly.min.js`), found with `importlib.resources`, so its version is the one in `uv.lock`.

Every asset is addressed by a name carrying its content hash (or plotly's version), so it can
be cached for a year (`immutable`) and a new release is fetched at once. Each is read once,
and gzipped once, on first use.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

from jinja2 import Environment, PackageLoader, select_autoescape

UI_STATIC = files("app") / "static" / "ui"
PLOTLY_JS = files("plotly") / "package_data" / "plotly.min.js"
OWN_ASSETS = ("ui.css", "charts.js", "app.js", "export.js")
ASSET_PREFIX = "/ui/assets/"
_MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass
class Asset:
    name: str  # the fingerprinted name in the URL
    source: str  # the package file it comes from
    media_type: str
    body: bytes
    _gzipped: bytes | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        return ASSET_PREFIX + self.name

    @property
    def text(self) -> str:
        return self.body.decode()

    def gzipped(self) -> bytes:
        """Compressed once (plotly.js: 4.8 MB -> about 1.4 MB); call from a worker thread."""
        with self._lock:
            if self._gzipped is None:
                self._gzipped = gzip.compress(self.body, compresslevel=6, mtime=0)
            return self._gzipped


def plotly_version() -> str:
    head = PLOTLY_JS.open("rb").read(200).decode("ascii", "replace")
    marker = "plotly.js v"
    start = head.find(marker)
    if start < 0:
        return "unknown"
    return head[start + len(marker) :].split()[0]


@cache
def assets() -> dict[str, Asset]:
    """Every asset by its source name (`app.js`, `plotly.min.js`)."""
    out: dict[str, Asset] = {}
    for source in OWN_ASSETS:
        body = (UI_STATIC / source).read_bytes()
        stem, ext = source.rsplit(".", 1)
        digest = hashlib.sha256(body).hexdigest()[:12]
        out[source] = Asset(f"{stem}.{digest}.{ext}", source, _MEDIA["." + ext], body)
    body = PLOTLY_JS.read_bytes()
    out["plotly.min.js"] = Asset(
        f"plotly-{plotly_version()}.min.js", "plotly.min.js", _MEDIA[".js"], body
    )
    return out


@cache
def by_url_name() -> dict[str, Asset]:
    return {a.name: a for a in assets().values()}


@cache
def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("app", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["asset"] = lambda source: assets()[source].url
    return env
