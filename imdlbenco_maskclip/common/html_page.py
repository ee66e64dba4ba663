"""Self-contained HTML pages: matplotlib figures and pictures embedded as data URIs, no network.

The report of ``benco test`` and the page of ``benco compare`` are single files that open from
disk anywhere (a laptop, a cluster's file browser, an e-mail attachment), so nothing they show
may live in another file or on the web.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from PIL import Image

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1, h2, h3 { font-weight: 600; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
figure { margin: 0.5em 0 1.5em; }
figure img { max-width: 100%; }
.warning { background: #fff3cd; border: 1px solid #e0c36c; padding: 0.5em 1em; }
.facts th { text-align: left; background: #f3f3f3; }
.facts td { text-align: left; }
.wide { overflow-x: auto; }
.estimates td { white-space: nowrap; }
.examples { display: flex; flex-wrap: wrap; gap: 0.5em; margin-bottom: 1em; }
.example { border: 1px solid #ccc; padding: 0.3em; font-size: 0.8em; text-align: center; }
.example div { white-space: nowrap; }
.example img { width: 80px; height: 80px; margin: 0 1px; }
"""


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, kind: str = "png") -> str:
    """Image bytes (``kind``: png or jpeg) as a data URI."""
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def figure_uri(figure: Any) -> str:
    """A matplotlib figure as a PNG data URI; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return data_uri(buffer.getvalue())


def picture_uri(picture: Image.Image, photo: bool = False) -> str:
    """A PIL image as a data URI: PNG, or JPEG (quality 90) for a ``photo``, a quarter of the size."""
    buffer = io.BytesIO()
    if photo:
        picture.convert("RGB").save(buffer, format="JPEG", quality=90)
    else:
        picture.save(buffer, format="PNG")
    return data_uri(buffer.getvalue(), "jpeg" if photo else "png")


def figure_html(uri: str, caption: str, figure_id: str) -> str:
    return (
        f'<figure id="{escape(figure_id)}"><img src="{uri}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


class Estimate(NamedTuple):
    """A figure with its 95% interval (``low``, ``high``: None when it has none), shown as
    ``0.672 [0.641, 0.702]``; ``marked`` appends `` *`` (e.g. an interval that excludes 0)."""

    value: float
    low: float | None
    high: float | None
    marked: bool = False


def cell(value: Any) -> str:
    """A table cell's text, in Markdown and HTML alike: floats to four places, an ``Estimate``
    to three with its interval, missing values as a dash."""
    if value is None:
        return "-"
    if isinstance(value, Estimate):
        text = f"{value.value:.3f}" if value.low is None else f"{value.value:.3f} [{value.low:.3f}, {value.high:.3f}]"
        return text + (" *" if value.marked else "")
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table_html(header: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str = "", css: str = "") -> str:
    """A table whose cells carry ``data-value`` with the exact number (and an ``Estimate``'s
    ``data-low``/``data-high``), so tests and scripts can read the page back without parsing
    rounded text."""
    attrs = (f' id="{escape(table_id)}"' if table_id else "") + (f' class="{escape(css)}"' if css else "")
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for value in row:
            data = ""
            if isinstance(value, Estimate):
                data = f' data-value="{escape(repr(value.value))}"'
                if value.low is not None:
                    data += f' data-low="{escape(repr(value.low))}" data-high="{escape(repr(value.high))}"'
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                data = f' data-value="{escape(repr(value))}"'
            cells.append(f"<td{data}>{escape(cell(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, body: str) -> str:
    """A complete HTML document with the shared style."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def grouped_bars(
    axis: Any,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], dict[str, Any]]],
    rotation: float = 0,
) -> None:
    """Bars on a matplotlib ``axis``: in each group one bar per series, side by side in the
    series' order; each series is (label, one value per group, bar style). A missing or
    non-finite value leaves a gap."""
    width = 0.8 / max(len(series), 1)
    for i, (label, values, style) in enumerate(series):
        drawn = [(g, v) for g, v in enumerate(values) if v is not None and math.isfinite(v)]
        axis.bar([g - 0.4 + width * (i + 0.5) for g, _ in drawn], [v for _, v in drawn], width, label=label, **style)
    axis.set_xticks(range(len(groups)), groups, rotation=rotation)


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
