"""Tables as Markdown and HTML: best value bold, second best underlined.

Markdown uses ``**x**`` and ``<u>x</u>`` (GitHub renders the inline tag); HTML uses ``<b>`` and
``<u>``. Section headings (e.g. the paper's "Below are values for the pre- and post-contrast
subtraction") become a full-width row. An unavailable table renders as its title and reason.
"""

from __future__ import annotations

import html

from seqablate.analysis.tables import Cell, Table


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def cell_markdown(c: Cell) -> str:
    """``**45.0** ± 1.0 (44.0, 46.0)`` for the best, ``<u>..</u>`` for the second."""
    main = c.main
    if c.emphasis == "best":
        main = f"**{main}**"
    elif c.emphasis == "second":
        main = f"<u>{main}</u>"
    return _md_escape(main + c.detail)


def cell_html(c: Cell) -> str:
    main = html.escape(c.main)
    if c.emphasis == "best":
        main = f"<b>{main}</b>"
    elif c.emphasis == "second":
        main = f"<u>{main}</u>"
    cls = ' class="missing"' if c.missing else ""
    return f"<td{cls}>{main}{html.escape(c.detail)}</td>"


def table_heading(t: Table) -> str:
    return f"Table {t.id}: {t.title}"


def table_markdown(t: Table) -> str:
    """The table as a Markdown section (heading, table, notes, missing runs)."""
    lines = [f"### {table_heading(t)}", ""]
    if not t.available:
        lines.append(f"*Not available:* {t.reason}")
        if t.missing:
            lines += ["", "Missing:"] + [f"- {m}" for m in t.missing]
        return "\n".join(lines) + "\n"
    cols = t.label_columns + t.value_columns
    lines.append("| " + " | ".join(_md_escape(c) for c in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for r in t.rows:
        if r.section:
            lines.append(f"| *{_md_escape(r.section)}* |" + " |" * (len(cols) - 1))
        cells = [_md_escape(x) for x in r.labels] + [cell_markdown(c) for c in r.cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Mean ± std across seeds, in percent; mAP with its 95 % CI (see below which one). "
        "Best in **bold**, second <u>underlined</u>."
    )
    for n in t.notes:
        lines.append(f"\n{n}")
    if t.missing:
        lines += ["", "Missing (not shown as numbers):"] + [f"- {m}" for m in t.missing]
    return "\n".join(lines) + "\n"


def table_html(t: Table) -> str:
    """The table as an HTML ``<section>``."""
    out = [f'<section class="table" id="table-{html.escape(t.id)}">', f"<h3>{html.escape(table_heading(t))}</h3>"]
    if not t.available:
        out.append(f"<p class=\"na\"><i>Not available:</i> {html.escape(t.reason)}</p>")
    else:
        cols = t.label_columns + t.value_columns
        out.append("<table>")
        out.append("<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr></thead>")
        out.append("<tbody>")
        for r in t.rows:
            if r.section:
                out.append(f'<tr class="section"><td colspan="{len(cols)}"><i>{html.escape(r.section)}</i></td></tr>')
            out.append(
                "<tr>"
                + "".join(f"<td>{html.escape(x)}</td>" for x in r.labels)
                + "".join(cell_html(c) for c in r.cells)
                + "</tr>"
            )
        out.append("</tbody></table>")
        out.append(
            "<p class=\"caption\">Mean ± std across seeds, in percent; mAP with its 95 % CI (see "
            "below which one). Best in <b>bold</b>, second <u>underlined</u>.</p>"
        )
        for n in t.notes:
            out.append(f"<p class=\"note\">{html.escape(n)}</p>")
    if t.missing:
        out.append("<p>Missing (not shown as numbers):</p><ul class=\"missing\">")
        out += [f"<li>{html.escape(m)}</li>" for m in t.missing]
        out.append("</ul>")
    out.append("</section>")
    return "\n".join(out)
