"""Every route that takes a body reads it through `app.routers.json_body`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fastapi.routing import APIRoute

from app.main import create_app
from app.routers.json_body import JSONBodyRoute, lone_surrogate
from app.settings import Settings


def api_routes(routes: Sequence[Any]) -> Iterator[APIRoute]:
    """Every API route, inside included routers too (this FastAPI wraps each included router
    and keeps its routes there)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from api_routes(inner.routes)


def test_every_route_with_a_body_reads_it_through_the_strict_parser() -> None:
    app = create_app(Settings(_env_file=None, app_env="test"))
    with_body = [r for r in api_routes(app.routes) if r.body_field is not None]
    assert len(with_body) >= 10  # predictions, dashboards, accounts, outcomes, login, ...
    loose = [r.path for r in with_body if not isinstance(r, JSONBodyRoute)]
    assert loose == []


def test_lone_surrogates_are_found_anywhere_and_pairs_are_not() -> None:
    assert lone_surrogate({"a": [1, {"b": "x\ud800"}]})
    assert lone_surrogate({"\udc00": 1})
    assert lone_surrogate(["ok", ["\udfff"]])
    assert not lone_surrogate({"a": ["Drama \U0001f3ac", 1.5, None, True, {"b": "é"}]})


async def test_a_body_that_is_not_utf8_is_a_422_naming_the_byte() -> None:
    import httpx

    app = create_app(Settings(_env_file=None, app_env="test", admin_api_key="k" * 40))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post(
            "/v1/predictions/outcomes",
            content=b'{"items": [{"id": 1, "note": "caf\xe9"}]}',
            headers={"content-type": "application/json", "X-API-Key": "k" * 40},
        )
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["msg"] == "invalid JSON at character 33: not UTF-8 text (byte 0xE9)"
