"""`mailbot demo` (issue 11 item 5): run in-process once (module fixture: the default temporary
folder, from an empty working folder, with an operator's MAILBOT_CONFIG and CA passphrase set
that it must not use) and once as `python3 -m mailbot.cli demo --dir DIR`; the printed
summary, the cases, the mails and files, and the PKI results checked with OpenSSL and the CA.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from asn1crypto import x509

from mailbot.app.demo import DemoResult, run_demo, summary_lines
from mailbot.app.demo_applicants import COMPLETE, MISSING, RSA
from mailbot.cli.main import main
from mailbot.config import Config
from mailbot.outbox.context import NOTICE_FILENAME
from mailbot.pki.ca import ca_certificate
from mailbot.pki.crl import verify_crl
from tests.support.pki_issue import assert_envelope_opens_with_openssl, openssl

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
STD_ID = "distid:1234567812345678"
CASE_LINE = re.compile(r"^  (XM-\d{4}-\d{4})  (new|revoke)\s+\S+  (\w+) ", re.M)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, str, Path, Path]:
    """(result, everything printed, the working folder, the temporary-folder root)."""
    base = tmp_path_factory.mktemp("demo")
    cwd, temp_root = base / "cwd", base / "tmp"
    cwd.mkdir()
    temp_root.mkdir()
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setattr(tempfile, "tempdir", str(temp_root))  # where mkdtemp makes the default
        mp.setenv("MAILBOT_CONFIG", str(base / "the-operators-config.toml"))  # never read
        mp.setenv("MAILBOT_CA_KEY_PASSPHRASE", "the operator's passphrase")  # never used
        result = run_demo(None, say=lines.append)
    return result, "\n".join(lines + summary_lines(result)), cwd, temp_root


def cli(*args: str) -> tuple[int, str]:
    """`mailbot ARGS` in-process: (exit code, stdout); some commands write to its buffer."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    out.flush()
    return code, raw.getvalue().decode("utf-8")


# -- where it ran ---------------------------------------------------------------------------------
def test_the_default_is_a_new_temporary_folder_and_the_cwd_is_untouched(demo) -> None:
    result, printed, cwd, temp_root = demo
    assert result.folder.parent == temp_root.resolve()
    assert result.folder.name.startswith("mailbot-demo-")
    assert f"demo folder / 演示目录: {result.folder}" in printed
    assert list(cwd.iterdir()) == []  # no ./var, nothing else
    assert sorted(p.name for p in result.folder.iterdir()) == [
        "applicants", "issued", "mailbot.toml", "var"]
    # its own CA key, in clear: the operator's passphrase variable was not used
    key = (result.folder / "var" / "ca" / "ca.key.pem").read_text()
    assert "BEGIN PRIVATE KEY" in key and "ENCRYPTED" not in key


def test_the_config_file_it_writes_names_the_demo_workspace(demo) -> None:
    result, printed, _cwd, _tmp = demo
    cfg = Config.load(result.config_path)
    assert cfg.var_dir == result.folder / "var"
    assert cfg.database_url == f"sqlite:///{result.folder / 'var' / 'mailbot.sqlite3'}"
    code, out = cli("--config", str(result.config_path), "cases", "list", "--json")
    assert code == 0
    listed = {(c["ref"], c["kind"], c["state"], c["company"]) for c in json.loads(out)}
    assert listed == {(c.ref, c.kind, c.state, c.company) for c in result.cases}
    assert f"mailbot --config {result.config_path} cases list" in printed


# -- the cases and the mail -----------------------------------------------------------------------
def test_four_cases_end_in_the_states_the_desk_gives_them(demo) -> None:
    result, printed, _cwd, _tmp = demo
    complete, missing, rsa = (result.case(w.slug) for w in (COMPLETE, MISSING, RSA))
    revoke = result.case(COMPLETE.slug, "revoke")
    assert len(result.cases) == 4
    assert complete.path == ["received", "awaiting_confirmation", "approved", "issued",
                             "delivered"]
    assert (missing.state, rsa.state) == ("incomplete", "incomplete")
    assert revoke.path == ["received", "awaiting_confirmation", "approved", "revoked",
                           "delivered"]
    assert complete.company == revoke.company == COMPLETE.company
    # the printed table says the same
    assert sorted(CASE_LINE.findall(printed)) == sorted(
        (c.ref, c.kind, c.state) for c in result.cases)


