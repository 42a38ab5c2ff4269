"""Markdown and HTML reports from one structured description.

A :class:`Report` is a title plus :class:`Section` s holding paragraphs, tables
(:class:`Table`, data not pre-rendered text, so both formats render them),
images (PNG/GIF paths relative to the report folder) and, for tables another
module already renders as Markdown (e.g. :func:`diffcast.skill.markdown`), a
verbatim Markdown block that the HTML page converts (headings, pipe tables,
paragraphs). :func:`write_report` writes
``report.md`` (images linked) and ``report.html`` (images embedded as data URIs,
so the HTML file stands alone), both atomically.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.io import atomic_write_text

_MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


@dataclass
class Table:
    """A table as data.

    Attributes
    ----------
    headers : list of str
        Column names.
    rows : list of list
        Cells; floats are formatted with :attr:`floatfmt`, ``None``/NaN as "-".
    caption : str
        Line shown above the table.
    floatfmt : str
        Format spec of float cells.
    bold : set of (int, int)
        ``(row, column)`` cells to emphasise (e.g. the best score per column).
    """

    headers: list[str]
    rows: list[list[Any]]
    caption: str = ""
    floatfmt: str = ".4f"
    bold: set[tuple[int, int]] = field(default_factory=set)

    def cell(self, r: int, c: int) -> str:
        v = self.rows[r][c]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, float):
            return format(v, self.floatfmt)
        return str(v)


@dataclass
class Section:
    """A heading with paragraphs (Markdown inline syntax: ``**bold**``, `` `code` ``), tables and images."""

    heading: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (caption, path relative to the report)
    bullets: list[str] = field(default_factory=list)
    markdown: str = ""  # verbatim Markdown (headings, pipe tables, paragraphs), after the tables


@dataclass
class Report:
    """Title, an optional summary paragraph and sections."""

    title: str
    sections: list[Section] = field(default_factory=list)
    summary: str = ""


def best_cells(rows: Sequence[Sequence[Any]], columns: dict[int, str]) -> set[tuple[int, int]]:
    """Cells holding the best value per column (``columns``: index -> ``"max"``/``"min"``)."""
    out: set[tuple[int, int]] = set()
    for c, mode in columns.items():
        vals = [(r, row[c]) for r, row in enumerate(rows) if isinstance(row[c], (int, float)) and not math.isnan(row[c])]
        if not vals:
            continue
        best = (max if mode == "max" else min)(v for _, v in vals)
        out |= {(r, c) for r, v in vals if v == best}
    return out


def markdown_table(table: Table) -> str:
    """Render :class:`Table` as a GitHub-flavoured Markdown table."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = []
    if table.caption:
        lines += [f"*{table.caption}*", ""]
    lines.append("| " + " | ".join(esc(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---" if c == 0 else "---:" for c in range(len(table.headers))) + "|")
    for r in range(len(table.rows)):
        cells = []
        for c in range(len(table.headers)):
            s = esc(table.cell(r, c))
            cells.append(f"**{s}**" if (r, c) in table.bold and s != "-" else s)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    """The report as Markdown (images linked by relative path)."""
    out = [f"# {report.title}", ""]
    if report.summary:
        out += [report.summary, ""]
    for sec in report.sections:
        out += [f"## {sec.heading}", ""]
        for p in sec.paragraphs:
            out += [p, ""]
        for b in sec.bullets:
            out.append(f"- {b}")
        if sec.bullets:
            out.append("")
        for t in sec.tables:
            out += [markdown_table(t), ""]
        if sec.markdown.strip():
            out += [sec.markdown.strip(), ""]
        for caption, path in sec.images:
            out += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


_INLINE = [
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"`(.+?)`"), r"<code>\1</code>"),
    (re.compile(r"\[([^\]]+)\]\(([^)]+)\)"), r'<a href="\2">\1</a>'),
]


def _inline_html(text: str) -> str:
    s = html.escape(text, quote=False)
    for pat, rep in _INLINE:
        s = pat.sub(rep, s)
    return s


def _table_cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def markdown_block_html(text: str) -> str:
    """HTML of a small Markdown subset: ``#`` headings, pipe tables and paragraphs (inline syntax as elsewhere)."""
    out: list[str] = []
    para: list[str] = []
    lines = text.strip("\n").splitlines()

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline_html(' '.join(para))}</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i].strip()
        head = re.match(r"^(#{1,6})\s+(.*)$", line)
        if not line:
            flush()
        elif head:
            flush()
            level = min(6, len(head.group(1)))
            out.append(f"<h{level}>{_inline_html(head.group(2))}</h{level}>")
        elif line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|?\s*:?-{3,}", lines[i + 1].strip()):
            flush()
            head_cells = _table_cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_table_cells(lines[i]))
                i += 1
            thead = "<tr>" + "".join(f"<th>{_inline_html(c)}</th>" for c in head_cells) + "</tr>"
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>" for r in rows)
            out.append(f"<table><thead>{thead}</thead><tbody>{body}</tbody></table>")
            continue
        else:
            para.append(line)
        i += 1
    flush()
    return "\n".join(out)


def _data_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5em 0 1.2em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}caption{caption-side:top;font-style:italic;text-align:left;padding:.2em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-style:italic;font-size:.9em}
code{background:#f5f5f5;padding:0 .2em}
"""


def render_html(report: Report, base_dir: str | os.PathLike[str] | None = None, embed: bool = True) -> str:
    """The report as one HTML page.

    Parameters
    ----------
    report : Report
    base_dir : path-like, optional
        Folder the image paths are relative to (needed to embed them).
    embed : bool
        Embed images as base64 data URIs (the page then stands alone); link them otherwise.
    """
    base = Path(base_dir) if base_dir is not None else None
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    if report.summary:
        out.append(f"<p>{_inline_html(report.summary)}</p>")
    for sec in report.sections:
        out.append(f"<h2>{html.escape(sec.heading)}</h2>")
        out += [f"<p>{_inline_html(p)}</p>" for p in sec.paragraphs]
        if sec.bullets:
            out.append("<ul>" + "".join(f"<li>{_inline_html(b)}</li>" for b in sec.bullets) + "</ul>")
        for t in sec.tables:
            rows = []
            for r in range(len(t.rows)):
                cells = []
                for c in range(len(t.headers)):
                    s = html.escape(t.cell(r, c))
                    cells.append(f"<td><strong>{s}</strong></td>" if (r, c) in t.bold and s != "-" else f"<td>{s}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            cap = f"<caption>{_inline_html(t.caption)}</caption>" if t.caption else ""
            head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.headers) + "</tr>"
            out.append(f"<table>{cap}<thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>")
        if sec.markdown.strip():
            out.append(markdown_block_html(sec.markdown))
        for caption, path in sec.images:
            src = _data_uri(base / path) if (embed and base is not None) else None
            src = src or html.escape(path)
            out.append(
                f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{_inline_html(caption)}</figcaption></figure>'
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(report: Report, out_dir: str | os.PathLike[str], name: str = "report", embed: bool = True) -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.html`` into ``out_dir`` atomically.

    Image paths in the report are relative to ``out_dir``.

    Returns
    -------
    (Path, Path)
        The Markdown and HTML files.
    """
    out = Path(out_dir)
    md, page = out / f"{name}.md", out / f"{name}.html"
    atomic_write_text(md, render_markdown(report))
    atomic_write_text(page, render_html(report, out, embed=embed))
    return md, page
