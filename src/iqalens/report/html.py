"""HTML building blocks of the report: escaping, numbers, tables, figures, provenance, the page shell.

The page must open anywhere, offline, years later: no scripts, no web fonts, no external style sheet
or image; figures are SVG documents embedded as ``data:`` URIs (each figure keeps its element ids to
itself, which inline ``<svg>`` elements sharing one page would not). Every text that comes from a
run (paths, model names, notes) goes through :func:`esc`. The layout is one column with a maximum
width: on a phone, figures shrink to the screen width and wide tables scroll inside their own box
instead of widening the page.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from iqalens.report.records import Provenance

CSS = """
:root { --fg: #1c2128; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --accent: #0b5cad;
        --warn: #fff6d6; --warn-line: #d4a72c; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 1rem 1rem 3rem; }
h1 { font-size: 1.6rem; line-height: 1.25; margin: .5rem 0; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; padding-bottom: .2rem; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.08rem; margin: 1.6rem 0 .4rem; }
h4 { font-size: .98rem; margin: 1rem 0 .3rem; }
h1, h2, h3, h4, p, li, dd, figcaption, code { overflow-wrap: anywhere; }
a { color: var(--accent); }
p.lead, .muted { color: var(--muted); }
nav ul { display: flex; flex-wrap: wrap; gap: .3rem 1rem; list-style: none; padding: 0; margin: .5rem 0; }
article { border: 1px solid var(--line); border-radius: 8px; padding: .4rem 1rem 1rem; margin: 1rem 0; }
article > h3 { margin-top: .6rem; }
.table-wrap { overflow-x: auto; margin: .4rem 0 1rem; max-width: 100%; }
table { border-collapse: collapse; font-size: .88rem; }
th, td { padding: .28rem .6rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.up { color: #116329; } td.down { color: #a40e26; }
td.text { min-width: 14rem; }
p.note { font-size: .82rem; color: var(--muted); margin: -.6rem 0 1rem; }
.figures { display: grid; gap: 1rem; margin: .6rem 0 1rem;
           grid-template-columns: repeat(auto-fill, minmax(min(100%, 420px), 1fr)); }
figure { margin: 0; min-width: 0; }
figure.wide { grid-column: 1 / -1; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; background: #fff; }
figcaption { font-size: .85rem; color: var(--muted); margin-top: .25rem; }
dl.prov { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: .15rem .9rem;
          font-size: .82rem; color: var(--muted); background: var(--soft); border-radius: 6px;
          padding: .5rem .8rem; margin: .8rem 0 0; }
dl.prov dt { font-weight: 600; color: var(--fg); }
dl.prov dd { margin: 0; min-width: 0; }
.callout { border-left: 4px solid var(--warn-line); background: var(--warn); padding: .5rem .9rem;
           border-radius: 0 6px 6px 0; margin: 1rem 0; }
.tag { display: inline-block; font-size: .75rem; padding: 0 .4rem; border-radius: 4px;
       background: var(--warn); border: 1px solid var(--warn-line); white-space: nowrap; }
details summary { cursor: pointer; color: var(--accent); }
footer { margin-top: 3rem; font-size: .8rem; color: var(--muted); }
@media (max-width: 600px) {
  main { padding: .6rem .6rem 2rem; }
  h1 { font-size: 1.35rem; }
  article { padding: .3rem .6rem .8rem; }
  dl.prov { grid-template-columns: minmax(0, 1fr); }
  dl.prov dd { margin-bottom: .3rem; }
  table.stack thead { display: none; }
  table.stack tr { display: block; border-bottom: 1px solid var(--line); padding: .3rem 0; }
  table.stack td { display: block; border: 0; padding: .1rem .2rem; min-width: 0; }
  table.stack td[data-label]::before { content: attr(data-label) ": "; font-weight: 600;
                                       color: var(--muted); }
}
""".strip()

MISSING = "–"


def esc(text: object) -> str:
    """Text from a run, safe inside HTML elements and attribute values."""
    return html.escape(str(text), quote=True)


def num(value: object, digits: int = 3) -> str:
    """A number with ``digits`` decimals; a dash for None, NaN and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return MISSING
    if isinstance(value, int):
        return str(value)
    return MISSING if not math.isfinite(value) else f"{value:.{digits}f}"


def pct(value: object, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return MISSING
    return f"{100 * value:.{digits}f}%"


def signed_pct(value: object, digits: int = 1) -> str:
    """A relative change as a signed percentage (+12.5%)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return MISSING
    return f"{100 * value:+.{digits}f}%"


def signed(value: object, digits: int = 3) -> str:
    """A difference with its sign."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return MISSING
    return f"{value:+.{digits}f}"


def slug(text: str, taken: set[str]) -> str:
    """A unique element id made of ``text``'s letters and digits."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"
    candidate, k = base, 2
    while candidate in taken:
        candidate, k = f"{base}-{k}", k + 1
    taken.add(candidate)
    return candidate


@dataclass(frozen=True)
class Cell:
    """A table cell whose text is already HTML (``raw``) or plain text, with an optional CSS class."""

    text: str
    css: str = ""
    raw: bool = False

    def render(self, tag: str = "td", label: str = "") -> str:
        """The element; ``label`` (the column's header) is kept in ``data-label`` for stacked tables."""
        attrs = f' class="{self.css}"' if self.css else ""
        attrs += f' data-label="{esc(label)}"' if label else ""
        return f"<{tag}{attrs}>{self.text if self.raw else esc(self.text)}</{tag}>"


def numeric(text: str, css: str = "") -> Cell:
    """A right-aligned numeric cell."""
    return Cell(text, ("num " + css).strip())


def change_cell(text: str, delta: float | None, better_when_lower: bool = False) -> Cell:
    """A numeric cell coloured by whether the change is an improvement."""
    css = ""
    if delta is not None and math.isfinite(delta) and delta != 0:
        improved = (delta < 0) if better_when_lower else (delta > 0)
        css = "up" if improved else "down"
    return numeric(text, css)


def table(
    headers: Sequence[str | Cell],
    rows: Iterable[Sequence[str | Cell]],
    note: str = "",
    stacked: bool = False,
) -> str:
    """A table in a horizontally scrolling wrapper; str cells are escaped, :class:`Cell` cells styled.

    ``stacked`` tables turn each row into a block of "header: value" lines on a phone instead of
    scrolling (for tables of long text, such as the summary). ``note`` is printed under the table.
    """
    names = [h.text if isinstance(h, Cell) else h for h in headers]

    def cell(value: str | Cell, tag: str, label: str = "") -> str:
        return (value if isinstance(value, Cell) else Cell(value)).render(tag, label if stacked else "")

    head = "".join(cell(h, "th") for h in headers)
    body = "\n".join(
        "<tr>" + "".join(cell(c, "td", n) for c, n in zip(row, names, strict=False)) + "</tr>" for row in rows
    )
    css = ' class="stack"' if stacked else ""
    after = f'<p class="note">{esc(note)}</p>' if note else ""
    return (
        f'<div class="table-wrap"><table{css}><thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody></table></div>{after}"
    )


def figure(svg: str, caption: str, wide: bool = False) -> str:
    """An SVG figure embedded as a data URI, with its caption as alt text too; ``wide`` figures take
    a whole row of the figure grid."""
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    css = ' class="wide"' if wide else ""
    return (
        f'<figure{css}><img src="data:image/svg+xml;base64,{data}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def figures(items: Sequence[str]) -> str:
    """Figures side by side where the screen is wide enough, stacked otherwise."""
    return f'<div class="figures">{"".join(items)}</div>' if items else ""


def proxy_tag(proxy: bool | None) -> str:
    """A visible marker next to numbers measured against proxy labels."""
    if proxy:
        return ' <span class="tag">proxy MOS</span>'
    if proxy is None:
        return ' <span class="tag">MOS source unknown</span>'
    return ""


def provenance(prov: Provenance, where: str) -> str:
    """Where a section's numbers come from: command, run, model, data, protocol, labels, seed, versions."""
    items: list[tuple[str, str]] = [
        ("Source", f"<code>{esc(where)}</code> (iqalens {esc(prov.command)})"),
        ("Model", esc(prov.model)),
        ("Data", esc(prov.data)),
        ("Protocol", esc(prov.protocol)),
    ]
    if prov.mos is not None:
        label = {True: "PROXY labels: ", False: "", None: "unknown source: "}[prov.mos.proxy]
        items.append(("MOS labels", f"<strong>{esc(label)}</strong>{esc(prov.mos.note)}"))
    items.append(("Seed", esc(prov.seed) if prov.seed is not None else "not recorded"))
    if prov.started:
        items.append(("Run started", esc(prov.started)))
    if prov.versions:
        items.append(("Versions", esc(", ".join(f"{k} {v}" for k, v in prov.versions.items()))))
    else:
        items.append(("Versions", "not recorded"))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f'<dl class="prov" aria-label="provenance">{body}</dl>'


def page(title: str, body: str, footer: str) -> str:
    """The whole document: one inline style sheet, no scripts, nothing fetched from anywhere."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="iqalens report">\n'
        f"<title>{esc(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n<footer>{footer}</footer>\n</main>\n</body>\n</html>\n"
    )
