"""Read the filled 《中国电子口岸数字证书申请表》 from a .docx by walking word/document.xml directly.

python-docx costs ~9 ms a form; this reads the one XML part with zipfile + ElementTree (~1 ms).
The form is a table of label cells; applicants put values beside a label, below it, or in the
label's own cell after a colon, so every label looks in that order. Values are kept as written.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_T, _P, _TBL, _TR, _TC = W + "t", W + "p", W + "tbl", W + "tr", W + "tc"
_TAB, _BR, _CR, _SYM, _NBH = W + "tab", W + "br", W + "cr", W + "sym", W + "noBreakHyphen"
_CHECKBOX, _TCPR, _TRPR = W + "checkBox", W + "tcPr", W + "trPr"
_GRIDSPAN, _VMERGE, _GRIDBEFORE, _VAL = W + "gridSpan", W + "vMerge", W + "gridBefore", W + "val"
_CHAR, _FONT = W + "char", W + "font"
_WRAPPERS = {W + "sdt", W + "sdtContent", W + "customXml", W + "ins", W + "smartTag", W + "body"}

MAX_XML_BYTES = 16 * 1024 * 1024  # a real form's document.xml is 20-200 KB

CHECKED = "☑"
UNCHECKED = "☐"
# Symbol-font checkboxes (w:sym) as Word inserts them: Wingdings / Wingdings 2 code points.
_SYM_GLYPHS = {
    ("wingdings", "F0FE"): CHECKED, ("wingdings", "F0FD"): "☒", ("wingdings", "F0FC"): "✓",
    ("wingdings", "F0FB"): "✗", ("wingdings", "F0A8"): UNCHECKED, ("wingdings", "F06F"): UNCHECKED,
    ("wingdings", "F071"): UNCHECKED, ("wingdings", "F06E"): "■",
    ("wingdings 2", "F052"): CHECKED, ("wingdings 2", "F054"): "☒", ("wingdings 2", "F050"): "✓",
    ("wingdings 2", "F0A3"): UNCHECKED, ("wingdings 2", "F02A"): UNCHECKED,
}

# Label (compact: no whitespace, full-width ASCII folded) -> form key, or a role in brackets.
_LABELS: dict[str, str] = {
    "申请单位承诺声明": "<stop>", "申请单位公章": "<stop>", "承诺声明": "<stop>",
    "申请类别": "<type>", "申请者基本信息": "<section>", "数字证书信息": "<section>",
    "申请单位名称": "applicant_org", "申请单位": "applicant_org",
    "统一社会信用代码": "org_code", "机构代码": "org_code",
    "邮件地址": "email", "电子邮件地址": "email", "电子邮箱": "email", "邮箱地址": "email",
    "电子邮件": "email",
    "法定代表人/主要负责人": "<legal_rep>", "法定代表人或主要负责人": "<legal_rep>",
    "法定代表人(主要负责人)": "<legal_rep>", "法定代表人": "<legal_rep>",
    "主要负责人": "<legal_rep>", "经办人": "<handler>",
    "联系电话": "<phone>", "手机号码": "<phone>", "联系方式": "<phone>",
    "证件类型": "<id_type>", "证件号码": "<id_no>", "身份证号码": "<id_no>", "身份证号": "<id_no>",
    "服务类密码设备商用密码产品认证证书编号": "crypto_cert_no",
    "商用密码产品认证证书编号": "crypto_cert_no", "产品认证证书编号": "crypto_cert_no",
    "认证证书编号": "crypto_cert_no",
    "通用名": "common_name", "算法": "<other>", "证书有效期": "<other>",
    "序号": "revoke_serial",
}
_LABEL_RE = re.compile("|".join(re.escape(k) for k in sorted(_LABELS, key=len, reverse=True)))
# Template hints printed where the value goes; compared on compact text, punctuation-tolerant.
_HINTS = (
    "此邮件地址将用于接收数字证书和告知书,请务必准确填写,并确保邮箱安全",
    "此邮件地址将用于接收数字证书和告知书", "请务必准确填写", "并确保邮箱安全",
    "注销业务此项可不填写", "注销业务此项可不填",
)
_PUNCT = r"[,.!;:，。！；：、]*"
_HINT_RE = re.compile("|".join(
    _PUNCT.join(re.escape(part) for part in re.split(r"[,]", h)) + _PUNCT for h in _HINTS))
# Full-width ASCII -> ASCII and the ideographic space, length preserving (keeps the index map).
_FOLD = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_STRIP = " \t\r\n\u3000\u00a0:：_＿|｜"

PERSON_FIELDS = {
    "<legal_rep>": {"<name>": "legal_rep_name", "<phone>": "legal_rep_phone",
                    "<id_type>": "legal_rep_id_type", "<id_no>": "legal_rep_id_no"},
    "<handler>": {"<name>": "handler_name", "<phone>": "handler_phone",
                  "<id_type>": "handler_id_type", "<id_no>": "handler_id_no"},
}
# Labels whose presence says "this document is the application form".
_FORM_MARKERS = {"applicant_org", "org_code", "email", "<legal_rep>", "<handler>", "common_name",
                 "crypto_cert_no", "<type>"}

# Marks as typed, plus symbol-font code points stored as text (Wingdings þ ý ü, Wingdings 2 R S T)
TICKS = "☑■√✓✔☒✗✘▣◼●×þýü\uf0fe\uf0fd\uf0fc\uf052\uf053\uf054\uf050" + "xXRST"
LETTER_TICKS = "xXRST"  # count only right next to the option word
BOXES = "□☐○◻▢¨£\uf0a8\uf06f\uf0a3\uf071\uf02a"
GLYPHS = set(TICKS + BOXES) - set(LETTER_TICKS)


@dataclass
class FormDetails:
    """What the form says and how sure we are: `ticks` holds the 申请类别 boxes as read."""

    fields: dict[str, str] = field(default_factory=dict)
    ticks: dict[str, bool] = field(default_factory=dict)  # {"new": bool, "revoke": bool}
    is_form: bool = False  # the form's labels were found (a blank template counts)
    scanned: bool = False  # a .docx holding images but no form text

    @property
    def application_type_ambiguous(self) -> bool:
        return self.is_form and sum(self.ticks.values()) != 1


@dataclass
class _Cell:
    text: str
    col: int
    span: int
    cont: bool  # a vMerge continuation: the text lives in the cell above
    para: bool = False  # a paragraph outside any table
    # filled by _segment, on first use (rows after the form's end are never segmented)
    done: bool = False
    pre: str = ""
    parts: list[tuple[str, str]] = field(default_factory=list)  # (role, same-cell text)

    @property
    def is_label(self) -> bool:
        _segment(self)
        return bool(self.parts) and not self.pre


# ---------------------------------------------------------------------------------------------
# XML -> rows of cells


def _sym(el: ET.Element) -> str:
    font = (el.get(_FONT) or "").lower()
    code = (el.get(_CHAR) or "").upper()
    if len(code) == 2:
        code = "F0" + code
    return _SYM_GLYPHS.get((font, code), "")


def _checkbox(el: ET.Element) -> str:
    checked = el.find(W + "checked")
    if checked is not None:
        return CHECKED if checked.get(_VAL, "1") not in ("0", "false") else UNCHECKED
    default = el.find(W + "default")
    return CHECKED if default is not None and default.get(_VAL) in ("1", "true") else UNCHECKED


def _para_text(p: ET.Element) -> str:
    out: list[str] = []
    for el in p.iter():
        tag = el.tag
        if tag == _T:
            if el.text:
                out.append(el.text)
        elif tag == _TAB:
            out.append("\t")
        elif tag == _BR or tag == _CR:
            out.append("\n")
        elif tag == _SYM:
            out.append(_sym(el))
        elif tag == _CHECKBOX:
            out.append(_checkbox(el))
        elif tag == _NBH:
            out.append("-")
    return "".join(out)


def _blocks(el: ET.Element):
    """Paragraphs and tables under el, looking through content controls and revisions."""
    for child in el:
        tag = child.tag
        if tag == _P or tag == _TBL:
            yield child
        elif tag in _WRAPPERS:
            yield from _blocks(child)


def _rows(container: ET.Element, rows: list[list[_Cell]]) -> None:
    for block in _blocks(container):
        if block.tag == _P:
            rows.append([_Cell(_para_text(block), 0, 1, False, para=True)])
        else:
            _table(block, rows)


def _table(tbl: ET.Element, rows: list[list[_Cell]]) -> None:
    for tr in _children(tbl, _TR):
        row: list[_Cell] = []
        nested: list[list[_Cell]] = []
        col = 0
        trpr = tr.find(_TRPR)
        if trpr is not None:
            gb = trpr.find(_GRIDBEFORE)
            if gb is not None:
                col = _int(gb.get(_VAL), 0)
        for tc in _children(tr, _TC):
            span, cont = 1, False
            tcpr = tc.find(_TCPR)
            if tcpr is not None:
                gs = tcpr.find(_GRIDSPAN)
                if gs is not None:
                    span = max(1, _int(gs.get(_VAL), 1))
                vm = tcpr.find(_VMERGE)
                if vm is not None and vm.get(_VAL, "continue") != "restart":
                    cont = True
            texts: list[str] = []
            for block in _blocks(tc):
                if block.tag == _P:
                    texts.append(_para_text(block))
                else:
                    _table(block, nested)
            row.append(_Cell("\n".join(texts), col, span, cont))
            col += span
        rows.append(row)
        rows.extend(nested)


def _children(el: ET.Element, tag: str):
    """Direct children with `tag`, looking through content controls and revision wrappers."""
    for child in el:
        if child.tag == tag:
            yield child
        elif child.tag in _WRAPPERS:
            yield from _children(child, tag)


def _int(v: str | None, default: int) -> int:
    try:
        return int(v or "")
    except ValueError:
        return default


# ---------------------------------------------------------------------------------------------
# cells -> labels and values


_SPACE = re.compile(r"\s")
_SPACES = re.compile(r"\s+")


def _compact(text: str) -> tuple[str, list[int]]:
    """Text without whitespace (full-width folded) and, per char, its index in `text`."""
    if _SPACE.search(text) is None:
        return text.translate(_FOLD), list(range(len(text)))
    idx = [i for i, c in enumerate(text) if not c.isspace()]
    return "".join(text[i] for i in idx).translate(_FOLD), idx


def _clean(text: str, dropped: set[int], start: int, end: int) -> str:
    if dropped:
        kept = "".join(c for i, c in enumerate(text[start:end], start) if i not in dropped)
    else:
        kept = text[start:end]
    kept = kept.strip(_STRIP)
    # "机构代码（统一社会信用代码）": the bracket between two labels is no value
    return kept if any(c.isalnum() for c in kept) else ""


def _segment(cell: _Cell) -> None:
    """Split a cell into its text before the first label and (label role, text after it)."""
    if cell.done:
        return
    cell.done = True
    text = cell.text
    if not text or cell.cont:
        return
    comp, idx = _compact(text)
    dropped: set[int] = set()
    for m in _HINT_RE.finditer(comp):
        dropped.update(idx[m.start():m.end()])
    if dropped:
        keep = [k for k, i in enumerate(idx) if i not in dropped]
        comp = "".join(comp[k] for k in keep)
        idx = [idx[k] for k in keep]
    # A label starts the cell or follows a blank or punctuation: "厦门算法科技" holds no label.
    matches = [m for m in _LABEL_RE.finditer(comp)
               if (i := idx[m.start()] - 1) < 0 or not text[i].isalnum() or i in dropped]
    if not matches:
        cell.pre = _clean(text, dropped, 0, len(text))
        return
    first = idx[matches[0].start()]
    cell.pre = _clean(text, dropped, 0, first)
    for n, m in enumerate(matches):
        start = idx[m.end() - 1] + 1
        end = idx[matches[n + 1].start()] if n + 1 < len(matches) else len(text)
        cell.parts.append((_LABELS[m.group()], _clean(text, dropped, start, end)))


def _below(rows: list[list[_Cell]], r: int, cell: _Cell) -> _Cell | None:
    if r + 1 >= len(rows):
        return None
    for other in rows[r + 1]:
        if other.col <= cell.col < other.col + other.span or \
                cell.col <= other.col < cell.col + cell.span:
            return None if other.cont else other
    return None


def _value_for(rows: list[list[_Cell]], r: int, c: int, same: str, last: bool) -> str:
    """Same cell first; then the cell beside, unless it is itself a label; then the one below."""
    if same or not last:
        return same
    row = rows[r]
    if c + 1 < len(row):
        nxt = row[c + 1]
        if nxt.cont:
            return ""
        if not nxt.is_label:
            return nxt.pre
    below = _below(rows, r, row[c])
    if below is not None and not below.is_label:
        return below.pre
    return ""


def _serial(text: str) -> str:
    return re.split(r"[\]】)）]", text, maxsplit=1)[0].strip(_STRIP)


def _ticks(text: str) -> dict[str, bool]:
    """Which of 新办 / 注销 carry a mark: before the option (after its box) or right after it."""
    text = re.sub(r"[\[(（【]\s*[xX√✓✔]\s*[\])）】]", CHECKED, text.translate(_FOLD))
    text = re.sub(r"[\[(（【]\s*[\])）】]", UNCHECKED, text)
    found = {opt: text.find(word) for opt, word in (("new", "新办"), ("revoke", "注销"))}
    ticks: dict[str, bool] = {}
    for opt, pos in found.items():
        if pos < 0:
            continue
        other = "revoke" if opt == "new" else "new"
        mark = _mark_before(text, pos)
        if mark is None:
            mark = _mark_after(text, pos + 2, found.get(other, -1))
        if mark is None:  # a bare option: chosen only when the other one was deleted
            mark = found.get(other, -1) < 0
        ticks[opt] = mark
    return ticks


def _mark_before(text: str, pos: int) -> bool | None:
    i, seen = pos - 1, 0
    while i >= 0 and seen < 3:
        ch = text[i]
        i -= 1
        if ch.isspace():
            continue
        seen += 1
        if ch in TICKS:
            if ch in LETTER_TICKS and seen > 1:
                return None
            return True
        if ch in BOXES:
            return False
        return None
    return None


def _mark_after(text: str, pos: int, other_pos: int) -> bool | None:
    rest = text[pos:pos + 6]
    stripped = rest.lstrip()
    if not stripped or stripped[0] not in TICKS or stripped[0] in LETTER_TICKS:
        return None
    tail = stripped[1:].lstrip()
    at = pos + (len(rest) - len(stripped)) + 1
    if other_pos >= 0 and (tail.startswith(("新办", "注销")) or
                           (tail[:1] in BOXES and other_pos <= at + 4)):
        return None
    return True


def _parse(rows: list[list[_Cell]], details: FormDetails) -> None:
    fields = details.fields
    # Instructions printed around the table ("二、机构代码：市场主体…") are no values: when the
    # form is a table, loose paragraphs only count for 申请类别.
    table_text = _SPACES.sub("", "".join(c.text for row in rows if row and not row[0].para
                                         for c in row)).translate(_FOLD)
    tabled = _LABEL_RE.search(table_text) is not None
    person = "<legal_rep>"
    markers: set[str] = set()
    type_text: list[tuple[int, str]] = []  # (preference, text): table rows first
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if tabled and cell.para and "类别" not in _SPACES.sub("", cell.text):
                continue
            _segment(cell)
            for k, (role, same) in enumerate(cell.parts):
                last = k == len(cell.parts) - 1
                if tabled and cell.para and role != "<type>":
                    continue
                if role == "<stop>":
                    _finish(details, markers, type_text)
                    return
                markers.add(role)
                if role == "<type>":
                    text = " ".join(x.text for x in row)
                    if len(row) == 1 and not same and r + 1 < len(rows):
                        text += " " + " ".join(x.text for x in rows[r + 1])
                    boxed = any(ch in text for ch in GLYPHS)
                    type_text.append((int(cell.para) * 2 + int(not boxed), text))
                    continue
                if role in ("<section>", "<other>"):
                    continue
                if role == "revoke_serial":
                    value = _serial(same)
                    if value:
                        fields.setdefault("revoke_serial", value)
                    continue
                value = _value_for(rows, r, c, same, last)
                if role in PERSON_FIELDS:
                    person = role
                    key = PERSON_FIELDS[role]["<name>"]
                elif role.startswith("<"):
                    key = PERSON_FIELDS[person][role]
                else:
                    key = role
                if value and key not in fields:
                    fields[key] = value
    _finish(details, markers, type_text)


def _finish(details: FormDetails, markers: set[str], type_rows: list[tuple[int, str]]) -> None:
    details.is_form = len(markers & _FORM_MARKERS) >= 3
    best = min((p for p, _t in type_rows), default=None)
    type_text = [t for p, t in type_rows if p == best]
    if type_text:
        details.ticks = _ticks(" ".join(type_text))
        chosen = [k for k, v in details.ticks.items() if v]
        if len(chosen) == 1:
            details.fields["application_type"] = chosen[0]
    if "revoke_serial" not in details.fields:
        m = re.search(r"序号\s*[:：]?([^\]】)）]*)", " ".join(type_text))
        if m and m.group(1).strip(_STRIP):
            details.fields["revoke_serial"] = m.group(1).strip(_STRIP)


def _document_xml(docx: bytes) -> bytes | None:
    with zipfile.ZipFile(io.BytesIO(docx)) as zf:
        try:
            info = zf.getinfo("word/document.xml")
        except KeyError:
            names = [n for n in zf.namelist() if n.lower() == "word/document.xml"]
            if not names:
                return None
            info = zf.getinfo(names[0])
        if info.file_size > MAX_XML_BYTES:
            return None
        with zf.open(info) as fh:
            return fh.read(MAX_XML_BYTES + 1)[:MAX_XML_BYTES]


# Run and paragraph properties hold no text and are most of Word's XML: drop them unparsed.
_PROPS_RE = re.compile(rb"<w:rPr>.*?</w:rPr>|<w:pPr>.*?</w:pPr>", re.S)


def _parse_xml(xml: bytes) -> ET.Element:
    try:
        return ET.fromstring(_PROPS_RE.sub(b"", xml))
    except ET.ParseError:  # nested properties (tracked formatting changes): parse it all
        return ET.fromstring(xml)


def extract_form_details(docx_bytes: bytes) -> FormDetails:
    """The form's fields plus the tick marks read; never raises (empty details on any error)."""
    details = FormDetails()
    try:
        xml = _document_xml(docx_bytes)
        if not xml or b"<!DOCTYPE" in xml[:4096] or b"<!ENTITY" in xml[:4096]:
            return details
        # Text boxes are stored twice (DrawingML and a VML fallback): read one copy only.
        if b"Fallback" in xml:
            xml = re.sub(rb"<mc:Fallback>.*?</mc:Fallback>", b"", xml, flags=re.S)
        # Tracked moves keep the old text as w:t inside w:moveFrom: read only where it went.
        if b"<w:moveFrom" in xml:
            xml = re.sub(rb"<w:moveFrom[ >].*?</w:moveFrom>", b"", xml, flags=re.S)
        root = _parse_xml(xml)
        body = root.find(W + "body")
        rows: list[list[_Cell]] = []
        _rows(body if body is not None else root, rows)
        _parse(rows, details)
        if not details.is_form and not details.fields:
            details.scanned = b"<w:drawing" in xml or b"<v:imagedata" in xml
    except Exception:  # noqa: BLE001 - applicant files are arbitrary bytes; never fail intake
        return FormDetails()
    return details


def extract_form(docx_bytes: bytes) -> dict[str, str]:
    """FORM_KEY -> value as written; keys not found (or ambiguous 申请类别) are left out."""
    return extract_form_details(docx_bytes).fields
