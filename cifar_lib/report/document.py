"""A report as data: headings, paragraphs, tables and figures, rendered to Markdown, to a
self-contained HTML page and to a paged PDF. It knows nothing of results or training."""
from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..study.stats import fixed, format_p


class Document:
    """Headings, paragraphs, tables and figures (saved files), rendered to Markdown and HTML."""

    def __init__(self):
        self.parts: list[tuple] = []

    def heading(self, level: int, text: str):
        self.parts.append(("heading", level, text))

    def text(self, text: str):
        self.parts.append(("text", " ".join(text.split())))

    def items(self, items: list[str]):
        """A bulleted list (the references)."""
        self.parts.append(("list", [" ".join(item.split()) for item in items]))

    def artefact(self, kind: str, content, caption: str):
        """A table (a frame) or a figure (its saved file)."""
        self.parts.append((kind, content, caption))

    def markdown(self, report_dir: Path) -> str:
        out = []
        for kind, *rest in self.parts:
            if kind == "heading":
                out.append("#" * rest[0] + " " + rest[1])
            elif kind == "text":
                out.append(rest[0])
            elif kind == "list":
                out.append("\n".join(f"- {item}" for item in rest[0]))
            elif kind == "table":
                frame, caption = rest
                cells = [list(map(str, frame.columns))] + [
                    [format_cell(v, str(c)) for v, c in zip(row, frame.columns)]
                    for row in frame.itertuples(index=False)]
                lines = ["| " + " | ".join(r) + " |" for r in cells]
                lines.insert(1, "|" + "".join("---|" if numeric else ":---|"
                                              for numeric in _numeric_columns(frame)))
                out.append(f"*{caption}*\n\n" + "\n".join(lines))
            else:
                path, caption = rest
                rel = Path("..") / path.relative_to(report_dir.parent) if path.is_relative_to(
                    report_dir.parent) else path
                # the caption is printed under the image; its label alone is the alt text
                out.append(f"![{caption.split('.')[0]}]({rel.as_posix()})\n\n*{caption}*")
        return "\n\n".join(out) + "\n"

    def html(self, paged: bool = False) -> str:
        body, appendix = [], False
        for kind, *rest in self.parts:
            if kind == "heading":
                # the appendices start on a page of their own, after the paper
                first = rest[1].startswith("Appendix") and not appendix
                appendix |= first
                mark = ' class="appendix"' if first else ""
                body.append(f"<h{rest[0]}{mark}>{html.escape(rest[1])}</h{rest[0]}>")
            elif kind == "text":
                body.append(f"<p>{inline_html(rest[0])}</p>")
            elif kind == "list":
                body.append("<ul>" + "".join(f"<li>{inline_html(item)}</li>" for item in rest[0]) + "</ul>")
            elif kind == "table":
                frame, caption = rest
                # text columns read from the left, numbers line up on the right
                align = ["" if numeric else " class='text'" for numeric in _numeric_columns(frame)]
                head = "".join(f"<th{a}>{html.escape(str(c))}</th>" for c, a in zip(frame.columns, align))
                rows = "".join("<tr>" + "".join(f"<td{a}>{inline_html(format_cell(v, str(c)))}</td>"
                                                for v, c, a in zip(row, frame.columns, align))
                               + "</tr>" for row in frame.itertuples(index=False))
                # the caption sits above the table as its own line, as wide as the text (a
                # <caption> is only as wide as its table), and the two stay on one page; a
                # long table may go on over a page break, its header row repeated there
                box = "table long" if len(frame) > LONG_TABLE_ROWS else "table"
                body.append(f"<div class='{box}'><p class='caption'>{inline_html(caption)}</p>"
                            f"<table><thead><tr>{head}</tr></thead>{rows}</table></div>")
            else:
                path, caption = rest
                data = base64.b64encode(path.read_bytes()).decode()
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                            f"<figcaption>{inline_html(caption)}</figcaption></figure>")
        style = PAGED_STYLE if paged else SCREEN_STYLE
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>CIFAR-10 report</title>"
                f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")

    def pdf(self, path: Path) -> Path:
        """The HTML laid out on numbered A4 pages (WeasyPrint), every figure embedded;
        written atomically."""
        import weasyprint

        from ..records import atomic_write_bytes

        # fontTools stamps each embedded font subset with the time unless SOURCE_DATE_EPOCH
        # fixes it: with it, unchanged records rebuild a byte-identical PDF
        before = os.environ.get("SOURCE_DATE_EPOCH")
        os.environ["SOURCE_DATE_EPOCH"] = before or "0"
        try:
            pdf = weasyprint.HTML(string=self.html(paged=True)).write_pdf()
        finally:
            if before is None:
                del os.environ["SOURCE_DATE_EPOCH"]
        atomic_write_bytes(Path(path), pdf)
        return Path(path)


# The print page's geometry, as PAGED_STYLE sets it: A4 less the side margins, and the
# tallest a figure may be; a PNG saved at SAVE_DPI is laid out at CSS's 96 pixels an inch.
SIDE_MARGIN_CM = 1.8
LONG_TABLE_ROWS = 10     # a table longer than this may break over pages rather than leave one half empty
TEXT_WIDTH_CM, FIGURE_MAX_HEIGHT_CM, SAVE_DPI, CSS_DPI = 21.0 - 2 * SIDE_MARGIN_CM, 10.0, 130, 96


