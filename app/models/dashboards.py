"""Schemas of `/v1/dashboards`: saved dashboards, their widgets, share links and the widget
catalogue.

A widget is one query of a `/v1/analytics/*` GET endpoint (or of the film search,
`/v1/movies`) drawn as one chart. Its `params` and the dashboard's `filters` are checked
against what the endpoint itself accepts (see `app.services.widget_catalog`), so they are
plain JSON objects here.

Layout: widgets are drawn in the order of the `widgets` list (the order index is the list
position), on a grid of two columns on wide screens and one below 900 px; `width: 2` makes a
widget span both columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

MAX_WIDGETS = 24
MAX_DASHBOARDS_PER_OWNER = 50
MAX_NAME_LENGTH = 100
MAX_TITLE_LENGTH = 120
MAX_MEASURES = 12

Chart = Literal["bar", "line", "scatter", "histogram", "heatmap", "table"]
Shape = Literal["rows", "histogram", "matrix", "record"]

WIDGET_EXAMPLE: dict[str, JsonValue] = {
    "title": "Films per genre since 2000",
    "endpoint": "/v1/analytics/genres",
    "params": {"year_from": 2000},
    "chart": "bar",
    "measures": ["count"],
    "width": 1,
}


class Widget(BaseModel):
    """One chart: an analytics query and how to draw it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [WIDGET_EXAMPLE]})

    title: str = Field(min_length=1, max_length=MAX_TITLE_LENGTH)
    endpoint: str = Field(
        max_length=100,
        description="A `/v1/analytics/...` GET endpoint, or `/v1/movies` (one page of films); "
        "`GET /v1/dashboards/catalog` lists them",
        examples=["/v1/analytics/genres"],
    )
    params: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Query parameters of the endpoint, as JSON values (a list for a repeated "
        "parameter such as `genre`). They win over the dashboard's `filters`.",
    )
    chart: Chart = Field(
        description="How to draw it. `table` always fits; `histogram` only a distribution, "
        "`heatmap` only correlations; `bar`, `line` and `scatter` need a list of items."
    )
    measures: list[str] = Field(
        default_factory=list,
        max_length=MAX_MEASURES,
        description="Values to draw, as paths into each item (`count`, `revenue.sum`, "
        "`budget.median`...): one or more series for bar and line, exactly x and y for "
        "scatter, the columns of a table. Empty: the endpoint's default for the chart.",
    )
    width: Literal[1, 2] = Field(default=1, description="Grid columns spanned on wide screens")


class DashboardIn(BaseModel):
    """A dashboard as a client sends it (create and replace)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Genres since 2000",
                    "filters": {"year_from": 2000, "min_votes": 50},
                    "widgets": [WIDGET_EXAMPLE],
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    widgets: list[Widget] = Field(default_factory=list, max_length=MAX_WIDGETS)
    filters: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Global filters applied to every widget: the catalogue filters "
        "`genre` (list), `year_from`, `year_to`, `language`, `company`, `min_votes`, with "
        "the constraints of the analytics endpoints. A widget's own parameter of the same "
        "name wins.",
    )


class ShareLink(BaseModel):
    """A read-only link to a dashboard, for any authenticated user."""

    token: str = Field(description="Random, unguessable; revoke with DELETE .../share")
    url: str = Field(description="The page showing the dashboard", examples=["/ui/shared/abc"])
    api_url: str = Field(
        description="The dashboard as JSON", examples=["/v1/dashboards/shared/abc"]
    )
    created_at: datetime


class Dashboard(BaseModel):
    """A saved dashboard, as its owner sees it."""

    id: str = Field(examples=["5f2c0e8d9a7b41c3a1e0f2d4"])
    name: str
    widgets: list[Widget]
    filters: dict[str, JsonValue]
    version: int = Field(
        description="Counts changes of name, widgets and filters; the ETag, which PUT needs "
        "in If-Match",
        examples=[3],
    )
    created_at: datetime
    updated_at: datetime
    share: ShareLink | None = Field(default=None, description="Set while a share link exists")


class DashboardSummary(BaseModel):
    """A dashboard in a list."""

    id: str
    name: str
    widgets: int = Field(description="How many widgets")
    version: int
    updated_at: datetime
    shared: bool


class DashboardList(BaseModel):
    items: list[DashboardSummary] = Field(description="The caller's dashboards, newest first")
    limit: int = Field(description="Most dashboards one owner may keep", examples=[50])


class SharedDashboard(BaseModel):
    """A dashboard seen through a share link: read-only, without its owner or id."""

    name: str
    widgets: list[Widget]
    filters: dict[str, JsonValue]
    version: int
    updated_at: datetime


class ParamInfo(BaseModel):
    name: str = Field(examples=["year_from"])
    description: str | None = None
    default: JsonValue = None
    json_schema: dict[str, JsonValue] = Field(
        alias="schema", description="JSON Schema of the value, with its constraints"
    )
    filter: bool = Field(description="One of the catalogue filters shared by every endpoint")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class EndpointInfo(BaseModel):
    endpoint: str = Field(examples=["/v1/analytics/genres"])
    summary: str = Field(examples=["Genre economics"])
    shape: Shape = Field(
        description="`rows`: a list of items; `histogram`: bin edges and counts; `matrix`: a "
        "correlation matrix; `record`: one object"
    )
    label: str | None = Field(description="The item field naming each row", examples=["genre"])
    charts: list[Chart]
    measures: list[str] = Field(description="Numeric paths into an item that can be drawn")
    default_measures: dict[str, list[str]] = Field(description="Per chart")
    params: list[ParamInfo]


class WidgetCatalogInfo(BaseModel):
    """What a widget may query and draw, derived from the routes themselves."""

    endpoints: list[EndpointInfo]
    filters: list[ParamInfo] = Field(description="The global filters a dashboard may set")
    max_widgets: int = MAX_WIDGETS
    max_dashboards: int = MAX_DASHBOARDS_PER_OWNER