def test_each_mail_went_where_it_should_and_says_what_to_fix(demo) -> None:
    result, printed, _cwd, _tmp = demo
    by_case = {c.ref: c for c in result.cases}
    got = [(by_case[m.ref].applicant, by_case[m.ref].kind, m.template, m.to, m.state)
           for m in result.mails]
    sender = {w.slug: w.sender.split("<")[1].rstrip(">") for w in (COMPLETE, MISSING, RSA)}
    assert sorted(got) == sorted([
        (COMPLETE.slug, "new", "acknowledgement", [sender[COMPLETE.slug]], "sent"),
        (MISSING.slug, "new", "incomplete", [sender[MISSING.slug]], "sent"),
        (RSA.slug, "new", "incomplete", [sender[RSA.slug]], "sent"),
        (COMPLETE.slug, "new", "issued", [COMPLETE.form_email], "sent"),
        (COMPLETE.slug, "revoke", "acknowledgement", [sender[COMPLETE.slug]], "sent"),
        (COMPLETE.slug, "revoke", "revoked", [COMPLETE.form_email], "sent")])
    for m in result.mails:
        assert m.path is not None and m.path.parent == result.outbox_dir and m.path.is_file()
        assert m.path.name in printed
        mail = BytesParser(policy=policy.default).parsebytes(m.path.read_bytes())
        assert f"[{m.ref}]" in str(mail["Subject"]) and mail["To"] == m.to[0]
    asks = {by_case[m.ref].applicant: m.asks for m in result.mails if m.template == "incomplete"}
    assert asks[MISSING.slug] == ["缺少经办人身份证明复印件，请作为附件补发。"]
    assert len(asks[RSA.slug]) == 1 and "RSA-2048" in asks[RSA.slug][0]
    for text in (*asks[MISSING.slug], *asks[RSA.slug]):
        assert f"asks for / 要求补正: {text}" in printed


def test_the_forms_are_read_by_intake_as_written(demo) -> None:
    result, _printed, _cwd, _tmp = demo
    code, out = cli("inspect", str(result.folder / "applicants" / COMPLETE.slug /
                                   "application.eml"), "--json")
    assert code == 0
    facts = json.loads(out)
    assert facts["form"] == {**COMPLETE.form_values(), "application_type": "new"}
    assert facts["csr"]["valid"] and facts["missing"] == []
    code, out = cli("inspect", str(result.folder / "applicants" / f"{COMPLETE.slug}-revoke" /
                                   "revocation.eml"), "--json")
    form = json.loads(out)["form"]
    assert form["application_type"] == "revoke"
    assert form["revoke_serial"] == result.issued_serials["sign"]


