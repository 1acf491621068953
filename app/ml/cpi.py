"""Constant dollars: the US CPI-U annual averages shipped as data (`app/ml/data/cpi_u_annual.csv`,
source and licence in its header).

A film's money is deflated by the price level of its release year and expressed in dollars of
the table's last year (the *base year*). Years before the table use its first year; years
after it (films announced for later) use the base year, i.e. no inflation is assumed beyond
what has been published.
"""

from __future__ import annotations

import csv
import math
from functools import cache
from importlib import resources

TABLE = "cpi_u_annual.csv"


@cache
def cpi_table() -> dict[int, float]:
    """year -> CPI-U annual average (1982-84 = 100)."""
    text = resources.files("app.ml").joinpath("data", TABLE).read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    table = {int(r["year"]): float(r["cpi_u"]) for r in rows}
    if not table or any(v <= 0 for v in table.values()):
        raise ValueError(f"{TABLE}: empty or non-positive index")
    return table


def log_price_levels() -> tuple[int, list[float]]:
    """(first year, log(CPI[year] / CPI[base year]) for every year from the first to the base
    year): what a fitted transformer keeps, so that a later table changes no trained model."""
    table = cpi_table()
    first, base = min(table), max(table)
    return first, [math.log(table[y] / table[base]) for y in range(first, base + 1)]


def log_level(year: int | None, first: int, levels: list[float]) -> float:
    """log(price level of `year` / base-year level); 0.0 (the base year) when the year is
    unknown or after the table."""
    if year is None:
        return 0.0
    return levels[min(max(year - first, 0), len(levels) - 1)]
