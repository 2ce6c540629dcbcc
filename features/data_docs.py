"""Great Expectations' Data Docs, kept across runs and readable with no internet.

GE writes each Data Docs index as an empty ``<table>`` that bootstrap-table fills from a
JavaScript literal, with jQuery, Bootstrap and the icons loaded from CDNs: offline, the index
was blank. ``render_offline`` writes those rows into the tables as plain HTML (status in
words, the run time linking to its result), so the page reads without a network; online,
bootstrap-table redraws the same rows with its sorting and filters.

Past runs stay: ``prune`` keeps the newest ``keep`` runs of each suite in the results store
and the site, because GE re-renders every stored result on each docs build.
"""
from __future__ import annotations

import ast
import html
import re
import shutil
from pathlib import Path

# One filled table in GE's index template: $('#<id>').bootstrapTable(Object.assign({columns: [...], data: [...]
_TABLE = re.compile(r"\$\('#(?P<id>[\w-]+)'\)\.bootstrapTable\(\s*Object\.assign\(\s*\{\s*columns:\s*(?P<columns>\[.*?\]),\s*"
                    r"data:\s*(?P<data>\[.*?\]),\s*\n", re.S)
_STATUS = (("fa-check-circle", "passed"), ("fa-times", "failed"))


def _cell(field: str, row: dict, linked: bool) -> str:
    # Cells are GE's own markup, as bootstrap-table would insert it.
    text = str(row.get(field, ""))
    if field == "validation_success":
        words = [word for icon, word in _STATUS if icon in text]
        text = f"{text}<span class=\"ge-offline-status\">{words[0] if words else ''}</span>"
    if linked and row.get("_table_row_link_path"):  # the row's click target, as a plain link
        text = f"<a href=\"{html.escape(str(row['_table_row_link_path']), quote=True)}\">{text}</a>"
    return f"<td>{text}</td>"


def static_rows(columns: list[dict], data: list[dict]) -> str:
    """A ``<thead>`` and ``<tbody>`` holding what bootstrap-table would draw; the run time
    (or the first column) links to the row's page."""
    fields = [c["field"] for c in columns]
    link = "run_time" if "run_time" in fields else fields[0]
    head = "".join(f"<th>{html.escape(str(c.get('title', c['field'])))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(f, row, f == link) for f in fields) + "</tr>" for row in data)
    return f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"


def render_offline(index: Path) -> int:
    """Fill each of ``index``'s script-drawn tables with its rows; returns the rows written."""
    page = index.read_text(encoding="utf-8")
    written = 0
    for match in _TABLE.finditer(page):
        columns, data = ast.literal_eval(match["columns"]), ast.literal_eval(match["data"])
        empty = re.compile(r"(<table\s+id=\"" + re.escape(match["id"]) + r"\"[^>]*>)\s*(</table>)")
        page, found = empty.subn(lambda m: m[1] + static_rows(columns, data) + m[2], page, count=1)
        written += len(data) if found else 0
    index.write_text(page, encoding="utf-8")
    return written


def prune(project: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` runs of each suite from the GE project at
    ``project`` (its results store and its local site), before a new run is added."""
    removed = []
    roots = [project / "gx" / "uncommitted" / "validations", project / "gx" / "uncommitted" / "data_docs" / "local_site" / "validations"]
    for root in roots:
        for suite in (path for path in root.iterdir() if path.is_dir()) if root.exists() else ():
            # <suite>/<run name>/<run time>/...: run times sort as ISO strings.
            runs = sorted((run for name in suite.iterdir() if name.is_dir() for run in name.iterdir() if run.is_dir()),
                          key=lambda run: run.name)
            for old in runs[: max(len(runs) - keep, 0)]:
                shutil.rmtree(old)
                removed.append(old)
    return removed