# -- the PKI --------------------------------------------------------------------------------------
def test_the_issued_files_are_the_mails_and_verify_against_the_demo_ca(demo, tmp_path) -> None:
    result, printed, _cwd, _tmp = demo
    assert result.issued_dir == result.folder / "issued"
    assert sorted(result.issued_files) == sorted(["sign.cer", "env.cer", "envprivatekey",
                                                  NOTICE_FILENAME])
    issued = next(m for m in result.mails if m.template == "issued")
    assert issued.path is not None
    mail = BytesParser(policy=policy.default).parsebytes(issued.path.read_bytes())
    for part in mail.iter_attachments():
        assert result.issued_files[part.get_filename()].read_bytes() == \
            part.get_payload(decode=True)
    sign, env = (result.issued_files[n] for n in ("sign.cer", "env.cer"))
    res = openssl("verify", "-vfyopt", STD_ID, "-CAfile", str(result.ca_cert_path),
                  str(sign), str(env))
    assert res.stdout.decode().split() == [f"{sign}:", "OK", f"{env}:", "OK"]
    for role, path in (("sign", sign), ("enc", env)):
        serial = f"{x509.Certificate.load(path.read_bytes()).serial_number:X}"
        assert result.issued_serials[role] == serial
        assert serial in printed
    # sign.cer carries the applicant's key; the envelope opens with it, by OpenSSL alone
    key = result.folder / "applicants" / COMPLETE.slug / "sign.key.pem"
    (tmp_path / "sign.pem").write_bytes(openssl("x509", "-inform", "DER", "-in", str(sign)).stdout)
    assert openssl("x509", "-in", str(tmp_path / "sign.pem"), "-noout", "-pubkey").stdout == \
        openssl("pkey", "-in", str(key), "-pubout").stdout

    class Pair:
        envelope = result.issued_files["envprivatekey"].read_bytes()
        enc_cert = env.read_bytes()

    assert_envelope_opens_with_openssl(Pair(), key, tmp_path)


def test_the_crl_lists_both_serials_of_the_revoked_pair(demo) -> None:
    result, printed, _cwd, _tmp = demo
    assert result.crl_path is not None and result.crl_path.is_file()
    cfg = Config.load(result.config_path)
    check = verify_crl(result.crl_path.read_bytes(), ca_certificate(cfg))
    assert check.ok, check.problems
    pair = {result.issued_serials["sign"].lower(), result.issued_serials["enc"].lower()}
    assert {serial for serial, _at, _reason in check.revoked} == pair
    assert {reason for _s, _at, reason in check.revoked} == {"cessation_of_operation"}
    assert sorted(s for _k, s, _r in result.revoked) == sorted(pair)
    # OpenSSL reads the same two serials (it cannot check an SM2 CRL's signature itself)
    text = openssl("crl", "-in", str(result.crl_path), "-noout", "-text").stdout.decode()
    assert {s.lower() for s in re.findall(r"Serial Number: ([0-9A-F]+)", text)} == pair
    assert f"{result.crl_path} (2 serials, signature OK / 签名有效)" in printed


# -- the command ----------------------------------------------------------------------------------
def test_the_command_in_a_named_folder(tmp_path) -> None:
    folder = tmp_path / "named" / "demo"
    # The operator's configuration (another var_dir): the demo must not use it.
    operator = tmp_path / "operator.toml"
    operator.write_text(f'[paths]\nvar_dir = "{tmp_path / "operator-var"}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env["MAILBOT_CONFIG"] = str(operator)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    res = subprocess.run([sys.executable, "-m", "mailbot.cli", "demo", "--dir", str(folder)],
                         cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"demo folder / 演示目录: {folder}" in out
    states = dict((ref, state) for ref, _kind, state in CASE_LINE.findall(out))
    assert sorted(states.values()) == ["delivered", "delivered", "incomplete", "incomplete"]
    assert "asks for / 要求补正: 缺少经办人身份证明复印件" in out and "RSA-2048" in out
    for name in ("sign.cer", "env.cer", "envprivatekey", NOTICE_FILENAME):
        assert (folder / "issued" / name).is_file()
    assert "(2 serials, signature OK / 签名有效)" in out
    seconds = float(re.search(r"done in ([\d.]+) s / 用时", out).group(1))  # type: ignore[union-attr]
    assert seconds < 60
    assert list(cwd.iterdir()) == [] and not (tmp_path / "operator-var").exists()
    assert res.stderr == ""  # the daemon's log stays out of the demo unless --verbose


def test_a_folder_that_is_not_new_is_refused_in_one_line(tmp_path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, out = cli("demo", "--dir", str(taken))
    assert code == 1 and out == ""
    assert err.getvalue() == (f"mailbot: demo: {taken} exists and is not empty; name a new or "
                              "empty folder / 演示目录已存在且不为空\n")
    assert sorted(p.name for p in taken.iterdir()) == ["keep.txt"]
