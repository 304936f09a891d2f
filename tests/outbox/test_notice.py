"""The notice PDF 《中国电子口岸数字证书申请受理告知书》 (issue 10, item 2).

Three independent readers (pypdf, pdfminer.six and poppler's pdftotext) must find the case's
facts in the text; the only font is embedded, subset and mapped to Unicode.
"""

from __future__ import annotations

import gc
import io
import re
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.boundsPen import BoundsPen
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTFont
from fpdf.fonts import SubsetMap
from pdfminer.high_level import extract_text as pdfminer_text
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from mailbot.config import ConfigError, OutboxConfig
from mailbot.outbox import notice
from mailbot.outbox.context import NOTICE_FILENAME, ROOT_CHAIN_PATH
from mailbot.outbox.notice import NoticeFontError, find_font, render_notice

COMPANY = "厦门鹭岛港务数据科技有限公司"
SIGN_SERIAL = "5F3A9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203"
ENC_SERIAL = "7FFFA9C0D1E2B4A6C8E0F1A2B3C4D5E6F7081920"


def _fingerprint(seed: int) -> str:
    return ":".join(f"{(i * 37 + seed) % 256:02X}" for i in range(32))


def _cert(role: str, serial: str, seed: int) -> dict[str, str]:
    return {"role": role, "filename": "sign.cer" if role == "sign" else "env.cer",
            "serial": serial, "subject": f"C=CN,O={COMPANY},CN={COMPANY}",
            "not_before": "2026-11-30 10:02:00", "not_after": "2036-11-30 10:02:00",
            "sm3_fingerprint": _fingerprint(seed)}


def issued_context(**changes: Any) -> dict[str, Any]:
    """The `issued` context as `app` builds it (mailbot/outbox/context.py)."""
    defaults = OutboxConfig()
    ctx: dict[str, Any] = {
        "ref": "XM-2026-0007", "kind": "new", "company": COMPANY,
        "received_at": "2026-11-30 09:15", "original_subject": f"{COMPANY}+数字证书申办",
        "mailbox": "xmport@189.cn", "hotline": defaults.hotline,
        "office_hours": defaults.office_hours, "hall_address": defaults.hall_address,
        "org_code": "91350200MA2XYZ1234", "issued_at": "2026-11-30 10:02",
        "certificates": [_cert("enc", ENC_SERIAL, 7), _cert("sign", SIGN_SERIAL, 0)],
        "root_chain_path": ROOT_CHAIN_PATH, "notice_filename": NOTICE_FILENAME,
    }
    ctx.update(changes)
    return ctx


def revoked_context(**changes: Any) -> dict[str, Any]:
    ctx = issued_context(kind="revoke", revoked_at="2026-12-01 14:20",
                         reason_text="密钥丢失、泄露或损毁")
    del ctx["issued_at"]
    ctx.update(changes)
    return ctx


def _flat(text: str) -> str:
    """Text without whitespace and page footers: readers differ in where they put spaces and
    line breaks, and a sentence may go on over a page break."""
    flat = re.sub(r"\s+", "", text)
    return re.sub(r"中国电子口岸数字证书申请受理告知书受理编号XM-\d{4}-\d{4}第\d+页共\d+页", "", flat)


def _pypdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def _pdfminer_text(pdf: bytes) -> str:
    return pdfminer_text(io.BytesIO(pdf))


