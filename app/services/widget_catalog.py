"""What a dashboard widget may query and how it may draw it, derived from the app's routes.

Nothing here is a hand-kept copy of the analytics API: for every `GET /v1/analytics/...`
route (and `GET /v1/movies`) the accepted query parameters, with their types, defaults and
constraints, are read from the route's dependency tree (the same `Query(...)` declarations
FastAPI validates requests with, including the shared catalogue filters), and the drawable
values from its `response_model`. A parameter or endpoint added to the analytics router is
therefore accepted by dashboards as soon as the router is included.

Beyond the declared constraints a few checks live in the handlers; they are repeated here by
calling the same functions: the filters' cross-field rules (`CatalogFilter.build`), the
correlation field list (`parse_fields`) and the film-search sort (`Sort.parse`).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.routing import BaseRoute

from app.errors import DomainError
from app.models.dashboards import (
    MAX_MEASURES,
    Chart,
    EndpointInfo,
    ParamInfo,
    Shape,
    Widget,
    WidgetCatalogInfo,
)
from app.routers.filters import catalog_filter
from app.services.analytics import parse_fields
from app.services.filters import CatalogFilter
from app.services.movies_query import Sort

ANALYTICS_PREFIX = "/v1/analytics/"
SEARCH_ENDPOINT = "/v1/movies"
# A page-continuation token means nothing in a saved query; widgets draw JSON, never CSV.
EXCLUDED_PARAMS = {"cursor", "format"}
MAX_SERIES = 4

# Paths preferred as defaults, in order.
_COUNT_PATHS = ("count", "films", "value", "revenue")
_SCATTER_PAIRS = (("budget", "revenue"), ("budget.mean", "revenue.mean"))


class FieldProblem(BaseModel):
    """One invalid field of a dashboard, named the way a person reads it."""

    field: str  # e.g. "widgets[2].params.year_from"
    loc: list[str]  # the same as a request-validation error's `loc`
    msg: str
    type: str


class InvalidDashboardError(DomainError):
    status = 422
    title = "Unprocessable Content"

    def __init__(self, problems: list[FieldProblem]) -> None:
        # One entry per field: a bad global filter is not repeated for every widget.
        unique: dict[str, FieldProblem] = {}
        for problem in problems:
            unique.setdefault(problem.field, problem)
        problems = list(unique.values())
        shown = "; ".join(f"{p.field}: {p.msg}" for p in problems[:5])
        super().__init__(
            f"invalid dashboard: {shown}",
            errors=[p.model_dump() for p in problems],
        )
        self.problems = problems


# --- reading routes ------------------------------------------------------------------------


def _query_fields(dependant: Dependant) -> Iterator[Any]:
    """Every query parameter of a route, its dependencies' included (depth first)."""
    yield from dependant.query_params
    for sub in dependant.dependencies:
        yield from _query_fields(sub)


def _params_model(name: str, dependant: Dependant) -> tuple[type[BaseModel], list[str]]:
    """A pydantic model accepting exactly the route's query parameters, with their
    constraints (`Query(ge=..., max_length=...)` become the same annotated metadata)."""
    definitions: dict[str, Any] = {}
    order: list[str] = []
    for model_field in _query_fields(dependant):
        alias = model_field.alias
        if alias in order or alias in EXCLUDED_PARAMS or "." in alias or alias.startswith("$"):
            continue  # (a name MongoDB could not store as a key is not offered to widgets)
        info = model_field.field_info
        annotation = (
            Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        )
        default = ... if info.is_required() else info.get_default(call_default_factory=True)
        # Field names of our own, the parameter's name as the alias: any query name works
        # (`min-votes`, `json`...) without clashing with Python or with BaseModel attributes.
        field = Field(default, alias=alias, description=info.description)
        definitions[f"p{len(order)}"] = (annotation, field)
        order.append(alias)
    model = create_model(name, __config__=ConfigDict(extra="forbid"), **definitions)
    return model, order


