"""Form extraction from real .docx files of the application form (issue 3 item 8)."""

from __future__ import annotations

import io
import zipfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbot.intake.facts import FORM_KEYS
from mailbot.intake.form import extract_form, extract_form_details
from tests.support.formbuilder import (
    CN_HINT,
    CRYPTO_HINT,
    EMAIL_HINT,
    FILLED,
    blank_template,
    build_form,
    package,
    scanned_form,
)

STYLES = ["beside", "same_cell", "below", "paragraphs"]


@pytest.mark.parametrize("split_runs", [False, True], ids=["whole-runs", "split-runs"])
@pytest.mark.parametrize("style", STYLES)
def test_every_fill_style_gives_every_field(style: str, split_runs: bool) -> None:
    form = extract_form(build_form(style=style, split_runs=split_runs))
    assert form == dict(FILLED, application_type="new")


@pytest.mark.parametrize("style", ["beside", "same_cell", "below"])
def test_instructions_above_the_table_are_not_values(style: str) -> None:
    # "二、机构代码：市场主体…" and "申请单位承诺声明：需使用…" printed before the form
    form = extract_form(build_form(style=style, notes_before=True))
    assert form == dict(FILLED, application_type="new")


def test_values_are_kept_as_written() -> None:
    form = extract_form(build_form())
    assert form["handler_phone"] == "0592-5123456"  # a landline stays a landline
    assert form["legal_rep_id_type"] == "居民身份证"
    assert form["handler_id_no"] == "35020319920202567X"
    assert set(form) <= set(FORM_KEYS)


def test_two_phone_rows_belong_to_their_person() -> None:
    values = dict(FILLED, legal_rep_phone="13911112222", handler_phone="13733334444",
                  legal_rep_id_no="A1", handler_id_no="B2")
    for style in STYLES:
        form = extract_form(build_form(values, style=style))
        assert (form["legal_rep_phone"], form["handler_phone"]) == ("13911112222", "13733334444")
        assert (form["legal_rep_id_no"], form["handler_id_no"]) == ("A1", "B2")


@pytest.mark.parametrize("mark", ["☑", "■", "√", "□√", "[x]", "☒", "✓", "X", "sym", "checkbox",
                                  "pua", "wingdings2-text"])
@pytest.mark.parametrize("kind", ["new", "revoke"])
def test_tick_marks(mark: str, kind: str) -> None:
    details = extract_form_details(build_form(application_type=kind, mark=mark))
    assert details.fields["application_type"] == kind
    assert details.ticks == {"new": kind == "new", "revoke": kind == "revoke"}
    assert not details.application_type_ambiguous


def test_revoke_serial_keeps_its_case() -> None:
    form = extract_form(build_form(application_type="revoke", serial="0a1B2c3D"))
    assert form["application_type"] == "revoke"
    assert form["revoke_serial"] == "0a1B2c3D"
    assert "revoke_serial" not in extract_form(build_form())


@pytest.mark.parametrize("mark", ["☑", "■", "sym"])
def test_both_boxes_ticked_is_ambiguous(mark: str) -> None:
    details = extract_form_details(build_form(mark=mark, both_ticked=True))
    assert "application_type" not in details.fields
    assert details.ticks == {"new": True, "revoke": True}
    assert details.application_type_ambiguous


def test_blank_template_has_no_values_and_no_hints() -> None:
    details = extract_form_details(blank_template())
    assert details.is_form
    assert details.fields == {}
    assert details.ticks == {"new": False, "revoke": False}
    assert details.application_type_ambiguous


def test_printed_hints_are_never_values() -> None:
    # The applicant typed under the hint without deleting it.
    form = extract_form(build_form(keep_hints=True))
    assert form == dict(FILLED, application_type="new")
    # Left empty: the hint text stays out.
    form = extract_form(build_form(dict(FILLED, email="", crypto_cert_no="", common_name=""),
                                   application_type="revoke"))
    for key in ("email", "crypto_cert_no", "common_name"):
        assert key not in form
    for value in form.values():
        assert EMAIL_HINT[:6] not in value and CRYPTO_HINT not in value and CN_HINT not in value


def test_partly_filled_form_leaves_out_the_empty_keys() -> None:
    form = extract_form(build_form({"applicant_org": "厦门甲公司", "handler_phone": "13800000000"}))
    assert form == {"applicant_org": "厦门甲公司", "handler_phone": "13800000000",
                    "application_type": "new"}


