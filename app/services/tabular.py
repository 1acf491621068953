"""Analytics and film-search answers as CSV, for analysts' spreadsheets and scripts.

The rows are those of the JSON answer, whatever its shape (the same shapes the dashboard
widgets know, see `app.services.widget_catalog`):

* `items` (genres, trends, top films, film search...): one row per item; nested statistics
  become columns named `<field>_<stat>` (`revenue_mean`, `roi_p75`), lists are joined with `|`
  (a list of objects by each one's first member, e.g. a segment's genre names);
* a histogram (`edges`, `counts`): one row per bin, `bin_start,bin_end,count`;
* a correlation matrix: a leading `field` column, then one column per field;
* anything else (the summary): one row, nested members flattened the same way.

The metadata of the JSON answer (data version, echoed filters) travels in the response
headers instead (`X-Data-Version`). Unknown values are empty cells, never 0.

Titles, company and people names come from TMDB, where anyone can edit them: a text cell
starting with `=`, `+`, `-`, `@`, a tab or a carriage return would be run as a formula by a
spreadsheet, so it is prefixed with `'` (OWASP's advice on CSV injection). Numbers are
written as numbers, so a negative profit stays a number.
"""

from __future__ import annotations

import csv
import io
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from typing import Any

from pydantic import BaseModel

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
LIST_SEPARATOR = "|"
# Top-level members of every analytics answer that describe it rather than hold its data.
METADATA = frozenset({"data_version", "filters"})
Cell = str | int | float


def safe_text(text: str) -> str:
    """`text` as a cell no spreadsheet will evaluate."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def cell(value: Any) -> Cell:
    """One CSV cell: numbers as numbers, unknown as empty, text guarded, lists joined."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return safe_text(LIST_SEPARATOR.join(_item(v) for v in value if v is not None))
    return safe_text(str(value))


def _item(value: Any) -> str:
    """A list item in a cell: an object (a segment's genre with its shares) by its first
    member (the name), anything else as text."""
    if isinstance(value, Mapping) and value:
        return str(next(iter(value.values())))
    return str(value)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (`Stats`, `Stats | None`), or None for anything else."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(models) == 1:
            return _nested_model(models[0])
    return None


def model_columns(model: type[BaseModel]) -> list[tuple[str, ...]]:
    """The paths of the columns of `model`, nested models flattened (from the schema, so
    that an empty answer still has its header)."""
    paths: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        nested = _nested_model(info.annotation)
        if nested is not None:
            paths += [(name, *sub) for sub in model_columns(nested)]
        else:
            paths.append((name,))
    return paths


def _lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _flatten(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """(path..., value) for every leaf of a dumped record (dicts recursed, lists kept)."""
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _item_model(model: type[BaseModel]) -> type[BaseModel] | None:
    info = model.model_fields.get("items")
    if info is None or typing.get_origin(info.annotation) is not list:
        return None
    (arg,) = typing.get_args(info.annotation)
    return arg if isinstance(arg, type) and issubclass(arg, BaseModel) else None


def rows(answer: BaseModel) -> tuple[list[str], list[list[Cell]]]:
    """The header and rows of `answer` (see the module docstring for each shape)."""
    data = answer.model_dump(mode="json")
    item_model = _item_model(type(answer))
    if item_model is not None:
        paths = model_columns(item_model)
        header = ["_".join(p) for p in paths]
        return header, [[cell(_lookup(item, p)) for p in paths] for item in data["items"]]
    if "edges" in data and "counts" in data:
        edges, counts = data["edges"], data["counts"]
        bins = [[cell(edges[i]), cell(edges[i + 1]), cell(c)] for i, c in enumerate(counts)]
        return ["bin_start", "bin_end", "count"], bins
    if "matrix" in data and "fields" in data:
        fields = [str(f) for f in data["fields"]]
        matrix = [
            [cell(name), *(cell(x) for x in row)]
            for name, row in zip(fields, data["matrix"], strict=True)
        ]
        return ["field", *fields], matrix
    leaves = [(p, v) for p, v in _flatten(data) if p[0] not in METADATA]
    return ["_".join(p) for p, _ in leaves], [[cell(v) for _, v in leaves]]


def write(header: Iterable[str], body: Iterable[Iterable[Cell]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # RFC 4180: CRLF line ends, quotes where needed
    writer.writerow([safe_text(h) for h in header])
    writer.writerows(body)
    return buffer.getvalue().encode("utf-8")


def to_csv(answer: BaseModel) -> bytes:
    """`answer` as CSV bytes (UTF-8, a header row first); a `Render` for the engine."""
    header, body = rows(answer)
    return write(header, body)