def _admits(annotation: Any, kinds: tuple[type, ...]) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_admits(a, kinds) for a in typing.get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, kinds)


def _is_numeric(annotation: Any) -> bool:
    if _admits(annotation, (str,)) or _admits(annotation, (bool,)):
        return False
    return _admits(annotation, (int, float))


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _numeric_paths(model: type[BaseModel]) -> list[str]:
    paths: list[str] = []
    for name, info in model.model_fields.items():
        if name == "id":
            continue
        if _is_numeric(info.annotation):
            paths.append(name)
            continue
        nested = _model_of(info.annotation)
        if nested is not None and typing.get_origin(info.annotation) is not list:
            paths += [
                f"{name}.{sub}"
                for sub, i in nested.model_fields.items()
                if _is_numeric(i.annotation)
            ]
    return paths


def _label(model: type[BaseModel]) -> str | None:
    for name, info in model.model_fields.items():
        if _admits(info.annotation, (str,)) and typing.get_origin(info.annotation) is not list:
            return name
    return None


@dataclass(frozen=True)
class EndpointSpec:
    """What one endpoint accepts and what can be drawn from its answer."""

    endpoint: str
    summary: str
    params_model: type[BaseModel]
    param_names: list[str]
    shape: Shape
    label: str | None
    measures: list[str]
    charts: list[Chart]
    default_measures: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_route(cls, route: Any) -> EndpointSpec:
        """`route`: an `APIRoute` as the app serves it (prefix and include-time
        dependencies applied)."""
        slug = route.path.strip("/").replace("/", "_")
        params_model, names = _params_model(f"Params_{slug}", route.dependant)
        response = route.response_model
        fields = (
            response.model_fields
            if isinstance(response, type) and issubclass(response, BaseModel)
            else {}
        )
        label: str | None = None
        measures: list[str] = []
        charts: list[Chart]
        shape: Shape
        if "items" in fields and (item := _model_of(fields["items"].annotation)) is not None:
            shape = "rows"
            label = _label(item)
            measures = _numeric_paths(item)
            charts = ["bar", "line", "scatter", "table"]
        elif "edges" in fields and "counts" in fields:
            shape, charts = "histogram", ["histogram", "table"]
        elif "matrix" in fields:
            shape, charts = "matrix", ["heatmap", "table"]
        else:
            shape, charts = "record", ["table"]
        if shape == "rows" and len(measures) < 2:
            charts.remove("scatter")
        defaults: dict[str, list[str]] = {c: [] for c in charts}
        if shape == "rows" and measures:
            first = next((p for p in _COUNT_PATHS if p in measures), measures[0])
            defaults["bar"] = defaults["line"] = [first]
            if "scatter" in charts:
                pair = next(
                    (list(p) for p in _SCATTER_PAIRS if p[0] in measures and p[1] in measures),
                    measures[:2],
                )
                defaults["scatter"] = pair
            table = [m for m in measures if "." not in m or m.endswith(".mean")]
            defaults["table"] = table[:MAX_MEASURES]
        return cls(
            endpoint=route.path,
            summary=route.summary or route.name,
            params_model=params_model,
            param_names=names,
            shape=shape,
            label=label,
            measures=measures,
            charts=charts,
            default_measures=defaults,
        )


def _widget_routes(routes: Iterable[BaseRoute]) -> Iterator[Any]:
    """The routes a widget may query, as the app serves them (with their prefix)."""
    for route in iter_route_contexts(list(routes)):
        path, methods = route.path, route.methods or set()
        if not isinstance(route.original_route, APIRoute) or not path or "GET" not in methods:
            continue
        if "{" not in path and (path.startswith(ANALYTICS_PREFIX) or path == SEARCH_ENDPOINT):
            yield route


# Checks the handlers make beyond the declared constraints, by calling the same functions.
_EXTRA_CHECKS: dict[str, Callable[[Any], object]] = {
    "fields": parse_fields,
    "sort": lambda value: Sort.parse(value),
}