def test_scanned_form_gives_nothing() -> None:
    details = extract_form_details(scanned_form())
    assert details.fields == {} and details.scanned and not details.is_form


@pytest.mark.parametrize("data", [
    b"", b"not a zip", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 2000,  # a .doc form
    b"PK\x03\x04" + b"\x00" * 100,
])
def test_non_docx_gives_empty(data: bytes) -> None:
    assert extract_form(data) == {}


def test_hostile_xml_is_refused() -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
            '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            '<w:body><w:p><w:r><w:t>申请单位：&lol2;</w:t></w:r></w:p></w:body></w:document>')
    assert extract_form(package(bomb)) == {}
    assert extract_form(package("<w:document><unclosed>")) == {}


def test_docx_without_document_part() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
    assert extract_form(buf.getvalue()) == {}


_VALUE = st.text(alphabet="厦门海沧湖里科技贸易有限公司ABCXYZabcxyz0123456789-@.", min_size=1,
                 max_size=30).filter(lambda s: s.strip(" -.@") == s and s)


@given(values=st.fixed_dictionaries({k: _VALUE for k in FILLED}),
       style=st.sampled_from(STYLES), split=st.booleans(),
       kind=st.sampled_from(["new", "revoke"]))
def test_round_trip_any_values(values: dict[str, str], style: str, split: bool,
                               kind: str) -> None:
    form = extract_form(build_form(values, kind, style=style, split_runs=split))
    assert form == dict(values, application_type=kind)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    assert isinstance(extract_form(data), dict)


@given(st.binary(max_size=300))
def test_arbitrary_document_xml_never_raises(junk: bytes) -> None:
    doc = package("<w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/"
                  "2006/main\"><w:body>" + junk.decode("latin-1") + "</w:body></w:document>")
    assert isinstance(extract_form(doc), dict)


def _rewrite(docx: bytes, old: str, new: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(docx)) as zf:
        xml = zf.read("word/document.xml").decode("utf-8")
    return package(xml.replace(old, new))


def test_tracked_formatting_changes_still_read() -> None:
    # <w:rPrChange> nests an rPr inside an rPr: the fast path falls back to a full parse.
    nested = ('<w:rPr><w:b/><w:rPrChange w:id="1" w:author="x"><w:rPr><w:i/></w:rPr>'
              '</w:rPrChange></w:rPr>')
    docx = _rewrite(build_form(), '<w:rPr><w:rFonts w:hint="eastAsia"/></w:rPr>', nested)
    assert extract_form(docx) == dict(FILLED, application_type="new")


def test_moved_text_is_read_once() -> None:
    moved = ('<w:moveFrom w:id="7" w:author="x"><w:r><w:t>旧公司</w:t></w:r></w:moveFrom>'
             '<w:ins w:id="8" w:author="x"><w:r><w:t xml:space="preserve">厦门某某科技有限公司</w:t>'
             '</w:r></w:ins>')
    docx = _rewrite(build_form(), '<w:r><w:rPr><w:rFonts w:hint="eastAsia"/></w:rPr><w:t xml:'
                    'space="preserve">厦门某某科技有限公司</w:t></w:r>', moved)
    assert extract_form(docx) == dict(FILLED, application_type="new")


def test_deleted_text_is_ignored_and_inserted_text_read() -> None:
    docx = _rewrite(build_form(), "<w:t xml:space=\"preserve\">厦门某某科技有限公司</w:t>",
                    '<w:delText>旧名称</w:delText><w:t xml:space="preserve">厦门某某科技有限公司</w:t>')
    assert extract_form(docx)["applicant_org"] == FILLED["applicant_org"]


@pytest.mark.parametrize("old,new", [
    (">机构代码<", ">机构代码（统一社会信用代码）<"),
    (">法定代表人/<", ">法定代表人或<"),
    (">申请单位<", ">申 请 单 位<"),
    (">经办人<", ">经 办 人：<"),
])
def test_label_variants(old: str, new: str) -> None:
    docx = _rewrite(build_form(), old, new)
    assert extract_form(docx) == dict(FILLED, application_type="new")


def test_label_words_inside_values_are_values() -> None:
    values = dict(FILLED, applicant_org="厦门算法科技有限公司", common_name="厦门算法科技有限公司",
                  handler_name="王经办人")
    for style in STYLES:
        assert extract_form(build_form(values, style=style)) == dict(values, application_type="new")