def _poppler_text(pdf: bytes, tmp_path: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("poppler-utils (pdftotext) is not installed")
    path = tmp_path / NOTICE_FILENAME
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout


@pytest.fixture(scope="module")
def issued_pdf() -> bytes:
    return render_notice("issued", issued_context())


@pytest.fixture(scope="module")
def revoked_pdf() -> bytes:
    return render_notice("revoked", revoked_context())


# ------------------------------------------------------------------------------------ text


@pytest.mark.parametrize("reader", ["pypdf", "pdfminer", "poppler"])
def test_issued_notice_says_what_the_applicant_needs(issued_pdf: bytes, reader: str,
                                                     tmp_path: Path) -> None:
    text = {"pypdf": _pypdf_text, "pdfminer": _pdfminer_text}.get(
        reader, lambda pdf: _poppler_text(pdf, tmp_path))(issued_pdf)
    flat = _flat(text)
    for fact in ("中国电子口岸数字证书申请受理告知书", "XM-2026-0007", COMPANY,
                 "91350200MA2XYZ1234", SIGN_SERIAL, ENC_SERIAL, "2026-11-3010:02:00",
                 "2036-11-3010:02:00", _fingerprint(0), _fingerprint(7),
                 "sign.cer", "env.cer", "envprivatekey", _flat(ROOT_CHAIN_PATH),
                 "0592-5653395", "2026年11月30日"):
        assert _flat(fact) in flat, f"{reader} does not find {fact!r}"
    # 须知 四 (the private key), 二 (a renamed organisation) and 三 (renewal), as written.
    for duty in ("用户应妥善保管证书私钥", "用户应立即向受理机构办理证书注销",
                 "由此造成的损失由用户自行承担", "申请单位名称发生变更",
                 "并及时注销原数字证书", "因数字证书到期需要进行延期的，按新办业务流程办理"):
        assert duty in flat, f"{reader} does not find the duty {duty!r}"


@pytest.mark.parametrize("reader", ["pypdf", "pdfminer", "poppler"])
def test_revoked_notice_says_what_was_revoked_when_and_why(revoked_pdf: bytes, reader: str,
                                                           tmp_path: Path) -> None:
    text = {"pypdf": _pypdf_text, "pdfminer": _pdfminer_text}.get(
        reader, lambda pdf: _poppler_text(pdf, tmp_path))(revoked_pdf)
    flat = _flat(text)
    for fact in ("已注销的数字证书", COMPANY, "91350200MA2XYZ1234", SIGN_SERIAL, ENC_SERIAL,
                 "注销时间", "2026-12-0114:20", "注销原因", "密钥丢失、泄露或损毁",
                 "用户应妥善保管证书私钥", "2026年12月1日"):
        assert _flat(fact) in flat, f"{reader} does not find {fact!r}"
    assert "签发时间" not in flat and "envprivatekey" not in flat


def test_text_reads_in_order_without_stray_spaces(issued_pdf: bytes) -> None:
    """pypdf reads whole lines as written (no space between glyphs: the widths are right)."""
    lines = _pypdf_text(issued_pdf).splitlines()
    assert "中国电子口岸数字证书申请受理告知书" in lines
    assert any(line.startswith("申请单位") and line.endswith(COMPANY) for line in lines)


def test_no_line_starts_with_closing_punctuation(issued_pdf: bytes, revoked_pdf: bytes,
                                                 tmp_path: Path) -> None:
    for pdf in (issued_pdf, revoked_pdf):
        for line in _poppler_text(pdf, tmp_path).splitlines():
            assert not line.strip() or line.strip()[0] not in "，。、；：？！）》”", line


def test_line_breaking_keeps_words_whole_and_marks_in_place(tmp_path: Path) -> None:
    pdf = notice._NoticePDF("XM-2026-0001")
    source = notice._source(find_font())
    font = tmp_path / "f.ttf"
    font.write_bytes(source.build(set(notice._BASE_CHARS) | set("贵单位于通过提交的申请，。")))
    pdf.add_font(notice.FAMILY, "", str(font))
    pdf.set_font(notice.FAMILY, size=10.5)
    text = "贵单位于 2026-11-30 09:15 通过 xmport@189.cn 提交的申请，贵单位于通过提交的申请。"
    for width in (20.0, 30.0, 45.0, 60.0):
        lines = notice._lines(pdf, text, width)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")
        assert all(pdf.get_string_width(line) <= width + 0.01 for line in lines)
        assert all(line[0] not in "，。" for line in lines)
        words = " ".join(lines).split()
        for word in ("2026-11-30", "xmport@189.cn"):
            assert word in words or pdf.get_string_width(word) > width
    notice._discard(pdf)


# ------------------------------------------------------------------------------------ font


def _fonts(pdf: bytes) -> list[DictionaryObject]:
    reader = PdfReader(io.BytesIO(pdf))
    found = []
    for page in reader.pages:
        for ref in page["/Resources"]["/Font"].values():
            found.append(ref.get_object())
    return found


def test_the_only_font_is_an_embedded_subset_with_a_unicode_map(issued_pdf: bytes) -> None:
    fonts = _fonts(issued_pdf)
    assert fonts
    for font in fonts:
        # A simple font (Type1/TrueType, e.g. Helvetica or a non-embedded STSong-Light) would
        # depend on the reader's own fonts.
        assert font["/Subtype"] == "/Type0"
        assert font["/Encoding"] == "/Identity-H"
        assert "/ToUnicode" in font
        assert re.fullmatch(r"/[A-Z]{6}\+\S+", font["/BaseFont"])
        for descendant in font["/DescendantFonts"]:
            desc = descendant.get_object()["/FontDescriptor"].get_object()
            assert re.fullmatch(r"/[A-Z]{6}\+\S+", desc["/FontName"])
            embedded = [k for k in ("/FontFile", "/FontFile2", "/FontFile3") if k in desc]
            assert embedded == ["/FontFile2"]
            data = desc["/FontFile2"].get_object().get_data()
            sub = TTFont(io.BytesIO(data))
            # a subset: the glyphs this notice uses, not the tens of thousands of the face
            assert 100 < len(sub.getGlyphOrder()) < 1000
            assert len(data) < 300_000


def test_pdffonts_sees_one_embedded_subset_font(issued_pdf: bytes, tmp_path: Path) -> None:
    if shutil.which("pdffonts") is None:
        pytest.skip("poppler-utils (pdffonts) is not installed")
    path = tmp_path / "n.pdf"
    path.write_bytes(issued_pdf)
    out = subprocess.run(["pdffonts", str(path)], check=True, capture_output=True, text=True,
                         timeout=60).stdout.splitlines()[2:]
    assert len(out) == 1
    name, *rest = out[0].split()
    assert re.fullmatch(r"[A-Z]{6}\+\S+", name)
    assert rest[-5:-2] == ["yes", "yes", "yes"]  # emb sub uni


def test_glyphs_keep_the_source_shapes() -> None:
    """The converted outline of 证 fills (within 1/1000 em) the box of the original."""
    source = notice._source(find_font())
    name = source.cmap[ord("证")]
    data, advance, _lsb = source.glyph(name)
    assert advance == source.font["hmtx"][name][0]
    built = TTFont(io.BytesIO(source.build(["证"])))
    glyph = built["glyf"][built.getBestCmap()[ord("证")]]
    pen = BoundsPen(source.glyph_set)
    source.glyph_set[name].draw(pen)
    assert pen.bounds is not None
    ours = (glyph.xMin, glyph.yMin, glyph.xMax, glyph.yMax)
    assert all(abs(a - b) <= 2 for a, b in zip(ours, pen.bounds, strict=True))
    assert data


def test_same_context_same_bytes_whatever_was_rendered_before() -> None:
    first = render_notice("issued", issued_context())
    render_notice("revoked", revoked_context(company="泉州测试贸易有限公司"))
    assert render_notice("issued", issued_context()) == first
    meta = PdfReader(io.BytesIO(first)).metadata
    assert meta is not None and meta.creation_date is not None
    assert meta.creation_date == datetime(2026, 11, 30, 10, 2, tzinfo=timezone(timedelta(hours=8)))
    assert meta.title == "中国电子口岸数字证书申请受理告知书"


def test_characters_outside_the_wording_come_from_the_context() -> None:
    """A rare character in a company name is embedded too (not just the template's)."""
    rare = "厦门喆堃燊犇科技有限公司"
    pdf = render_notice("issued", issued_context(company=rare))
    assert rare in _flat(_pdfminer_text(pdf))


def test_a_rendered_notice_is_not_kept_in_memory() -> None:
    """fpdf2 caches glyph look-ups per font on the class; nothing of a notice may stay."""
    render_notice("issued", issued_context())
    gc.collect()
    assert SubsetMap.pick.cache_info().currsize == 0  # type: ignore[attr-defined]
    assert SubsetMap.get_glyph.cache_info().currsize == 0  # type: ignore[attr-defined]


def test_warm_rendering_is_fast() -> None:
    """Tens of milliseconds once the face is open; a generous bound for a shared CI machine."""
    render_notice("issued", issued_context())
    start = time.perf_counter()
    for _ in range(3):
        render_notice("issued", issued_context())
    assert (time.perf_counter() - start) / 3 < 1.5


# ------------------------------------------------------------------------ configuration


@pytest.fixture
def fresh_font_lookup() -> Any:
    notice._find_font.cache_clear()
    yield
    notice._find_font.cache_clear()


def test_the_default_font_is_noto_serif_cjk_sc() -> None:
    face = find_font()
    assert face.name.startswith("Noto Serif CJK SC") or " SC" in face.name
    assert OutboxConfig().notice_font == ""


def test_a_configured_font_is_used(tmp_path: Path) -> None:
    """A TrueType CJK font (here one made from the default face) named by notice_font."""
    source = notice._source(find_font())
    wording = set(_flat(_pypdf_text(render_notice("issued", issued_context()))))
    path = tmp_path / "MyCJK.ttf"
    path.write_bytes(source.build(set(notice._BASE_CHARS) | wording | set(notice.PROBE)))
    face = find_font(path)
    assert face.path == path and face.index == 0
    pdf = render_notice("issued", issued_context(), font=str(path))
    assert COMPANY in _flat(_pypdf_text(pdf))


def test_a_missing_configured_font_is_one_clear_error(fresh_font_lookup: None) -> None:
    with pytest.raises(NoticeFontError, match=r"\[outbox\] notice_font = '/nowhere/x.ttc'"):
        render_notice("issued", issued_context(), font="/nowhere/x.ttc")
    assert issubclass(NoticeFontError, ConfigError)


def test_no_font_installed_names_the_package(fresh_font_lookup: None, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notice, "FONT_PATH_DEBIAN", tmp_path / "none.ttc")
    monkeypatch.setattr(notice, "FONT_DIRS", (str(tmp_path),))
    with pytest.raises(NoticeFontError, match="fonts-noto-cjk") as exc:
        find_font()
    assert "\n" not in str(exc.value)


def test_a_font_without_chinese_is_refused(fresh_font_lookup: None, tmp_path: Path) -> None:
    fb = FontBuilder(1000, isTTF=True)
    fb.setupGlyphOrder([".notdef", "A"])
    fb.setupCharacterMap({ord("A"): "A"})
    pen = TTGlyphPen(None)
    pen.moveTo((0, 0))
    pen.lineTo((500, 700))
    pen.lineTo((500, 0))
    pen.closePath()
    fb.setupGlyf({".notdef": TTGlyphPen(None).glyph(), "A": pen.glyph()})
    fb.setupHorizontalMetrics({".notdef": (500, 0), "A": (500, 0)})
    fb.setupHorizontalHeader(ascent=800, descent=-200)
    fb.setupNameTable({"familyName": "Latin Only", "styleName": "Regular"})
    fb.setupOS2()
    fb.setupPost()
    path = tmp_path / "latin.ttf"
    fb.save(str(path))
    with pytest.raises(NoticeFontError, match="no face has both Chinese and Latin glyphs"):
        find_font(path)
    (tmp_path / "broken.otf").write_bytes(b"not a font")
    with pytest.raises(NoticeFontError, match="not a readable font file"):
        find_font(tmp_path / "broken.otf")


# ---------------------------------------------------------------------------- the context


def test_only_the_issued_and_revoked_templates_have_a_notice() -> None:
    with pytest.raises(ValueError, match="acknowledgement"):
        render_notice("acknowledgement", issued_context())


@pytest.mark.parametrize("key", ["ref", "company", "org_code", "certificates", "issued_at"])
def test_a_context_without_a_needed_key_is_refused(key: str) -> None:
    ctx = issued_context()
    del ctx[key]
    with pytest.raises(ValueError, match=key):
        render_notice("issued", ctx)


def test_certificates_must_be_objects() -> None:
    with pytest.raises(ValueError, match="certificates"):
        render_notice("issued", issued_context(certificates=[SIGN_SERIAL]))


def test_optional_keys_may_be_missing() -> None:
    ctx = revoked_context(received_at=None, reason_text=None)
    for key in ("mailbox", "hotline", "office_hours", "hall_address", "root_chain_path",
                "notice_filename", "original_subject", "kind"):
        del ctx[key]
    flat = _flat(_pypdf_text(render_notice("revoked", ctx)))
    assert "0592-5653395" in flat and "xmport@189.cn" in flat and "未说明" in flat
    assert _flat(ROOT_CHAIN_PATH) in flat


def test_one_certificate_and_long_values_still_lay_out() -> None:
    long_company = "厦门" + "港口物流供应链管理" * 6 + "有限公司"
    ctx = revoked_context(company=long_company, certificates=[_cert("sign", "01" * 20, 3)])
    flat = _flat(_pypdf_text(render_notice("revoked", ctx)))
    assert long_company in flat and "01" * 20 in flat
