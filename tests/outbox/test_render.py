"""The templates render every reply in plain Chinese; HTML escapes, text does not; errors name
the file; an operator may override one file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mailbot.config import DEFAULT_TEMPLATES_DIR
from mailbot.outbox import render as render_module
from mailbot.outbox.context import TEMPLATES
from mailbot.outbox.render import Renderer, TemplateError
from tests.outbox import BASE, COMPANY, FINDINGS, context

HOSTILE = '<script>alert("x")</script>&厦门某某<b>有限公司</b>'
APPLICANT_TEMPLATES = [t for t in TEMPLATES if t != "digest"]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def test_every_shipped_template_compiles(renderer: Renderer) -> None:
    renderer.check()
    for template in TEMPLATES:
        for name in Renderer.files(template):
            assert (DEFAULT_TEMPLATES_DIR / name).is_file()


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_renders_a_realistic_context(renderer: Renderer, template: str) -> None:
    ctx = context(template)
    out = renderer.render(template, ctx)
    for part in (out.subject, out.text, out.html):
        assert "None" not in part and "{{" not in part and "{%" not in part
    assert "\n" not in out.subject and out.subject == out.subject.strip()
    assert out.text.endswith("\n") and not out.text.endswith("\n\n")
    assert not re.search(r"[ \t]\n", out.text) and "\n\n\n" not in out.text
    assert out.html.startswith("<!DOCTYPE html>") and out.html.rstrip().endswith("</html>")
    if ctx["ref"]:
        assert out.subject.startswith(f"[{ctx['ref']}] ")
        assert ctx["ref"] in out.text and ctx["ref"] in out.html
        assert COMPANY in out.subject and COMPANY in out.text
    else:
        assert "[XM-" not in out.subject


@pytest.mark.parametrize("template", TEMPLATES)
def test_hotline_hours_and_address_come_from_the_context(renderer: Renderer,
                                                         template: str) -> None:
    own = {"hotline": "0592-0000000", "office_hours": "周一至周五 9:00-17:00",
           "hall_address": "厦门市思明区测试路 1 号", "mailbox": "cert@example.cn"}
    out = renderer.render(template, context(template, **own))
    for part in (out.subject, out.text, out.html):
        assert "5653395" not in part and "8:30" not in part and "象兴一路" not in part
        assert "xmport@189.cn" not in part
    if template != "digest":
        assert "0592-0000000" in out.text and "0592-0000000" in out.html
    if template in ("acknowledgement", "incomplete", "unrelated"):
        assert own["office_hours"] in out.text


@pytest.mark.parametrize("template", APPLICANT_TEMPLATES)
def test_html_escapes_a_hostile_company_and_text_keeps_it(renderer: Renderer,
                                                           template: str) -> None:
    out = renderer.render(template, context(template, company=HOSTILE))
    assert "<script>" not in out.html and "<b>有限公司" not in out.html
    if template != "unrelated":  # the note to a stranger names no company
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;厦门某某" in out.html
        assert HOSTILE in out.text and HOSTILE in out.subject


def test_html_escapes_what_the_findings_and_the_reason_carry(renderer: Renderer) -> None:
    evil = "<img src=x onerror=alert(1)>.zip"
    found = [{"code": "attachment_rejected", "severity": "reject", "detail": "x",
              "facts": {"filename": evil, "reason": "encrypted"}}]
    out = renderer.render("incomplete", context("incomplete", findings=found))
    assert "<img" not in out.html and "&lt;img src=x onerror=alert(1)&gt;.zip" in out.html
    assert evil in out.text
    out = renderer.render("rejected", context("rejected", reason="<a href='http://x'>点此</a>"))
    assert "<a href" not in out.html and "&lt;a href=" in out.html


def test_the_digest_escapes_what_it_lists(renderer: Renderer) -> None:
    ctx = context("digest")
    ctx["parked"] = [{"id": 3, "subject": "<script>x</script>", "from_addr": "<a@b>",
                      "error": "bad"}]
    out = renderer.render("digest", ctx)
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert "<script>x</script>" in out.text


def _numbered(text: str) -> list[str]:
    return re.findall(r"^\d+\. (.+)$", text, re.M)


def test_incomplete_lists_one_sentence_per_blocking_finding(renderer: Renderer) -> None:
    out = renderer.render("incomplete", context("incomplete"))
    s = renderer.sentences
    blocking = [f for f in FINDINGS if f["severity"] != "warn"]
    assert _numbered(out.text) == [s.sentence(f) for f in blocking]
    assert len(re.findall(r"<li>", out.html.split("另请注意")[0])) == len(blocking)
    for f in blocking:
        assert s.sentence(f) in out.html
    # the warning meant for the applicant, once, after the list; staff-only ones not at all
    cn = s.sentence(FINDINGS[5])
    assert out.text.count(cn) == 1 and out.text.index(cn) > out.text.index("另请注意")
    for part in (out.text, out.html):  # staff-only warnings are not said at all
        assert s.sentence(FINDINGS[0]) not in part and s.sentence(FINDINGS[7]) not in part
        assert "仅供工作人员参考" not in part and "象屿」" not in part
    # it acknowledges receipt too: the only answer to that message
    assert "收到" in out.text and "XM-2026-0007" in out.text and "0592-5653395" in out.text


@pytest.mark.parametrize("template", ["acknowledgement", "incomplete", "expired", "rejected"])
def test_replies_never_ask_to_fix_the_subject(renderer: Renderer, template: str) -> None:
    out = renderer.render(template, context(template))
    for part in (out.text, out.html):
        assert "企业名称+数字证书申办" not in part and "主题未按" not in part
        assert "申请证书" not in part  # the subject_format finding's own facts
        # the only word on the subject: keep the case number in it when replying
        assert part.count("主题") == part.count("邮件主题中的案件编号")


def test_the_acknowledgement_says_what_happens_next(renderer: Renderer) -> None:
    out = renderer.render("acknowledgement", context("acknowledgement"))
    assert "拨打热线 0592-5653395" in out.text and "电话确认" in out.text
    assert BASE["office_hours"] in out.text and BASE["office_hours"] in out.html
    assert "申请表中填写的邮件地址" in out.text and "经办人" in out.text
    revoke = renderer.render("acknowledgement", context("acknowledgement", kind="revoke"))
    assert "注销申请" in revoke.text and "注销结果" in revoke.text


def test_issued_names_the_files_serials_validity_root_chain_and_duties(
        renderer: Renderer) -> None:
    ctx = context("issued")
    out = renderer.render("issued", ctx)
    for part in (out.text, out.html):
        for name in ("sign.cer", "env.cer", "envprivatekey", ctx["notice_filename"]):
            assert name in part
        for cert in ctx["certificates"]:
            assert cert["serial"] in part and cert["not_after"] in part
            assert cert["sm3_fingerprint"] in part
        assert "国家信任源 SM2 证书链" in part
        assert "私钥损毁、丢失或泄露" in part and "立即向受理机构办理证书注销" in part


def test_revoked_names_the_certificates_and_when(renderer: Renderer) -> None:
    ctx = context("revoked")
    out = renderer.render("revoked", ctx)
    assert "2026-12-01 09:40" in out.text and "密钥丢失、泄露或损毁" in out.text
    assert all(c["serial"] in out.text and c["serial"] in out.html for c in ctx["certificates"])


def test_unrelated_says_what_the_mailbox_is_for(renderer: Renderer) -> None:
    out = renderer.render("unrelated", context("unrelated"))
    assert "企业名称+数字证书申办" in out.text and "0592-5653395" in out.text
    assert len(out.text) < 700  # one short note


def test_the_digest_lists_every_section(renderer: Renderer) -> None:
    ctx = context("digest")
    out = renderer.render("digest", ctx)
    assert "待致电 1，待处理 2，滞留邮件 1，故障 1，发送失败 1" in out.subject
    assert "【紧急】[XM-2026-0005]" in out.text
    for needle in ("XM-2026-0003", "13800000000", "【紧急】", "XM-2026-0005", "待电话确认",
                   "Fw: 材料", "quota exceeded", "邮箱拒绝移动已处理的邮件", "550 no such user",
                   "XM-2026-0002", "Undelivered Mail Returned to Sender"):
        assert needle in out.text and needle in out.html
    empty = renderer.render("digest", context("digest", to_call=[], awaiting=[], parked=[],
                                              failures=[], outbox_failed=[], bounces=[]))
    assert empty.text.count("（无）") == 6


def test_the_subject_is_one_line_whatever_the_company(renderer: Renderer) -> None:
    out = renderer.render("acknowledgement",
                          context("acknowledgement", company="甲公司\r\nBcc: x@example.com"))
    assert "\n" not in out.subject and "\r" not in out.subject
    assert out.subject.startswith("[XM-2026-0007] 甲公司 Bcc: x@example.com：")


def test_a_missing_context_key_fails_naming_the_file(renderer: Renderer) -> None:
    ctx = context("issued")
    del ctx["root_chain_path"]
    with pytest.raises(TemplateError, match=r"issued\.txt\.j2.*root_chain_path"):
        renderer.render("issued", ctx)
    ctx = context("acknowledgement")
    del ctx["hotline"]
    with pytest.raises(TemplateError, match=r"acknowledgement\.subject\.j2.*hotline"):
        renderer.render("acknowledgement", ctx)


def test_a_case_reply_without_its_ref_is_refused(renderer: Renderer) -> None:
    with pytest.raises(TemplateError, match="ref"):
        renderer.render("incomplete", context("incomplete", ref=None))
    with pytest.raises(TemplateError, match="unknown template"):
        renderer.render("welcome", context("acknowledgement"))


def test_an_operator_overrides_one_file_only(tmp_path: Path) -> None:
    (tmp_path / "acknowledgement.subject.j2").write_text("来信已收到（{{ company }}）\n",
                                                         encoding="utf-8")
    (tmp_path / "rejected.subject.j2").write_text("未通过 [{{ ref }}]\n", encoding="utf-8")
    own = Renderer(tmp_path)
    own.check()
    ack = own.render("acknowledgement", context("acknowledgement"))
    assert ack.subject == f"[XM-2026-0007] 来信已收到（{COMPANY}）"  # the tag is kept
    assert ack.text == Renderer().render("acknowledgement", context("acknowledgement")).text
    # a template that places the tag itself keeps it where it is, once
    assert own.render("rejected", context("rejected")).subject == "未通过 [XM-2026-0007]"


def test_an_operator_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "expired.txt.j2").write_text("第一行\n{% if days %}\n没有结束\n",
                                             encoding="utf-8")
    own = Renderer(tmp_path)
    with pytest.raises(TemplateError, match=r"expired\.txt\.j2 line \d"):
        own.check()
    with pytest.raises(TemplateError, match=r"expired\.txt\.j2"):
        own.render("expired", context("expired"))


def test_a_missing_template_file_names_it(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = tmp_path / "shipped"
    shutil.copytree(DEFAULT_TEMPLATES_DIR, shipped)
    (shipped / "rejected.html.j2").unlink()
    monkeypatch.setattr(render_module, "DEFAULT_TEMPLATES_DIR", shipped)
    broken = Renderer()
    with pytest.raises(TemplateError, match=r"rejected\.html\.j2 not found"):
        broken.render("rejected", context("rejected"))
    with pytest.raises(TemplateError, match=r"rejected\.html\.j2"):
        broken.check()


def test_a_templates_dir_that_is_no_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="not a folder"):
        Renderer(tmp_path / "nowhere")
