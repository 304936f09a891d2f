"""The demo applicants' files: 《中国电子口岸数字证书申请表》 as a real .docx, and small scans.

The form is the published template filled in: a six-column table, the person labels merged
over two rows (vMerge), the values beside their labels, 申请类别 ticked with ☑, the 序号 of
the certificate to revoke inside the 注销 option. The OOXML package is written by hand
(zipfile and strings; tests/support/formbuilder.py builds its variants on the same package),
so mailbot's own intake reads it exactly as it reads an applicant's Word file.

The scans are valid images and PDFs (Pillow and fpdf2, which the notice PDF already needs),
each saying it is a demo specimen.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from xml.sax.saxutils import escape

NS = ('xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
      'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
      'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
      'xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" '
      'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"')
CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Default Extension="png" ContentType="image/png"/>'
    '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.wordprocessingml.document.main+xml"/></Types>')
RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="word/document.xml"/></Relationships>')
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

TITLE = "中国电子口岸数字证书申请表"
PROMISE = ("我单位已阅读《中国电子口岸数字证书申请须知》，了解数字证书用途、申领和使用过程中的注意"
           "事项。我单位向受理机构提供的信息和资料真实、有效，将按须知要求妥善保管密钥、使用数字证书。"
           "特此声明。")
CHECKED, UNCHECKED = "☑", "□"


def package(document_xml: str, extra_parts: dict[str, bytes] | None = None) -> bytes:
    """A .docx: the content types, the package relationship and word/document.xml."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", CONTENT_TYPES)
        zf.writestr("_rels/.rels", RELS)
        zf.writestr("word/document.xml", document_xml.encode("utf-8"))
        for name, data in (extra_parts or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def _run(text: str) -> str:
    return (f'<w:r><w:rPr><w:rFonts w:hint="eastAsia"/></w:rPr>'
            f'<w:t xml:space="preserve">{escape(text)}</w:t></w:r>')


def _para(text: str) -> str:
    return f"<w:p>{_run(text) if text else ''}</w:p>"


def cell_props(span: int = 1, vmerge: str | None = None) -> str:
    """A table cell's width, column span and vertical merge ("restart" or "continue")."""
    props = '<w:tcW w:w="1400" w:type="dxa"/>'
    if span > 1:
        props += f'<w:gridSpan w:val="{span}"/>'
    if vmerge == "restart":
        props += '<w:vMerge w:val="restart"/>'
    elif vmerge == "continue":
        props += "<w:vMerge/>"
    return props


def _cell(text: str, span: int = 1, vmerge: str | None = None) -> str:
    props = cell_props(span, vmerge)
    paras = "".join(_para(line) for line in text.split("\n"))
    return f"<w:tc><w:tcPr>{props}</w:tcPr>{paras}</w:tc>"


def _row(*cells: str) -> str:
    return f'<w:tr><w:trPr><w:trHeight w:val="567"/></w:trPr>{"".join(cells)}</w:tr>'


def application_form(values: Mapping[str, str], kind: str = "new") -> bytes:
    """The filled form as a .docx; `values` keyed by the form keys of CONTRACTS.md
    (applicant_org, org_code, email, legal_rep_*, handler_*, crypto_cert_no, common_name,
    revoke_serial); kind "new" (新办) or "revoke" (注销, with revoke_serial)."""
    if kind not in ("new", "revoke"):
        raise ValueError(f"kind {kind!r}: use new or revoke")
    v = {k: str(x) for k, x in values.items()}
    new_box, revoke_box = (CHECKED, UNCHECKED) if kind == "new" else (UNCHECKED, CHECKED)
    choice = (f"{new_box}新办        {revoke_box}注销（待注销的证书[序号："
              f"{v.get('revoke_serial', '')}]）")
    rows = [
        _row(_cell("申请类别"), _cell(choice, 5)),
        _row(_cell("申请者基本信息", 6)),
        _row(_cell("申请单位"), _cell(v.get("applicant_org", ""), 2),
             _cell("机构代码"), _cell(v.get("org_code", ""), 2)),
        _row(_cell("邮件地址"), _cell(v.get("email", ""), 5)),
        _row(_cell("法定代表人/\n主要负责人", 1, "restart"),
             _cell(v.get("legal_rep_name", ""), 1, "restart"),
             _cell("联系电话"), _cell(v.get("legal_rep_phone", "")),
             _cell("证件类型"), _cell(v.get("legal_rep_id_type", ""))),
        _row(_cell("", 1, "continue"), _cell("", 1, "continue"),
             _cell("证件号码"), _cell(v.get("legal_rep_id_no", ""), 3)),
        _row(_cell("经办人", 1, "restart"), _cell(v.get("handler_name", ""), 1, "restart"),
             _cell("联系电话"), _cell(v.get("handler_phone", "")),
             _cell("证件类型"), _cell(v.get("handler_id_type", ""))),
        _row(_cell("", 1, "continue"), _cell("", 1, "continue"),
             _cell("证件号码"), _cell(v.get("handler_id_no", ""), 3)),
        _row(_cell("服务类密码设备商用密码产品认证\n证书编号", 2),
             _cell(v.get("crypto_cert_no", ""), 4)),
        _row(_cell("数字证书信息", 6)),
        _row(_cell("通用名"), _cell(v.get("common_name", "")), _cell("算法"), _cell("SM2"),
             _cell("证书有效期"), _cell("10 年")),
        _row(_cell("申请单位承诺声明", 6)),
        _row(_cell(PROMISE, 6)),
    ]
    grid = '<w:gridCol w:w="1400"/>' * 6
    table = ('<w:tbl><w:tblPr><w:tblW w:w="8400" w:type="dxa"/></w:tblPr>'
             f'<w:tblGrid>{grid}</w:tblGrid>{"".join(rows)}</w:tbl>')
    body = (_para("附件") + _para(TITLE) + table + _para("申请单位公章（演示）")
            + _para("法定代表人/主要负责人（或授权代理人）签字："))
    document = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document {NS}>'
                f'<w:body>{body}<w:sectPr><w:pgSz w:w="11906" w:h="16838"/></w:sectPr>'
                '</w:body></w:document>')
    return package(document)


def scan_jpeg(caption: str) -> bytes:
    """A small photo-like JPEG of an ID card, captioned (ASCII: Pillow's built-in font)."""
    from PIL import Image, ImageDraw  # Pillow: fpdf2, a dependency, requires it

    img = Image.new("RGB", (320, 200), (236, 240, 246))
    draw = ImageDraw.Draw(img)
    draw.rectangle((8, 8, 311, 191), outline=(60, 90, 140), width=3)
    draw.rectangle((22, 40, 102, 150), fill=(190, 200, 215))
    draw.text((118, 44), caption, fill=(20, 30, 60))
    draw.text((118, 70), "SPECIMEN - mailbot demo", fill=(150, 30, 30))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=70)
    return out.getvalue()


def scan_pdf(caption: str) -> bytes:
    """A one-page PDF standing in for a stamped copy (licence, product certificate)."""
    from fpdf import FPDF

    doc = FPDF(format="A4")
    doc.set_creator("mailbot demo")
    doc.add_page()
    doc.set_font("Helvetica", size=14)
    doc.cell(0, 10, caption, new_x="LMARGIN", new_y="NEXT")
    doc.set_font("Helvetica", size=10)
    doc.cell(0, 8, "SPECIMEN - mailbot demo, not a real document")
    return bytes(doc.output())
