"""A tiny document model rendered to Markdown and to one self-contained HTML file.

A :class:`Document` is a list of blocks (headings, paragraphs, paper tables, data frames,
figures). Markdown links figures by relative path; HTML embeds each PNG as a base64
``data:`` URI and inlines its CSS, so ``report.html`` opens with no network and no other file.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqablate.analysis.render import table_html, table_markdown
from seqablate.analysis.tables import Table

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:0.6em 0;font-size:0.9em}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:left}
th{background:#f0f0f0}
tr.section td{background:#fafafa}
td.missing{color:#a00}
p.note,p.caption,p.na{font-size:0.85em;color:#555}
ul.missing{font-size:0.85em;color:#a00}
img{max-width:100%;border:1px solid #ddd;margin:0.4em 0}
figure{margin:1em 0}
figcaption{font-size:0.85em;color:#555}
code{background:#f4f4f4;padding:0 3px}
"""


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str  # plain text (escaped in HTML); `code` spans are kept as is in Markdown


@dataclass
class PaperTable:
    table: Table


@dataclass
class Frame:
    """A pandas DataFrame shown as a plain table."""

    frame: Any
    caption: str = ""
    floatfmt: str = "{:.4g}"


@dataclass
class Figure:
    path: Path  # a PNG file
    caption: str


@dataclass
class Document:
    title: str
    blocks: list[Any] = field(default_factory=list)

    def add(self, *blocks: Any) -> None:
        self.blocks.extend(blocks)

    @property
    def tables(self) -> list[Table]:
        return [b.table for b in self.blocks if isinstance(b, PaperTable)]

    @property
    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]

    # ------------------------------------------------------------------ markdown
    def markdown(self, base: Path) -> str:
        """Markdown; figure paths are written relative to ``base`` (the report folder)."""
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if isinstance(b, Heading):
                out += ["#" * b.level + " " + b.text, ""]
            elif isinstance(b, Paragraph):
                out += [b.text, ""]
            elif isinstance(b, PaperTable):
                out += [table_markdown(b.table), ""]
            elif isinstance(b, Frame):
                out += [_frame_markdown(b), ""]
            elif isinstance(b, Figure):
                rel = _relative(b.path, base)
                out += [f"![{b.caption}]({rel})", "", f"*{b.caption}*", ""]
        return "\n".join(out).rstrip() + "\n"

    # ------------------------------------------------------------------ html
    def html(self) -> str:
        """One self-contained HTML page (inline CSS, images as data URIs, no scripts)."""
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(self.title)}</title>",
            f"<style>{_CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for b in self.blocks:
            if isinstance(b, Heading):
                out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
            elif isinstance(b, Paragraph):
                out.append(f"<p>{_inline_code(html.escape(b.text))}</p>")
            elif isinstance(b, PaperTable):
                out.append(table_html(b.table))
            elif isinstance(b, Frame):
                out.append(_frame_html(b))
            elif isinstance(b, Figure):
                data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
                out.append(
                    f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
                )
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def _inline_code(text: str) -> str:
    """Turn `x` spans into <code>x</code> (after escaping)."""
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _fmt(v: Any, floatfmt: str) -> str:
    if isinstance(v, float):
        return floatfmt.format(v)
    return "" if v is None else str(v)


def _frame_markdown(b: Frame) -> str:
    df = b.frame
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, b.floatfmt).replace("|", "\\|") for v in rec) + " |")
    if b.caption:
        lines += ["", b.caption]
    return "\n".join(lines)


def _frame_html(b: Frame) -> str:
    df = b.frame
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns) + "</tr></thead><tbody>"]
    for rec in df.itertuples(index=False):
        out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(v, b.floatfmt))}</td>" for v in rec) + "</tr>")
    out.append("</tbody></table>")
    if b.caption:
        out.append(f'<p class="caption">{html.escape(b.caption)}</p>')
    return "\n".join(out)
