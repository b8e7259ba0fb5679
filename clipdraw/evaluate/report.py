"""One self-contained HTML page per experiment, plus its tables as CSV and JSON.

The page must open offline, from an e-mail attachment or a copied folder: images are embedded
as base64 JPEG thumbnails, plots as base64 PNG (matplotlib, when installed), styles inline,
no script. Every file is written whole under a temporary name and renamed.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from PIL import Image

from ..io import atomic_write_text

THUMBNAIL = 160
MIN_THUMBNAIL = 128   # toy images (64 px) are enlarged, pixel for pixel, to stay readable
PROBABILITY_LIMITS = (-0.05, 1.05)   # a probability axis with room: a line at 0 or 1 is not hidden by the frame
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
figure { display: inline-block; margin: 0.3em; text-align: center; vertical-align: top; white-space: normal;
         width: min-content; }
figcaption { font-size: 0.75em; max-width: 170px; overflow-wrap: anywhere; }
.note { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.5em 1em; }
.scroll { overflow-x: auto; }
.row { margin-bottom: 1em; border-bottom: 1px solid #eee; }
.strip { white-space: nowrap; overflow-x: auto; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #888; vertical-align: middle; }
"""


def image_data_uri(image: Image.Image, side: int = THUMBNAIL) -> str:
    """A JPEG thumbnail (longest side ``side``) as a data: URI."""
    thumb = image.convert("RGB")
    thumb.thumbnail((side, side), Image.LANCZOS)
    if max(thumb.size) < MIN_THUMBNAIL:
        factor = -(-MIN_THUMBNAIL // max(thumb.size))
        thumb = thumb.resize((thumb.width * factor, thumb.height * factor), Image.NEAREST)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def format_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def try_pyplot():
    """matplotlib's pyplot on the file-only backend, or None when matplotlib is missing."""
    try:
        import matplotlib  # noqa: PLC0415
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


class Report:
    """An HTML page built section by section; ``write`` saves it."""

    def __init__(self, title: str):
        self.title = title
        self.parts: List[str] = []
        self.plot_warning_given = False

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, note: bool = False) -> None:
        css = ' class="note"' if note else ""
        self.parts.append(f"<p{css}>{html.escape(text)}</p>")

    def table(self, rows: Sequence[Dict[str, object]], columns: Optional[Sequence[str]] = None,
              swatches: Iterable[str] = ()) -> None:
        """Rows of dicts as a table; ``swatches`` names columns holding '#rrggbb ...' colours."""
        if not rows:
            self.paragraph("(no rows)")
            return
        columns = list(columns or rows[0].keys())
        swatches = set(swatches)
        head = "".join(f'<th class="{"text" if _is_text(rows, c) else ""}">{_breakable(c)}</th>' for c in columns)
        body = []
        for row in rows:
            cells = []
            for column in columns:
                value = row.get(column)
                css = "text" if _is_text(rows, column) else ""
                if column in swatches and value:
                    content = " ".join(f'<span class="swatch" style="background:{html.escape(c)}"></span>'
                                       f"{html.escape(c)}" for c in str(value).split() if c.startswith("#"))
                else:
                    content = html.escape(format_value(value))
                cells.append(f'<td class="{css}">{content}</td>')
            body.append("<tr>" + "".join(cells) + "</tr>")
        self.parts.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                          f"<tbody>{''.join(body)}</tbody></table></div>")

    def settings_table(self, header: Dict[str, object]) -> None:
        """An experiment's header, then its ``settings`` (``EngineSettings.used``), one row each; an
        engine's own settings are named after it ("optimize: iters"). Records (the judge's) are
        for the JSON file: the header says the same in words."""
        rows = [(k, v) for k, v in header.items() if k != "settings" and not isinstance(v, dict)]
        for key, value in dict(header.get("settings") or {}).items():
            rows.extend(((f"{key}: {k}", v) for k, v in value.items()) if isinstance(value, dict) else [(key, value)])
        self.table([{"setting": k, "value": _setting_text(v)} for k, v in rows])

    def images(self, entries: Sequence[Tuple[Image.Image, str]], label: Optional[str] = None) -> None:
        """A row of thumbnails, each with a caption: one strip that scrolls sideways rather than
        wrapping (a frame alone on the next line reads as another run)."""
        figures = "".join(f'<figure><img src="{image_data_uri(image)}" alt="{html.escape(caption)}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>" for image, caption in entries)
        title = f"<div><b>{html.escape(label)}</b></div>" if label else ""
        self.parts.append(f'<div class="row">{title}<div class="strip">{figures}</div></div>')

    def figure(self, fig) -> None:
        """A matplotlib figure, embedded as PNG, then closed."""
        plt = try_pyplot()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        self.parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="plot"></figure>')

    def pyplot(self):
        """pyplot for a plot, or None (and a note on the page, once) without matplotlib."""
        plt = try_pyplot()
        if plt is None and not self.plot_warning_given:
            self.paragraph("Plots need matplotlib: pip install 'clipdraw[eval]'", note=True)
            self.plot_warning_given = True
        return plt

    def html(self) -> str:
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head>"
                f"<body><h1>{html.escape(self.title)}</h1>\n" + "\n".join(self.parts) + "\n</body></html>\n")

    def write(self, path: Path) -> Path:
        atomic_write_text(path, self.html())
        return path


def _breakable(name: str) -> str:
    """A column name that may wrap after its underscores, so that a wide table fits the page."""
    return html.escape(name).replace("_", "_<wbr>")


def _setting_text(value) -> str:
    """A setting as the table shows it: a list as its items, between bars (templates hold commas)."""
    if isinstance(value, (list, tuple)):
        return " | ".join(str(v) for v in value) or "none"
    return "none" if value is None else format_value(value)


def _is_text(rows: Sequence[Dict[str, object]], column: str) -> bool:
    return any(isinstance(row.get(column), str) for row in rows)


def write_csv(path: Path, rows: Sequence[Dict[str, object]], columns: Optional[Sequence[str]] = None) -> Path:
    """Rows as CSV (columns: the union of keys in order of appearance unless given)."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())
    return path
