"""What a MongoDB URI says about where the database is and whether the connection is
encrypted, read from the text alone (no DNS lookup, no connection): for the production check in
`app.settings` and for `app.db`, which must agree on what "local" means."""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qsl, unquote

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def is_loopback(host: str) -> bool:
    """`localhost`, a loopback address, or a Unix socket path: never leaves the machine."""
    host = unquote(host).strip("[]")
    if host == "localhost" or host.startswith("/") or host.endswith(".sock"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hosts(uri: str) -> list[str]:
    """The hosts a `mongodb://` or `mongodb+srv://` URI names (without ports)."""
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    netloc = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    found = []
    for node in netloc.split(","):
        if node.startswith("["):  # [IPv6]:port
            found.append(node[1 : node.find("]")])
        else:
            found.append(node.rsplit(":", 1)[0] if node.count(":") == 1 else node)
    return [h for h in found if h]


def options(uri: str) -> dict[str, str]:
    """The URI's query options, names lower-cased (MongoDB reads them case-insensitively)."""
    query = uri.split("?", 1)[1] if "?" in uri else ""
    return {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)}


def is_local(uri: str) -> bool:
    """Every host the URI names is on this machine."""
    names = hosts(uri)
    return bool(names) and all(is_loopback(h) for h in names)


def uri_requests_tls(uri: str) -> bool:
    """Whether the URI alone turns TLS on: `tls=true` (or the older `ssl=true`), or a
    `mongodb+srv://` URI, where TLS is on unless switched off."""
    opts = options(uri)
    values = {opts[k].lower() for k in ("tls", "ssl") if k in opts}
    if values & _FALSE:
        return False
    return bool(values & _TRUE) or uri.startswith("mongodb+srv://")


def uri_refuses_tls(uri: str) -> bool:
    """Whether the URI switches TLS off explicitly (`tls=false` / `ssl=false`)."""
    opts = options(uri)
    return any(opts[k].lower() in _FALSE for k in ("tls", "ssl") if k in opts)