SCREEN_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}"
    "table{border-collapse:collapse;margin:.3em 0 1em}td,th{border:1px solid #bbb;"
    "padding:.25em .6em;text-align:right}.text{text-align:left}.caption{font-style:italic;margin:1em 0 .3em}"
    "img{max-width:100%}figcaption{font-style:italic}code{background:#f3f3f3}")
# Print layout: A4 pages numbered "n / N", tables and figures kept whole on a page,
# figures scaled to the text width, tables in a smaller type so wide ones fit.
PAGED_STYLE = (
    f"@page{{size:A4;margin:2cm {SIDE_MARGIN_CM:g}cm 2.2cm;@bottom-center{{content:counter(page) ' / ' counter(pages);"
    "font:9pt sans-serif;color:#555}}"
    "body{font-family:sans-serif;font-size:10pt;line-height:1.4}h1{font-size:18pt}h2{font-size:14pt}"
    "h3{font-size:11.5pt}h2,h3{break-after:avoid}.appendix{break-before:page}"
    "div.table{break-inside:avoid;margin:.8em 0}div.long{break-inside:auto}tr{break-inside:avoid}"
    "table{border-collapse:collapse;font-size:7.5pt}"
    "td,th{border:1px solid #bbb;padding:.15em .4em;text-align:right}.text{text-align:left}"
    "td:first-child{white-space:nowrap}"      # a row's name on one line; the other columns wrap
    ".caption{font-style:italic;margin:0 0 .3em;font-size:8.5pt;break-after:avoid}"
    f"figure{{margin:1em 0;break-inside:avoid}}img{{max-width:100%;max-height:{FIGURE_MAX_HEIGHT_CM:g}cm}}"
    "ul{padding-left:1.2em}li{margin:.2em 0}"
    "figcaption{font-style:italic;font-size:8.5pt}code{background:#f3f3f3;font-size:90%}")


def smallest_printed_font(fig) -> float:
    """The smallest text of a figure in points as the PDF prints it: scaled down to the text
    width or the height limit, whichever binds (a label under 7 pt is hard to read)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box = fig.get_tightbbox(canvas.get_renderer())          # inches, as savefig crops it
    width, height = (box.width * SAVE_DPI / CSS_DPI, box.height * SAVE_DPI / CSS_DPI)
    shrink = min(1.0, TEXT_WIDTH_CM / 2.54 / width, FIGURE_MAX_HEIGHT_CM / 2.54 / height)
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes) * shrink * width / box.width


def paper_shape(markdown: str, pdf: Path, first: str = "Abstract", last: str = "References",
                appendix: str = "Appendix") -> dict[str, int]:
    """The main part's length as a reviewer counts it: the words from the `first` heading to
    the `last` one (tables and captions included; a bare table rule or pipe is no word), and
    the PDF pages before the `appendix` heading (its page counts when text precedes it)."""
    import pypdfium2 as pdfium

    main = markdown.split(f"# {first}", 1)[-1].split(f"# {last}", 1)[0]
    words = sum(1 for w in main.split() if re.search(r"\w", w))
    heading = re.search(rf"^#+ ({appendix}.*)$", markdown, flags=re.M)
    appendix = heading.group(1) if heading else "\0"       # the heading's own words, not a mention
    pages = 0
    for page in pdfium.PdfDocument(str(pdf)):
        text = page.get_textpage().get_text_range()
        before, found, _ = text.partition(appendix)
        if found:
            pages += bool(re.sub(r"\d+ / \d+", "", before).strip())
            break
        pages += 1
    return {"words": words, "pages": pages}


def _numeric_columns(frame: pd.DataFrame) -> list[bool]:
    """Which columns hold numbers, as opposed to text such as names and settings: most
    filled cells a number (or a number as text, or a flag), or a p-value column."""
    def number(v) -> bool:
        if isinstance(v, (bool, int, float, np.number)) or v == "✓":
            return True
        try:
            float(str(v).replace("−", "-"))
        except ValueError:
            return False
        return True
    def mostly_numbers(column) -> bool:
        filled = [v for v in column if v != "" and not (isinstance(v, float) and np.isnan(v))]
        return 2 * sum(map(number, filled)) >= len(filled)
    return [str(c).split(" ")[0] == "p" or mostly_numbers(frame[c]) for c in frame.columns]


def format_cell(v, column: str = "") -> str:
    """A table cell as a paper prints it: two decimals, p-values to two significant
    figures, a tick for a true flag and nothing for a false one."""
    if isinstance(v, (bool, np.bool_)):
        return "✓" if v else ""
    if isinstance(v, float) and column.split(" ")[0] == "p":
        return format_p(v)
    if isinstance(v, float):     # a minus sign, not a hyphen, as print sets it
        return "" if np.isnan(v) else fixed(v).replace("-", "−")
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v)


def inline_html(text: str) -> str:
    """Markdown's `code`, **bold** and *italics* in HTML, everything else escaped."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub(r"\*([^*]+)\*", r"<i>\1</i>", text)
