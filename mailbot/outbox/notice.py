"""The notice 《中国电子口岸数字证书申请受理告知书》 as a PDF, attached to the issued and revoked replies.

`render_notice("issued" | "revoked", context)` lays the notice out from the context keys of
`mailbot.outbox.context` and returns the PDF bytes (fpdf2). The text is set in a CJK font that
the PDF embeds as a subset, with a ToUnicode map so it can be searched and copied; no font
outside the file is used, so Adobe, Foxit, WPS and browsers show the same page. The font is
`[outbox] notice_font`, or, when that is empty, Noto Serif CJK SC (SIL OFL 1.1) from the
standard font folders: Debian's package fonts-noto-cjk.

How the font gets in: the glyphs the notice needs are copied out of the big font into a small
TrueType font (CFF outlines converted to quadratic ones within 1/1000 em), which fpdf2 embeds the
way every reader and text extractor knows best (CIDFontType2, Identity-H, FontFile2). fpdf2's own
route for CFF-based fonts such as the Noto CJK collections uses a custom encoding CMap that
pdfminer.six cannot read and pypdf mis-spaces. The big font is opened once per process and
each glyph converted once, so a notice takes under 0.1 s once warm (about 0.5 s for the first
in a process).
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from fontTools.fontBuilder import FontBuilder
from fontTools.pens.cu2quPen import Cu2QuPen
from fontTools.pens.recordingPen import DecomposingRecordingPen
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTCollection, TTFont, TTLibError, newTable
from fontTools.ttLib.tables._g_l_y_f import Glyph
from fpdf import FPDF, FontFace
from fpdf.enums import Align, TextMode, WrapMode, XPos, YPos

from mailbot.clock import SHANGHAI
from mailbot.config import ConfigError, MailboxConfig, OutboxConfig
from mailbot.outbox.context import ISSUED, NOTICE_FILENAME, REVOKED, ROOT_CHAIN_PATH

log = logging.getLogger(__name__)
# fontTools logs every subset it makes (each glyph name) at INFO: noise in the daemon's log.
logging.getLogger("fontTools").setLevel(logging.WARNING)

TITLE = "中国电子口岸数字证书申请受理告知书"
OFFICE = "中国电子口岸数据中心厦门分中心"
TEMPLATES = (ISSUED, REVOKED)

# Preferred faces, best first: a Song-style serif suits an official notice; the sans of the same
# package, then the Adobe-named builds of the same design, are the fallbacks.
FONT_FILES = (
    "NotoSerifCJK-Regular.ttc", "NotoSerifCJKsc-Regular.otf", "NotoSerifSC-Regular.otf",
    "SourceHanSerif-Regular.ttc", "SourceHanSerifSC-Regular.otf",
    "NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf", "NotoSansSC-Regular.otf",
    "SourceHanSans-Regular.ttc", "SourceHanSansSC-Regular.otf",
)
# Debian/Ubuntu's fonts-noto-cjk path first (no folder walk there), then the usual font roots.
FONT_PATH_DEBIAN = Path("/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc")
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
# Characters a usable face must have: Chinese (a Latin or Japanese face lacks some of these)
# and what serials and fingerprints are written in (a CJK fallback face may lack Latin).
PROBE = TITLE + "厦门注销" + "0123456789ABCDEF:-XM"

FAMILY = "notice"
_DEFAULTS = OutboxConfig()
_MAILBOX = MailboxConfig().our_address
_ROLES = {"sign": "签名证书", "enc": "加密证书"}
_ROLE_ORDER = {"sign": 0, "enc": 1}
_NUMERALS = "一二三四五六七八九十"
_GREY = (235, 235, 235)
_WHITESPACE = re.compile(r"\s+")
# Line breaking (_lines): an ASCII word, one space, or any other single character.
_TOKENS = re.compile(r"[!-~]+| |.", re.S)
_NO_LINE_START = frozenset("，。、；：？！）》」』”’〉】〕…—,.;:?!)]}%")
_NO_LINE_END = frozenset("（《「『“‘〈【〔([{")
# Every notice may use these besides its context's text: ASCII and the ideographic space.
_BASE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) | {"\u3000"}
# How far a converted curve may stray from the original: 1/1000 em, invisible at any size.
_MAX_CURVE_ERROR = 1.0
# The name records carried into the embedded font: copyright, family ... version, PostScript
# name, licence and licence URL (the OFL asks that copyright and licence travel with the font).
_NAME_IDS = {0: "copyright", 1: "familyName", 2: "styleName", 3: "uniqueFontIdentifier",
             4: "fullName", 5: "version", 6: "psName", 13: "licenseDescription",
             14: "licenseInfoURL"}


class NoticeFontError(ConfigError):
    """No usable CJK font for the notice; the message says what to install or configure."""


@dataclass(frozen=True)
class Face:
    """One face of a font file (a .ttc/.otc collection holds several): what the notice uses."""

    path: Path
    index: int
    name: str


# ---------------------------------------------------------------------------------- the font


def find_font(configured: str | os.PathLike[str] = "") -> Face:
    """The face the notice is set in: from `[outbox] notice_font`, else the standard folders.

    Raises NoticeFontError with one line naming the fix when there is none; `app` may call
    this at start-up so a missing font shows before the first certificate is issued.
    """
    return _find_font(str(configured))


@lru_cache(maxsize=8)
def _find_font(configured: str) -> Face:
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise NoticeFontError(f"[outbox] notice_font = {configured!r}: no such file; name a "
                                  "CJK .ttc/.otf/.ttf font, or leave it empty to use Noto Serif "
                                  "CJK SC (Debian package fonts-noto-cjk)")
        return _pick_face(path)
    path = FONT_PATH_DEBIAN if FONT_PATH_DEBIAN.is_file() else _search_font_dirs()
    if path is None:
        raise NoticeFontError("no CJK font for the notice PDF: install the Debian package "
                              "fonts-noto-cjk (apt-get install fonts-noto-cjk), or set [outbox] "
                              "notice_font to a CJK .ttc/.otf/.ttf file (looked for "
                              f"{', '.join(FONT_FILES[:3])}, ... under {', '.join(FONT_DIRS)})")
    return _pick_face(path)


def _search_font_dirs() -> Path | None:
    """The most preferred of FONT_FILES under FONT_DIRS (other distributions' layouts)."""
    rank = {name: i for i, name in enumerate(FONT_FILES)}
    best: tuple[int, Path] | None = None
    for root in FONT_DIRS:
        for folder, _dirs, files in os.walk(Path(root).expanduser()):
            for name in files:
                if name in rank and (best is None or rank[name] < best[0]):
                    best = (rank[name], Path(folder) / name)
    return best[1] if best else None


def _pick_face(path: Path) -> Face:
    """The face of `path` to use: in a collection the Simplified Chinese one (Noto's "… SC")."""
    try:
        if path.suffix.lower() in (".ttc", ".otc"):
            faces = TTCollection(str(path), lazy=True).fonts
        else:
            faces = [TTFont(str(path), lazy=True)]
        names = [face["name"].getBestFullName() or path.stem for face in faces]
        # Simplified Chinese faces first (their glyphs are the mainland forms), then file order.
        order = sorted(range(len(faces)), key=lambda i: (" SC" not in f"{names[i]} ", i))
        for i in order:
            cmap = faces[i].getBestCmap() or {}
            if all(ord(ch) in cmap for ch in PROBE):
                return Face(path, i, names[i])
    except (OSError, TTLibError, AssertionError, KeyError) as exc:  # fontTools asserts too
        raise NoticeFontError(f"notice font {path}: not a readable font file ({exc})") from None
    raise NoticeFontError(f"notice font {path}: no face has both Chinese and Latin glyphs "
                          f"(looked for {PROBE!r}); set [outbox] notice_font to a CJK font such as Noto "
                          "Serif CJK SC (fonts-noto-cjk)")


class _Source:
    """A face opened once per process, and the TrueType glyphs converted from it so far.

    Glyphs are converted on first use and kept (a few hundred bytes each, at most the face's
    character count), so the fixed wording of the notice is converted once per process.
    """

    def __init__(self, face: Face) -> None:
        self.face = face
        self.font = TTFont(str(face.path), fontNumber=face.index, lazy=True)
        self.cmap: dict[int, str] = self.font.getBestCmap() or {}
        self.glyph_set = self.font.getGlyphSet()
        self.cubic = "CFF " in self.font or "CFF2" in self.font
        self.glyphs: dict[str, tuple[bytes, int, int]] = {}  # name: (glyf data, advance, lsb)
        self.lock = threading.Lock()  # fontTools' lazy tables are not thread-safe

    def glyph(self, name: str) -> tuple[bytes, int, int]:
        """One glyph as TrueType glyf data, with its advance width and left side bearing."""
        cached = self.glyphs.get(name)
        if cached is None:
            pen = TTGlyphPen(None)
            if self.cubic:  # CFF outlines are cubic and run counter-clockwise, TrueType's not
                self.glyph_set[name].draw(Cu2QuPen(pen, _MAX_CURVE_ERROR, reverse_direction=True))
            else:  # a TrueType source: composites drawn out, their parts may not be embedded
                recording = DecomposingRecordingPen(self.glyph_set)
                self.glyph_set[name].draw(recording)
                recording.replay(pen)
            glyph = pen.glyph()
            glyph.recalcBounds(None)
            lsb = glyph.xMin if glyph.numberOfContours else 0
            cached = (glyph.compile(None), self.font["hmtx"][name][0], lsb)
            self.glyphs[name] = cached
        return cached

    def build(self, chars: Iterable[str]) -> bytes:
        """A TrueType font of `chars` (those this face has), its metrics and names the face's."""
        with self.lock:
            cmap = {ord(ch): self.cmap[ord(ch)] for ch in chars if ord(ch) in self.cmap}
            # Glyphs in code point order, so the subset fpdf2 embeds does not depend on which
            # other characters happened to be converted before (the same notice, the same bytes).
            first: dict[str, int] = {}
            for code in sorted(cmap):
                first.setdefault(cmap[code], code)
            order = [".notdef"] + [name for name in first if name != ".notdef"]
            glyphs = {name: self.glyph(name) for name in order}
            src = self.font
            names = {key: record.toUnicode() for key, record in
                     ((key, src["name"].getName(i, 3, 1, 0x409) or src["name"].getName(i, 1, 0, 0))
                      for i, key in _NAME_IDS.items()) if record is not None}
            head, hhea, os2, post = src["head"], src["hhea"], src["OS/2"], src["post"]
        fb = FontBuilder(head.unitsPerEm, isTTF=True)
        fb.font.recalcTimestamp = False
        fb.font.recalcBBoxes = False  # the face's box covers the subset's (and is fixed)
        fb.setupGlyphOrder(order)
        fb.setupCharacterMap(cmap)
        # The glyf table straight from the converted data (setupGlyf would decompile it all);
        # fpdf2 recomputes the bounding boxes and maxp of the subset it embeds.
        glyf = newTable("glyf")
        glyf.glyphs = {name: Glyph(data) for name, (data, _, _) in glyphs.items()}
        glyf.glyphOrder = order
        fb.font["loca"] = newTable("loca")
        fb.font["glyf"] = glyf
        fb.setupHorizontalMetrics({name: (adv, lsb) for name, (_, adv, lsb) in glyphs.items()})
        fb.setupHead(unitsPerEm=head.unitsPerEm, created=head.created, modified=head.modified,
                     fontRevision=head.fontRevision, xMin=head.xMin, yMin=head.yMin,
                     xMax=head.xMax, yMax=head.yMax)
        fb.setupHorizontalHeader(ascent=hhea.ascent, descent=hhea.descent, lineGap=hhea.lineGap)
        fb.setupNameTable(names or {"familyName": "Notice", "styleName": "Regular"})
        fb.setupOS2(usWeightClass=os2.usWeightClass, fsType=0, achVendID=os2.achVendID,
                    xAvgCharWidth=os2.xAvgCharWidth,  # else averaged over this subset
                    sTypoAscender=os2.sTypoAscender, sTypoDescender=os2.sTypoDescender,
                    sTypoLineGap=os2.sTypoLineGap, usWinAscent=os2.usWinAscent,
                    usWinDescent=os2.usWinDescent, yStrikeoutSize=os2.yStrikeoutSize,
                    yStrikeoutPosition=os2.yStrikeoutPosition,
                    sxHeight=getattr(os2, "sxHeight", 0),
                    sCapHeight=getattr(os2, "sCapHeight", hhea.ascent))
        fb.setupPost(keepGlyphNames=False, underlinePosition=post.underlinePosition,
                     underlineThickness=post.underlineThickness)
        fb.setupMaxp()
        out = io.BytesIO()
        fb.save(out)
        return out.getvalue()


@lru_cache(maxsize=4)
def _source(face: Face) -> _Source:
    return _Source(face)


# Characters seen in the notice's own wording, so later notices need no second layout pass.
_known_chars: set[str] = set()


# ------------------------------------------------------------------------------ the document


class _NoticePDF(FPDF):
    """A4 portrait; the footer names the case and the page."""

    def __init__(self, ref: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.ref = ref

    def footer(self) -> None:
        self.set_y(-13)
        self.set_font(FAMILY, size=8)
        self.set_text_color(90)
        self.cell(0, 5, f"{TITLE}　受理编号 {self.ref}　第 {self.page_no()} 页 共 {{nb}} 页",
                  align=Align.C)
        self.set_text_color(0)


def render_notice(template: str, context: Mapping[str, Any], *,
                  font: str | os.PathLike[str] = "") -> bytes:
    """The notice PDF for an `issued` or `revoked` reply, from that reply's context.

    `font` is `[outbox] notice_font` (empty: the standard folders; NoticeFontError when none).
    The creation date is the issue or revocation time of the context, so the same context
    gives the same bytes.
    """
    if template not in TEMPLATES:
        raise ValueError(f"no notice for template {template!r}; only {' and '.join(TEMPLATES)}")
    when_key = "issued_at" if template == ISSUED else "revoked_at"
    for key in ("ref", "company", "org_code", "certificates", when_key):
        if not context.get(key):
            raise ValueError(f"notice context lacks {key!r}")
    if not all(isinstance(cert, Mapping) for cert in context["certificates"]):
        raise ValueError("notice context: certificates must be a list of objects")
    source = _source(find_font(font))
    chars = set(_BASE_CHARS | _known_chars) | set("".join(_strings(context)))
    with tempfile.TemporaryDirectory(prefix="mailbot-notice-") as scratch:
        # A second pass only when the wording used a character not converted yet: the first
        # notice of a process, or after the wording changed.
        for attempt in (1, 2):
            path = Path(scratch) / f"notice-{attempt}.ttf"  # fpdf2 reads fonts from files only
            path.write_bytes(source.build(chars))
            pdf = _NoticePDF(_text(context["ref"]))
            pdf.add_font(FAMILY, "", str(path))
            try:
                _layout(pdf, template, context)
            except Exception:
                _discard(pdf)
                raise
            lacking = {chr(c) for c in pdf.fonts[FAMILY].missing_glyphs}
            fresh = {ch for ch in lacking - chars if ord(ch) in source.cmap}
            if not fresh or attempt == 2:
                if lacking - fresh:
                    log.warning("notice %s: the font %s has no glyph for %r", context["ref"],
                                source.face.name, "".join(sorted(lacking - fresh)))
                return bytes(pdf.output())
            _discard(pdf)
            _known_chars.update(fresh)
            chars |= fresh
    raise AssertionError("unreachable")


def _discard(pdf: FPDF) -> None:
    """Let go of a layout not output: what fpdf2's output does with a document's font."""
    for font in pdf.fonts.values():
        subset = getattr(font, "subset", None)
        for cached in (getattr(subset, "pick", None), getattr(subset, "get_glyph", None)):
            if hasattr(cached, "cache_clear"):  # functools caches that would keep the font
                cached.cache_clear()
        if hasattr(font, "close"):
            font.close()


def _strings(value: Any) -> Iterable[str]:
    """Every string (and number) in a context, however nested: the characters it may print."""
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str | int | float):
        yield str(value)


def _layout(pdf: _NoticePDF, template: str, ctx: Mapping[str, Any]) -> None:
    issued = template == ISSUED
    when = _text(ctx["issued_at"] if issued else ctx["revoked_at"])
    created = _moment(when)
    if created is not None:
        pdf.set_creation_date(created)
    pdf.set_title(TITLE)
    pdf.set_subject(f"{_text(ctx['ref'])} {_text(ctx['company'])}")
    pdf.set_author(OFFICE)
    pdf.set_creator("mailbot")
    pdf.set_lang("zh-CN")
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(True, margin=18)
    pdf.add_page()

    ref, company = _text(ctx["ref"]), _text(ctx["company"])
    mailbox = _text(ctx.get("mailbox")) or _MAILBOX
    hotline = _text(ctx.get("hotline")) or _DEFAULTS.hotline
    certs = sorted(ctx["certificates"], key=lambda c: _ROLE_ORDER.get(str(c.get("role")), 9))
    received = _text(ctx.get("received_at"))
    since = f"于 {received} " if received else ""

    _bold(pdf, TITLE, size=17, align=Align.C, height=10)
    pdf.set_font(FAMILY, size=10)
    pdf.cell(0, 6, f"受理编号：{ref}", align=Align.R, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    _para(pdf, f"{company}：", indent=False)
    if issued:
        _para(pdf, f"贵单位{since}通过电子邮箱 {mailbox} 提交的服务类密码设备 SM2 数字证书新办申请，"
                   f"经{OFFICE}审核，已予受理，并于 {when} 签发数字证书。现将有关事项告知如下：")
    else:
        reason = _text(ctx.get("reason_text")) or "未说明"
        _para(pdf, f"贵单位{since}通过电子邮箱 {mailbox} 提交的数字证书注销申请，经{OFFICE}审核，"
                   f"已予受理，并于 {when} 注销下列数字证书，注销原因：{reason}。"
                   "现将有关事项告知如下：")

    sections = iter(_NUMERALS)
    _heading(pdf, sections, "申请单位信息")
    rows = [("受理编号", ref), ("申请单位", company),
            ("机构代码（统一社会信用代码）", _text(ctx["org_code"])),
            ("业务类型", "新办数字证书（SM2 算法）" if issued else "注销数字证书")]
    if received:
        rows.append(("申请收到时间", received))
    if issued:
        rows.append(("签发时间", when))
    else:
        rows += [("注销时间", when), ("注销原因", _text(ctx.get("reason_text")) or "未说明")]
    _key_table(pdf, rows)

    _heading(pdf, sections, "数字证书信息" if issued else "已注销的数字证书")
    _cert_table(pdf, certs)
    root_chain = _text(ctx.get("root_chain_path")) or ROOT_CHAIN_PATH
    if issued:
        _heading(pdf, sections, "交付内容说明")
        _para(pdf, "本次通过电子邮件，向《中国电子口岸数字证书申请表》中填写的邮件地址发送以下文件：")
        notice_name = _text(ctx.get("notice_filename")) or NOTICE_FILENAME
        _items(pdf, [
            "sign.cer：签名数字证书；",
            "env.cer：加密数字证书；",
            "envprivatekey：加密密钥对（已用贵单位签名证书的公钥加密保护，须以服务类密码设备中"
            "对应的签名私钥解开后导入）；",
            f"本告知书（{notice_name}）。",
        ])
        _para(pdf, f"SM2 算法根证书不随邮件发送，请自中国电子口岸门户网站下载，具体为：{root_chain}。")
    else:
        _heading(pdf, sections, "有关说明")
        _items(pdf, [
            "上述数字证书自注销时起停止使用，请及时从服务类密码设备中删除相关证书和密钥。",
            "如需继续使用数字证书，请按新办业务流程重新申请。",
            f"SM2 算法根证书可自中国电子口岸门户网站下载，具体为：{root_chain}。",
        ])

    _heading(pdf, sections, "用户须知（依据《中国电子口岸数字证书申请须知》）")
    duties = [
        "用户应妥善保管证书私钥，如在证书有效期内出现证书私钥损毁、丢失或泄露的，用户应立即向"
        "受理机构办理证书注销。用户证书私钥泄露、损毁或者丢失未及时申请注销，由此造成的损失由"
        "用户自行承担。",
        "申请单位名称发生变更，用户应及时通过受理机构办理新数字证书，并及时注销原数字证书，"
        "未及时办理更新而造成的损失由用户自行承担。",
        "因数字证书到期需要进行延期的，按新办业务流程办理。",
    ]
    if issued:
        until = next((_text(c.get("not_after")) for c in certs if c.get("not_after")), "")
        if until:
            duties[2] = f"本次签发的数字证书有效期至 {until}（北京时间）。" + duties[2]
        duties.insert(1, "签名私钥应保存在服务类密码设备中，不得导出或交予他人；envprivatekey "
                         "文件及本邮件请妥善保管，勿转发。")
        duties.append(f"办理注销：备齐注销所需材料（含待注销的数字证书文件），发送至 {mailbox}，"
                      f"邮件主题为“企业名称+数字证书申办”，并拨打热线 {hotline} 确认；"
                      "也可至服务大厅现场办理。")
    _items(pdf, duties, numbered="（{}）")

    _heading(pdf, sections, "联系方式")
    _items(pdf, [
        f"技术支持热线：{hotline}（7×24 小时，非对外办理时间由全国统一热线服务）",
        f"服务大厅：{_text(ctx.get('hall_address')) or _DEFAULTS.hall_address}",
        f"对外办理时间：{_text(ctx.get('office_hours')) or _DEFAULTS.office_hours}",
        f"受理邮箱：{mailbox}（来信请在邮件主题中注明受理编号 {ref}）",
    ], numbered=None)

    pdf.ln(6)
    pdf.set_font(FAMILY, size=11)
    for line in (OFFICE, _chinese_date(created) if created else when[:10]):
        pdf.cell(0, 7, line, align=Align.R, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


# ------------------------------------------------------------------------- layout helpers


def _para(pdf: FPDF, text: str, *, indent: bool = True, size: float = 10.5) -> None:
    """A paragraph, first line indented two characters as Chinese prose is."""
    pdf.set_font(FAMILY, size=size)
    _write(pdf, ("　　" if indent else "") + text, size)
    pdf.ln(1)


def _items(pdf: FPDF, items: Sequence[str], *, numbered: str | None = "{}. ",
           size: float = 10.5) -> None:
    """An indented list; numbered "1. " or "（一）", or plain lines."""
    pdf.set_font(FAMILY, size=size)
    for i, item in enumerate(items):
        mark = ""
        if numbered is not None:
            mark = numbered.format(_NUMERALS[i] if "（" in numbered else i + 1)
        pdf.set_x(pdf.l_margin + 7)
        _write(pdf, mark + item, size)
        pdf.ln(0.8)
    pdf.ln(0.5)


def _write(pdf: FPDF, text: str, size: float) -> None:
    """Lines broken by _lines from the current x to the right margin."""
    width = pdf.w - pdf.r_margin - pdf.get_x() - 2 * pdf.c_margin - 0.01
    pdf.multi_cell(0, size * 0.62, "\n".join(_lines(pdf, text, width)), align=Align.L,
                   wrapmode=WrapMode.CHAR, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _lines(pdf: FPDF, text: str, width: float) -> list[str]:
    """Break `text` into lines of at most `width` mm the way Chinese is set.

    Any two Chinese characters may be split, but a closing mark never starts a line and an
    opening mark never ends one (禁则), and a Latin word, number, date or address stays whole
    where it fits on a line (fpdf2 alone would split "2026-11-30" or start a line with "。").
    """
    tokens: list[str] = []
    for token in _TOKENS.findall(text):
        if len(token) > 1 and pdf.get_string_width(token) > width:
            tokens.extend(token)  # longer than a line: it has to break somewhere
        else:
            tokens.append(token)
    lines: list[str] = []
    line: list[str] = []
    used = 0.0
    for token in tokens:
        w = pdf.get_string_width(token)
        if line and used + w > width:
            if token.isspace():  # a space at the break just ends the line
                lines.append("".join(line).rstrip())
                line, used = [], 0.0
                continue
            carry: list[str] = []
            if token[0] in _NO_LINE_START and len(line) > 1:
                carry.append(line.pop())
            while len(line) > 1 and line[-1][-1] in _NO_LINE_END:
                carry.insert(0, line.pop())
            lines.append("".join(line).rstrip())
            line = carry
            used = sum(pdf.get_string_width(t) for t in line)
        line.append(token)
        used += w
    if line:
        lines.append("".join(line).rstrip())
    return lines


def _bold(pdf: FPDF, text: str, *, size: float, align: Align = Align.L,
          height: float = 7) -> None:
    """Bold by stroking the glyph outlines too: one embedded face serves the whole notice."""
    pdf.set_font(FAMILY, size=size)
    with pdf.local_context(text_mode=TextMode.FILL_STROKE, line_width=size * 0.012):
        pdf.cell(0, height, text, align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _heading(pdf: FPDF, numbers: Iterable[str], text: str) -> None:
    """"一、…": never the last line of a page (it goes with what it heads)."""
    if pdf.get_y() > pdf.h - pdf.b_margin - 25:
        pdf.add_page()
    pdf.ln(2)
    _bold(pdf, f"{next(iter(numbers))}、{text}", size=11.5)
    pdf.ln(0.5)


def _key_table(pdf: FPDF, rows: Sequence[tuple[str, str]]) -> None:
    """Label and value, two columns, labels shaded."""
    pdf.set_font(FAMILY, size=9.5)
    with pdf.table(col_widths=(52, 118), first_row_as_headings=False, text_align="LEFT",
                   line_height=5.2, wrapmode=WrapMode.CHAR, padding=(1, 2),
                   v_align="MIDDLE") as table:
        for label, value in rows:
            row = table.row()
            row.cell(label, style=FontFace(fill_color=_GREY))
            row.cell(value)
    pdf.ln(1)


def _cert_table(pdf: FPDF, certs: Sequence[Mapping[str, Any]]) -> None:
    """One column per certificate (the signing and the encryption one), one row per field;
    then the SM3 fingerprints, each on one line of its own so it can be read and copied whole.
    """
    size = 8.5
    label_w = 30.0
    for start in range(0, len(certs), 2):  # two certificates side by side fit A4
        group = certs[start:start + 2]
        col_w = (pdf.epw - label_w) / len(group)
        pdf.set_font(FAMILY, size=size)
        serials = [_text(c.get("serial")) for c in group]
        fields = [("证书主题", [_text(c.get("subject")) for c in group]),
                  ("生效时间", [_text(c.get("not_before")) for c in group]),
                  ("失效时间", [_text(c.get("not_after")) for c in group])]
        with pdf.table(col_widths=(label_w, *[col_w] * len(group)), text_align="LEFT",
                       line_height=4.8, wrapmode=WrapMode.CHAR, padding=(1, 2),
                       headings_style=FontFace(fill_color=_GREY), v_align="MIDDLE") as table:
            head = table.row()
            head.cell("项目")
            for cert in group:
                head.cell(_cert_name(cert))
            row = table.row()
            row.cell("证书序列号", style=FontFace(fill_color=_GREY))
            for serial in serials:
                row.cell(serial, style=_fitting(pdf, serial, col_w - 4, size))
            for label, values in fields:
                row = table.row()
                row.cell(label, style=FontFace(fill_color=_GREY))
                for value in values:
                    row.cell(value)
        if start + 2 < len(certs):
            pdf.ln(1.5)
    with pdf.table(col_widths=(label_w, pdf.epw - label_w), text_align="LEFT", line_height=4.8,
                   wrapmode=WrapMode.CHAR, padding=(1, 2), first_row_as_headings=False,
                   v_align="MIDDLE") as table:
        for cert in certs:
            fingerprint = _text(cert.get("sm3_fingerprint"))
            row = table.row()
            role = str(cert.get("role"))
            row.cell(f"{_ROLES.get(role, role)} SM3 指纹", style=FontFace(fill_color=_GREY))
            row.cell(fingerprint, style=_fitting(pdf, fingerprint, pdf.epw - label_w - 4, size))
    pdf.ln(1.5)


def _cert_name(cert: Mapping[str, Any]) -> str:
    """"签名证书（sign.cer）"."""
    role = str(cert.get("role"))
    return f"{_ROLES.get(role, role)}（{_text(cert.get('filename'))}）"


def _fitting(pdf: FPDF, text: str, width: float, size: float) -> FontFace | None:
    """A smaller size where `text` would not fit on one line of `width` mm at `size` points.

    Serials and fingerprints are not broken: they are compared, searched and copied whole.
    """
    pdf.set_font(FAMILY, size=size)
    wide = pdf.get_string_width(text)
    return None if wide <= width else FontFace(size_pt=round(size * width / wide - 0.05, 1))


def _text(value: Any) -> str:
    """A context value as one line of text (None -> "", runs of whitespace -> one space)."""
    if value is None:
        return ""
    return _WHITESPACE.sub(" ", str(value)).strip()


def _moment(text: str) -> datetime | None:
    """"2026-11-30 10:02" (Beijing time, as the context writes it) as an aware datetime."""
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=SHANGHAI)
        except ValueError:
            continue
    return None


def _chinese_date(moment: datetime) -> str:
    return f"{moment.year} 年 {moment.month} 月 {moment.day} 日"
