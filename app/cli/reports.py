"""`tmdb-analytics report`: reports as files to hand to people who do not call the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import console, run
from app.db import open_db
from app.settings import Settings

report_app = typer.Typer(help="Write reports as self-contained HTML files.")


@report_app.command("eda")
def eda_report_cmd(
    out: Annotated[
        Path,
        typer.Option("--out", dir_okay=False, help="Where to write the HTML file"),
    ] = Path("eda-report.html"),
) -> None:
    """The catalogue's data exploration report, the one `GET /v1/reports/eda` serves."""
    from app.services.reports import write_eda_report

    if out.parent and not out.parent.is_dir():
        raise typer.BadParameter(f"folder {out.parent} does not exist", param_hint="--out")

    async def go(settings: Settings) -> Path:
        async with open_db(settings) as db:
            return await write_eda_report(db, out)

    written = run(go)
    console.print(f"data exploration report written ({written.stat().st_size:,} bytes)")
    # The path alone on stdout's last line, for scripts.
    typer.echo(str(written))