def _message(exc: DomainError, name: str) -> str:
    prefix = f"{name}: "
    return exc.detail[len(prefix) :] if exc.detail.startswith(prefix) else exc.detail


class WidgetCatalog:
    """The endpoints a widget may use, built once from the app's routes."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self.endpoints: dict[str, EndpointSpec] = {}
        for route in _widget_routes(routes):
            self.endpoints[route.path] = EndpointSpec.from_route(route)
        self.filters_model, self.filter_names = _params_model(
            "DashboardFilters", get_dependant(path="/", call=catalog_filter)
        )
        self._info: WidgetCatalogInfo | None = None
        self._info_json: bytes | None = None

    # --- validation ------------------------------------------------------------------------

    def validate(
        self, widgets: list[Widget], filters: Mapping[str, Any]
    ) -> tuple[list[Widget], dict[str, Any]]:
        """Checked and normalized widgets and filters; raises `InvalidDashboardError`
        naming every bad field (`widgets[2].params.year_from`, `filters.language`)."""
        problems: list[FieldProblem] = []
        clean_filters = self._check(self.filters_model, filters, ["filters"], problems)
        if clean_filters is not None:
            self._cross_check(clean_filters, {}, ["filters"], problems)
        out: list[Widget] = []
        for index, widget in enumerate(widgets):
            base = ["widgets", str(index)]
            spec = self.endpoints.get(widget.endpoint)
            if spec is None:
                problems.append(
                    _problem(
                        [*base, "endpoint"],
                        "unknown endpoint; choose one of " + ", ".join(sorted(self.endpoints)),
                        "value_error.endpoint",
                    )
                )
                continue
            params = self._check(spec.params_model, widget.params, [*base, "params"], problems)
            if params is not None and clean_filters is not None:
                self._cross_check(clean_filters, params, [*base, "params"], problems)
            measures = self._check_chart(spec, widget, base, problems)
            if params is not None and measures is not None:
                out.append(widget.model_copy(update={"params": params, "measures": measures}))
        if problems:
            raise InvalidDashboardError(problems)
        return out, clean_filters or {}

    @staticmethod
    def _check(
        model: type[BaseModel],
        values: Mapping[str, Any],
        loc: list[str],
        problems: list[FieldProblem],
    ) -> dict[str, Any] | None:
        try:
            parsed = model.model_validate(dict(values))
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                where = [*loc, *(str(p) for p in err["loc"])]
                kind = "extra_forbidden" if err["type"] == "extra_forbidden" else err["type"]
                msg = "not accepted by this endpoint" if kind == "extra_forbidden" else err["msg"]
                problems.append(_problem(where, msg, kind))
            return None
        # Only what the client set, as JSON values (defaults stay implicit).
        clean: dict[str, Any] = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        for name, value in clean.items():
            check = _EXTRA_CHECKS.get(name)
            if check is None or value is None:
                continue
            try:
                check(value)
            except DomainError as exc:
                problems.append(_problem([*loc, name], _message(exc, name), "value_error"))
        return clean

    def _cross_check(
        self,
        filters: Mapping[str, Any],
        params: Mapping[str, Any],
        loc: list[str],
        problems: list[FieldProblem],
    ) -> None:
        """The filters a widget ends up with (its own over the dashboard's) must agree."""
        merged = {**filters, **params}
        values = {name: merged.get(name) for name in self.filter_names}
        try:
            CatalogFilter.build(
                values["genre"],
                values["year_from"],
                values["year_to"],
                values["language"],
                values["company"],
                values["min_votes"],
            )
        except DomainError as exc:
            named = [
                n for n in self.filter_names if exc.detail.startswith(n) or f" {n} " in exc.detail
            ]
            own = [n for n in named if n in params]
            name = (own or named or [""])[0]
            where = loc if own or loc[0] == "filters" else ["filters"]
            problems.append(_problem([*where, name] if name else where, exc.detail, "value_error"))

    @staticmethod
    def _check_chart(
        spec: EndpointSpec, widget: Widget, base: list[str], problems: list[FieldProblem]
    ) -> list[str] | None:
        if widget.chart not in spec.charts:
            problems.append(
                _problem(
                    [*base, "chart"],
                    f"{widget.chart!r} does not fit {spec.endpoint}; choose one of "
                    + ", ".join(spec.charts),
                    "value_error.chart",
                )
            )
            return None
        measures = list(widget.measures) or list(spec.default_measures.get(widget.chart, []))
        unknown = [m for m in measures if m not in spec.measures]
        if unknown:
            problems.append(
                _problem(
                    [*base, "measures"],
                    f"unknown {', '.join(unknown)}"
                    + (f"; choose from {', '.join(spec.measures)}" if spec.measures else ""),
                    "value_error.measures",
                )
            )
            return None
        wanted = {
            "bar": (1, MAX_SERIES),
            "line": (1, MAX_SERIES),
            "scatter": (2, 2),
            "table": (0, MAX_MEASURES),
        }.get(widget.chart, (0, 0))
        if not wanted[0] <= len(measures) <= wanted[1]:
            count = f"{wanted[0]}" if wanted[0] == wanted[1] else f"{wanted[0]} to {wanted[1]}"
            problems.append(
                _problem(
                    [*base, "measures"],
                    f"a {widget.chart} takes {count} measures",
                    "value_error.measures",
                )
            )
            return None
        return measures

    # --- the effective query ---------------------------------------------------------------

    def query(self, widget: Widget, filters: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The query string a widget sends: the dashboard's filters its endpoint accepts,
        overridden by its own parameters; lists become repeated parameters."""
        spec = self.endpoints.get(widget.endpoint)
        accepted = set(spec.param_names) if spec else set()
        merged = {k: v for k, v in filters.items() if k in accepted}
        merged.update(widget.params)
        pairs: list[tuple[str, str]] = []
        for name, value in merged.items():
            items = value if isinstance(value, list) else [value]
            for item in items:
                if item is None:
                    continue
                text = ("true" if item else "false") if isinstance(item, bool) else str(item)
                pairs.append((name, text))
        return pairs

    # --- what clients see ------------------------------------------------------------------

    def info(self) -> WidgetCatalogInfo:
        """What clients see (built once: the routes do not change while the app runs)."""
        if self._info is None:
            self._info = self._build_info()
        return self._info

    def info_json(self) -> bytes:
        if self._info_json is None:
            self._info_json = self.info().model_dump_json(by_alias=True).encode()
        return self._info_json

    def _build_info(self) -> WidgetCatalogInfo:
        return WidgetCatalogInfo(
            endpoints=[self._endpoint_info(s) for s in self.endpoints.values()],
            filters=_param_infos(self.filters_model, self.filter_names, set(self.filter_names)),
        )

    def _endpoint_info(self, spec: EndpointSpec) -> EndpointInfo:
        return EndpointInfo(
            endpoint=spec.endpoint,
            summary=spec.summary,
            shape=spec.shape,
            label=spec.label,
            charts=spec.charts,
            measures=spec.measures,
            default_measures=spec.default_measures,
            params=_param_infos(spec.params_model, spec.param_names, set(self.filter_names)),
        )


def _param_infos(model: type[BaseModel], names: list[str], filters: set[str]) -> list[ParamInfo]:
    schema = model.model_json_schema()
    properties: dict[str, Any] = schema.get("properties", {})
    out = []
    for name in names:
        prop = dict(properties.get(name, {}))
        prop.pop("title", None)
        default = prop.pop("default", None)
        description = prop.pop("description", None)
        out.append(
            ParamInfo(
                name=name,
                description=description,
                default=default,
                json_schema=prop,
                filter=name in filters,
            )
        )
    return out


def _problem(loc: list[str], msg: str, kind: str) -> FieldProblem:
    text = ""
    for part in loc:
        if part.isdigit():
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return FieldProblem(field=text, loc=["body", *loc], msg=msg, type=kind)
