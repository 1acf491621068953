"""HTML reports for people: the data exploration report of the catalogue (`eda`) and the
per-version model reports that training writes (`models`). Both are single self-contained
files: figures embedded as PNG, no script, no external resource."""

from app.services.reports.eda import EdaReports, build_eda_report, write_eda_report
from app.services.reports.models import model_report

__all__ = ["EdaReports", "build_eda_report", "model_report", "write_eda_report"]
