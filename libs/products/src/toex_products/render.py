"""The pack as a document: PDF (fpdf2) or DOCX (python-docx). Every page carries the Government
Security Classification marking and the handling code, top and bottom; the first page is a cover."""

from __future__ import annotations

import io
import math

from docx import Document
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.shared import Emu, Inches
from fpdf import FPDF
from PIL import Image

from toex_products.pack import Pack, Row


def _marking(pack: Pack) -> str:
    return f"{pack.classification} | Handling code: {pack.handling or 'not set'}"


def _latin(text: str) -> str:
    # The core PDF fonts are Latin-1; anything else is shown as '?', never dropped silently.
    return text.encode("latin-1", "replace").decode("latin-1")


class _Doc(FPDF):
    def __init__(self, marking: str) -> None:
        super().__init__(format="A4")
        self._marking = _latin(marking)
        self.set_auto_page_break(auto=True, margin=20)

    def header(self) -> None:
        self.set_font("Helvetica", "B", 9)
        self.cell(0, 6, self._marking, align="C", new_x="LMARGIN", new_y="NEXT")
        self.ln(2)

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("Helvetica", "B", 9)
        self.cell(0, 5, f"{self._marking} | Page {self.page_no()}", align="C")


def _ratio(png: bytes) -> float:
    with Image.open(io.BytesIO(png)) as image:
        return float(image.width) / max(image.height, 1)


def _image_height(png: bytes, width: float) -> float:
    # Full width, but never taller than half an A4 page's text area (about 128 mm).
    return min(width / _ratio(png), 128.0)


def _lines(doc: FPDF, text: str, style: str) -> int:
    """About how many lines `text` takes at full width (from its width: fpdf2's line breaking
    is slow, and this is asked of every row); at least one."""
    doc.set_font("Helvetica", style, 10)
    width = doc.epw - 2 * doc.c_margin
    return sum(max(1, math.ceil(doc.get_string_width(line) / width)) for line in text.split("\n"))


def _row_height(doc: FPDF, row: Row) -> float:
    """How tall a row prints, about: its label's lines and its text's, 5 mm each, and the gap
    after (a line more, as word breaks may need it)."""
    lines = _lines(doc, _latin(row.label), "B") + _lines(doc, _latin(row.text) or "-", "")
    return 5.0 * (lines + 1) + 1.0


def _para(doc: FPDF, text: str, style: str) -> None:
    """One paragraph at full width: a plain cell when it fits on a line (fpdf2's multi_cell
    costs milliseconds a call, and a pack has hundreds of rows), else wrapped."""
    doc.set_font("Helvetica", style, 10)
    if "\n" not in text and doc.get_string_width(text) <= doc.epw - 2 * doc.c_margin:
        doc.cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
    else:
        doc.multi_cell(0, 5, text, align="L", new_x="LMARGIN", new_y="NEXT")


def pdf(pack: Pack) -> bytes:
    doc = _Doc(_marking(pack))
    doc.add_page()
    doc.set_font("Helvetica", "B", 20)
    doc.ln(40)
    doc.cell(0, 12, "SIO briefing pack", align="C", new_x="LMARGIN", new_y="NEXT")
    doc.set_font("Helvetica", "", 12)
    for row in pack.cover:
        doc.cell(0, 8, _latin(f"{row.label}: {row.text}"), align="C", new_x="LMARGIN", new_y="NEXT")
    for section in pack.sections:
        image_h = _image_height(section.image, doc.epw) if section.image is not None else 0.0
        if section is pack.sections[0]:
            doc.add_page()
        elif doc.get_y() + 13 + max(image_h, 12) > doc.page_break_trigger:
            doc.add_page()  # keep a heading with its picture or first row
        else:
            doc.ln(4)
        doc.set_font("Helvetica", "B", 14)
        doc.cell(0, 9, _latin(section.title), new_x="LMARGIN", new_y="NEXT")
        doc.set_font("Helvetica", "", 10)
        if section.image is not None:
            doc.image(
                io.BytesIO(section.image),
                h=image_h,
                x=doc.l_margin + (doc.epw - image_h * _ratio(section.image)) / 2,
            )
            doc.ln(2)
        if section.is_empty:
            doc.set_font("Helvetica", "I", 10)
            doc.multi_cell(0, 5, _latin(section.empty), new_x="LMARGIN", new_y="NEXT")
            continue
        for row in section.rows:
            # Keep a row's label with its text: a new page when they would not fit together.
            needed = _row_height(doc, row)
            if needed <= doc.eph and doc.get_y() + needed > doc.page_break_trigger:
                doc.add_page()
            _para(doc, _latin(row.label), "B")
            _para(doc, _latin(row.text) or "-", "")
            doc.ln(1)
    return bytes(doc.output())


def docx(pack: Pack) -> bytes:
    document = Document()
    marking = _marking(pack)
    section = document.sections[0]
    for area in (section.header, section.footer):
        paragraph = area.paragraphs[0]
        paragraph.text = marking
        paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER
        paragraph.runs[0].bold = True
    document.add_heading("SIO briefing pack", level=0)
    for row in pack.cover:
        document.add_paragraph(f"{row.label}: {row.text}")
    document.add_page_break()
    for part in pack.sections:
        document.add_heading(part.title, level=1)
        if part.image is not None:
            # The text width of the page (python-docx's default A4/Letter section has all three set).
            width = (section.page_width or 0) - (section.left_margin or 0) - (section.right_margin or 0)
            document.add_picture(io.BytesIO(part.image), width=Emu(width) if width > 0 else Inches(6))
        if part.is_empty:
            document.add_paragraph(part.empty).runs[0].italic = True
            continue
        table = document.add_table(rows=0, cols=2)
        for row in part.rows:
            cells = table.add_row().cells
            cells[0].text = row.label
            cells[1].text = row.text
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()
