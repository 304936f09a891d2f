"""Build real .docx files of 《中国电子口岸数字证书申请表》 the way applicants fill them in.

The OOXML package is written by hand (zipfile + strings) so tests need no python-docx and can
shape the XML exactly: gridSpan/vMerge as in the published template, values beside / below /
in the label cell, text split across runs, and every way of ticking 申请类别.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

# The package itself (content types, relationships, document.xml) is the demo's form writer's.
from mailbot.app.demo_forms import NS, cell_props, package

FILLED: dict[str, str] = {
    "applicant_org": "厦门某某科技有限公司",
    "org_code": "91350200MA2XXXXX1K",
    "email": "pki@example.com.cn",
    "legal_rep_name": "张三",
    "legal_rep_phone": "13900000001",
    "legal_rep_id_type": "居民身份证",
    "legal_rep_id_no": "350203199001011234",
    "handler_name": "李四",
    "handler_phone": "0592-5123456",
    "handler_id_type": "居民身份证",
    "handler_id_no": "35020319920202567X",
    "crypto_cert_no": "GM003312220230001",
    "common_name": "厦门某某科技有限公司",
}
EMAIL_HINT = "此邮件地址将用于接收数字证书和告知书，请务必准确填写，并确保邮箱安全"
CRYPTO_HINT = "注销业务此项可不填"
CN_HINT = "注销业务此项可不填写"
PROMISE = ("我单位已阅读《中国电子口岸数字证书申请须知》，了解数字证书用途、申领和使用过程中的注意"
           "事项。我单位向受理机构提供的信息和资料真实、有效，将按须知要求妥善保管密钥、使用数字证书。"
           "特此声明。")

TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")


class Runs:
    """How text becomes runs: whole, or chopped into pieces with proofing marks between."""

    def __init__(self, split: bool = False) -> None:
        self.split = split

    def text(self, s: str) -> str:
        if not s:
            return ""
        if not self.split:
            return _run(s)
        pieces = [s[i:i + 2] for i in range(0, len(s), 2)]
        return '<w:proofErr w:type="spellStart"/>'.join(_run(p) for p in pieces)


# Word's own verbosity (fonts, sizes, languages on every run), switched on for timing figures.
WORDY = {"on": False}
_WORDY_RPR = ('<w:rFonts w:ascii="仿宋_GB2312" w:eastAsia="仿宋_GB2312" w:hAnsi="宋体" '
              'w:cs="Times New Roman" w:hint="eastAsia"/><w:b w:val="0"/><w:bCs/><w:color '
              'w:val="000000"/><w:kern w:val="0"/><w:sz w:val="24"/><w:szCs w:val="24"/>'
              '<w:lang w:val="en-US" w:eastAsia="zh-CN" w:bidi="ar-SA"/>')


def _run(s: str) -> str:
    rpr = _WORDY_RPR if WORDY["on"] else '<w:rFonts w:hint="eastAsia"/>'
    rsid = ' w:rsidR="00A51C3E" w:rsidRPr="003F2D47"' if WORDY["on"] else ""
    return (f'<w:r{rsid}><w:rPr>{rpr}</w:rPr>'
            f'<w:t xml:space="preserve">{escape(s)}</w:t></w:r>')


def _para(inner: str) -> str:
    return f'<w:p><w:pPr><w:jc w:val="left"/></w:pPr>{inner}</w:p>'


def _cell(content: str, span: int = 1, vmerge: str | None = None, runs: Runs | None = None,
          raw: bool = False) -> str:
    runs = runs or Runs()
    props = cell_props(span, vmerge)
    if raw:
        paras = _para(content)
    else:
        paras = "".join(_para(runs.text(line)) for line in content.split("\n")) or _para("")
    return f"<w:tc><w:tcPr>{props}</w:tcPr>{paras}</w:tc>"


def _row(*cells: str) -> str:
    return f'<w:tr><w:trPr><w:trHeight w:val="567"/></w:trPr>{"".join(cells)}</w:tr>'


def _table(rows: list[str], cols: int = 6) -> str:
    grid = "".join('<w:gridCol w:w="1400"/>' for _ in range(cols))
    return ('<w:tbl><w:tblPr><w:tblW w:w="8400" w:type="dxa"/></w:tblPr>'
            f'<w:tblGrid>{grid}</w:tblGrid>{"".join(rows)}</w:tbl>')


def mark_xml(kind: str, ticked: bool) -> str:
    """One checkbox as a fragment of paragraph XML, in the given style."""
    if kind == "sym":
        char = "F0FE" if ticked else "F0A8"
        return f'<w:r><w:sym w:font="Wingdings" w:char="{char}"/></w:r>'
    if kind == "checkbox":
        checked = "<w:checked/>" if ticked else ""
        return ('<w:r><w:fldChar w:fldCharType="begin"><w:ffData><w:checkBox><w:sizeAuto/>'
                f'<w:default w:val="0"/>{checked}</w:checkBox></w:ffData></w:fldChar></w:r>'
                '<w:r><w:instrText xml:space="preserve"> FORMCHECKBOX </w:instrText></w:r>'
                '<w:r><w:fldChar w:fldCharType="end"/></w:r>')
    return _run(mark_text(kind, ticked))


def mark_text(kind: str, ticked: bool) -> str:
    if kind == "pua":  # Wingdings glyphs kept as private-use text
        return "\uf0fe" if ticked else "\uf0a8"
    if kind == "wingdings2-text":  # "R" / "£" typed in the Wingdings 2 font
        return "R" if ticked else "£"
    if not ticked:
        return "[ ]" if kind == "[x]" else "□"
    return {"☑": "☑", "■": "■", "√": "√", "□√": "□√", "[x]": "[x]", "☒": "☒",
            "✓": "✓", "X": "X"}.get(kind, kind)


def _type_paragraph(application_type: str | None, mark: str, serial: str,
                    both: bool = False) -> str:
    new = both or application_type == "new"
    revoke = both or application_type == "revoke"
    return (mark_xml(mark, new) + _run("新办        ") + mark_xml(mark, revoke)
            + _run(f"注销（待注销的证书[序号：{serial}          ]）"))


def _hinted(value: str, hint: str, hints: bool, keep_hints: bool) -> str:
    if not value:
        return hint if hints else ""
    return f"{hint}\n{value}" if keep_hints else value


def _document(body: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document {NS}><w:body>'
            f'{body}<w:sectPr><w:pgSz w:w="11906" w:h="16838"/></w:sectPr></w:body></w:document>')


def _heading() -> str:
    return _para(_run("附件")) + _para(_run("中国电子口岸数字证书申请表"))


NOTES = (
    "中国电子口岸数字证书申请须知",
    "数字证书是由中国电子口岸数据中心（以下简称CA机构）颁发给企事业单位、社会团体或其他组织的数字证书，"
    "是用户在电子口岸系统中的重要身份凭证，主要用于导入模式下申报数据的电子签名等。",
    "一、数字证书申请者应遵循诚实守信的原则，向受理机构提交真实、准确的申请信息。",
    "二、申请单位名称发生变更，用户应及时通过受理机构办理新数字证书，并及时注销原数字证书。",
    "三、因数字证书到期需要进行延期的，按新办业务流程办理。",
    "四、用户应妥善保管证书私钥，如在证书有效期内出现证书私钥损毁、丢失或泄露的，用户应立即向受理机构办理证书注销。",
    "五、用户在申请表中填写的申请信息，主要用于验证用户身份真实性。",
    "《中国电子口岸数字证书申请表》填写说明",
    "一、此申请表适用于用户向中国电子口岸数据中心申请新办、注销数字证书，每张申请表仅可勾选一个申请类别。",
    "二、机构代码：市场主体、有统一社会信用代码的其他组织机构必须填写“统一社会信用代码”。",
    "三、联系电话：填写移动电话号码。",
    "四、邮件地址：填写企业邮箱账户；如企业无邮件系统，可以填写个人邮件地址。",
    "五、通用名：默认应与申请单位名称一致。",
    "六、申请单位承诺声明：需使用黑色钢笔或签字笔工整签署，加盖申请单位公章。",
)


def _tail() -> str:
    notes = "".join(_para(_run(line)) for line in NOTES) if WORDY["on"] else ""
    return (_para(_run("                                    申请单位公章"))
            + _para(_run("法定代表人/主要负责人（或授权代理人）签字：")) + _para(_run("年     月     日"))
            + notes)


def template_body(v: dict[str, str], application_type: str | None, *, mark: str, serial: str,
                  split: bool, hints: bool, keep_hints: bool, same_cell: bool,
                  both: bool) -> str:
    """The published layout: 6 grid columns, person labels merged over two rows."""
    runs = Runs(split)

    def lab(label: str, key: str, span: int = 1, vmerge: str | None = None) -> str:
        text = f"{label}：{v.get(key, '')}" if same_cell and v.get(key) else label
        return _cell(text, span, vmerge, runs)

    def val(key: str, span: int = 1, vmerge: str | None = None, hint: str = "") -> str:
        value = "" if same_cell else v.get(key, "")
        return _cell(_hinted(value, hint, hints, keep_hints), span, vmerge, runs)

    rows = [
        _row(_cell("申请类别", runs=runs),
             _cell(_type_paragraph(application_type, mark, serial, both), 5, raw=True)),
        _row(_cell("申请者基本信息", 6, runs=runs)),
        _row(lab("申请单位", "applicant_org"), val("applicant_org", 2),
             lab("机构代码", "org_code"), val("org_code", 2)),
        _row(lab("邮件地址", "email"), val("email", 5, hint=EMAIL_HINT)),
        _row(_cell("法定代表人/\n主要负责人", 1, "restart", runs) if not same_cell else
             lab("法定代表人/主要负责人", "legal_rep_name", 1, "restart"),
             val("legal_rep_name", 1, "restart"),
             lab("联系电话", "legal_rep_phone"), val("legal_rep_phone"),
             lab("证件类型", "legal_rep_id_type"), val("legal_rep_id_type")),
        _row(_cell("", 1, "continue"), _cell("", 1, "continue"),
             lab("证件号码", "legal_rep_id_no"), val("legal_rep_id_no", 3)),
        _row(lab("经办人", "handler_name", 1, "restart"), val("handler_name", 1, "restart"),
             lab("联系电话", "handler_phone"), val("handler_phone"),
             lab("证件类型", "handler_id_type"), val("handler_id_type")),
        _row(_cell("", 1, "continue"), _cell("", 1, "continue"),
             lab("证件号码", "handler_id_no"), val("handler_id_no", 3)),
        _row(lab("服务类密码设备商用密码产品认证\n证书编号", "crypto_cert_no", 2)
             if not same_cell else lab("服务类密码设备商用密码产品认证证书编号", "crypto_cert_no", 2),
             val("crypto_cert_no", 4, hint=CRYPTO_HINT)),
        _row(_cell("数字证书信息", 6, runs=runs)),
        _row(lab("通用名", "common_name"), val("common_name", 1, hint=CN_HINT),
             _cell("算法", runs=runs), _cell("SM2", runs=runs), _cell("证书有效期", runs=runs),
             _cell("10 年", runs=runs)),
        _row(_cell("申请单位承诺声明", 6, runs=runs)),
        _row(_cell(PROMISE, 6, runs=runs)),
    ]
    return _heading() + _table(rows) + _tail()


def below_body(v: dict[str, str], application_type: str | None, *, mark: str, serial: str,
               split: bool, both: bool) -> str:
    """Labels in one row, the values in the row under them (a re-typed, vertical form)."""
    runs = Runs(split)

    def labels(*names: str) -> str:
        return _row(*(_cell(n, runs=runs) for n in names))

    def values(*keys: str) -> str:
        return _row(*(_cell(v.get(k, ""), runs=runs) for k in keys))

    rows = [
        _row(_cell("申请类别", runs=runs),
             _cell(_type_paragraph(application_type, mark, serial, both), 3, raw=True)),
        labels("申请单位", "机构代码", "邮件地址"),
        values("applicant_org", "org_code", "email"),
        labels("法定代表人/主要负责人", "联系电话", "证件类型", "证件号码"),
        values("legal_rep_name", "legal_rep_phone", "legal_rep_id_type", "legal_rep_id_no"),
        labels("经办人", "联系电话", "证件类型", "证件号码"),
        values("handler_name", "handler_phone", "handler_id_type", "handler_id_no"),
        labels("服务类密码设备商用密码产品认证证书编号", "通用名"),
        values("crypto_cert_no", "common_name"),
        _row(_cell("申请单位承诺声明", 4, runs=runs)),
    ]
    return _heading() + _table(rows, cols=4) + _tail()


def paragraphs_body(v: dict[str, str], application_type: str | None, *, mark: str,
                    serial: str, split: bool, both: bool) -> str:
    """No table at all: "label：value" lines, as when the form was retyped in a plain document."""
    runs = Runs(split)
    lines = [("申请单位", "applicant_org"), ("机构代码", "org_code"), ("邮件地址", "email"),
             ("法定代表人/主要负责人", "legal_rep_name"), ("联系电话", "legal_rep_phone"),
             ("证件类型", "legal_rep_id_type"), ("证件号码", "legal_rep_id_no"),
             ("经办人", "handler_name"), ("联系电话", "handler_phone"),
             ("证件类型", "handler_id_type"), ("证件号码", "handler_id_no"),
             ("服务类密码设备商用密码产品认证证书编号", "crypto_cert_no"), ("通用名", "common_name")]
    body = _heading() + _para(_run("申请类别 ") + _type_paragraph(application_type, mark,
                                                                   serial, both))
    body += "".join(_para(runs.text(f"{label}：{v.get(key, '')}")) for label, key in lines)
    return body + _para(_run("申请单位承诺声明")) + _tail()


def build_form(values: dict[str, str] | None = None, application_type: str | None = "new", *,
               style: str = "beside", mark: str = "☑", serial: str = "", split_runs: bool = False,
               hints: bool = True, keep_hints: bool = False, both_ticked: bool = False,
               notes_before: bool = False, extra_parts: dict[str, bytes] | None = None) -> bytes:
    """A .docx of the application form; `values` keyed by FORM_KEY (FILLED when None).

    style: "beside" (the template filled in), "same_cell" ("申请单位：X" in the label cell),
    "below" (values in the row under the labels), "paragraphs" (no table).
    """
    v = FILLED if values is None else values
    if style in ("beside", "same_cell"):
        body = template_body(v, application_type, mark=mark, serial=serial, split=split_runs,
                             hints=hints, keep_hints=keep_hints, same_cell=style == "same_cell",
                             both=both_ticked)
    elif style == "below":
        body = below_body(v, application_type, mark=mark, serial=serial, split=split_runs,
                          both=both_ticked)
    elif style == "paragraphs":
        body = paragraphs_body(v, application_type, mark=mark, serial=serial, split=split_runs,
                               both=both_ticked)
    else:
        raise ValueError(style)
    if notes_before:  # some copies print the 填写说明 above the table
        body = "".join(_para(_run(line)) for line in NOTES) + body
    return package(_document(body), extra_parts)


def blank_template() -> bytes:
    """The form as downloaded: no values, no ticks, the printed hints in place."""
    return build_form({}, None)


def scanned_form() -> bytes:
    """A .docx holding only a picture of the signed form (no text)."""
    drawing = ('<w:r><w:drawing><wp:inline><wp:extent cx="5000000" cy="7000000"/>'
               '<wp:docPr id="1" name="Picture 1"/><a:graphic><a:graphicData '
               'uri="http://schemas.openxmlformats.org/drawingml/2006/picture"/></a:graphic>'
               '</wp:inline></w:drawing></w:r>')
    return package(_document(_para(drawing)), {"word/media/image1.png": TINY_PNG})
