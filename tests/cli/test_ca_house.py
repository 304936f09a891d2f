"""The CA's own house (issue 9, item 7) through the command line.

`ca crl` makes a new CRL only after a revocation or near nextUpdate; the CA key is encrypted
(PBES2, SM4-CBC, PBKDF2-HMAC-SHA256 600,000 iterations, opened by `openssl pkey -passin`) or,
for a test CA only, kept in clear with a warning in `ca show` and `status`; `run` makes the
soft test CA on its first start where [ca] is left at its defaults, and refuses to start when
a configured CA is not there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from asn1crypto import crl, pem

from mailbot.cli import main
from mailbot.config import Config
from mailbot.db import make_engine, session_factory, upgrade
from mailbot.pki import sm2
from mailbot.pki.ca import load_ca
from tests.support.pki_issue import issue_stubbed, openssl, write_config

PASS_ENV = "MAILBOT_CA_KEY_PASSPHRASE"
SECRET = "Ca-Pass-秘密-42"


@pytest.fixture(autouse=True)
def _no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASS_ENV, raising=False)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)


def _crl_number(text: str) -> int:
    return crl.CertificateList.load(pem.unarmor(text.encode())[2]).crl_number_value.native


def _last_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and "Traceback" not in err, err
    return lines[-1]


# --- ca crl ---------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_ca_crl_new_only_after_revocation_or_near_next_update(tmp_path, capsys, frozen_clock):
    cfg_path = write_config(tmp_path)
    base = ["--config", str(cfg_path)]
    assert main([*base, "ca", "init"]) == 0
    capsys.readouterr()
    assert main([*base, "ca", "crl"]) == 0
    first = capsys.readouterr().out
    assert _crl_number(first) == 1
    crl_file = tmp_path / "var" / "ca" / "ca.crl"
    crl_file.unlink()  # the file is written again from the last CRL, same bytes
    frozen_clock.advance(days=1)
    assert main([*base, "ca", "crl"]) == 0
    assert capsys.readouterr().out == first
    assert pem.armor("X509 CRL", crl_file.read_bytes()).decode() == first

    # a revocation (reason unspecified) makes a new one, without a reasonCode extension
    cfg = Config.load(cfg_path)
    engine = make_engine(cfg.database_url)
    upgrade(engine=engine)
    with session_factory(engine)() as s:
        pair = issue_stubbed(s, load_ca(cfg), "XM-2026-0701",
                             sm2.public_key_of(sm2.generate_private_key()), {"CN": "house"})
        s.commit()
    engine.dispose()
    assert main([*base, "ca", "revoke", pair.sign_serial, "--reason", "unspecified",
                 "--by", "王五"]) == 0
    assert main([*base, "ca", "revoke", pair.enc_serial, "--reason", "removeFromCRL",
                 "--by", "王五"]) == 2  # not offered: delta CRLs only
    assert "invalid choice: 'removeFromCRL'" in capsys.readouterr().err
    assert main([*base, "ca", "crl"]) == 0
    second = capsys.readouterr().out
    assert _crl_number(second) == 2
    (tmp_path / "second.crl").write_text(second)
    text = openssl("crl", "-in", "second.crl", "-noout", "-text", cwd=tmp_path).stdout.decode()
    assert pair.sign_serial.upper() in text and pair.enc_serial.upper() not in text
    assert "CRL Reason Code" not in text and "Remove From CRL" not in text
    assert main([*base, "ca", "crl", "--verify", str(tmp_path / "second.crl")]) == 0
    assert "CRL OK (number 2, 1 revoked" in capsys.readouterr().out

    # made on day 1, next update day 8: the same CRL while more than half the period (3.5
    # days) is left, a new one from then on
    frozen_clock.advance(days=3, hours=11)
    assert main([*base, "ca", "crl"]) == 0
    assert capsys.readouterr().out == second
    frozen_clock.advance(hours=1)
    assert main([*base, "ca", "crl"]) == 0
    assert _crl_number(capsys.readouterr().out) == 3


# --- the CA key at rest -----------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_ca_init_with_passphrase_openssl_opens_key(tmp_path, capsys, monkeypatch, caplog):
    caplog.set_level("DEBUG")
    monkeypatch.setenv(PASS_ENV, SECRET)
    base = ["--config", str(write_config(tmp_path, subject="C=CN,O=Org,CN=Production SM2 CA"))]
    assert main([*base, "ca", "init"]) == 0
    out = capsys.readouterr()
    assert "PBES2 sm4-cbc, PBKDF2 hmacWithSHA256 600000 iterations" in out.out
    assert "warning" not in out.err
    key = tmp_path / "var" / "ca" / "ca.key.pem"
    parsed = openssl("asn1parse", "-in", str(key)).stdout.decode()
    assert ":PBES2" in parsed and ":sm4-cbc" in parsed and ":hmacWithSHA256" in parsed
    iterations = [ln for ln in parsed.splitlines() if "prim: INTEGER" in ln]
    assert int(iterations[0].rsplit(":", 1)[1], 16) >= 600_000
    text = openssl("pkey", "-in", str(key), "-passin", f"env:{PASS_ENV}", "-noout",
                   "-text").stdout.decode()
    assert "ASN1 OID: SM2" in text
    pub = openssl("pkey", "-in", str(key), "-passin", f"env:{PASS_ENV}", "-pubout",
                  "-outform", "DER").stdout
    assert main([*base, "ca", "show"]) == 0
    shown = capsys.readouterr()
    assert "sm4-cbc" in shown.out and shown.err == ""
    assert main([*base, "ca", "show", "--pem"]) == 0
    (tmp_path / "ca.pem").write_text(capsys.readouterr().out)
    cert_pub = openssl("x509", "-in", "ca.pem", "-noout", "-pubkey", cwd=tmp_path).stdout
    assert pem.unarmor(cert_pub)[2] == pub  # the key OpenSSL opened is the CA's

    # without the passphrase: one clear line, exit 1, for every command that needs the key
    monkeypatch.delenv(PASS_ENV)
    for argv in (["ca", "show"], ["ca", "crl"]):
        assert main([*base, *argv]) == 1
        line = _last_line(capsys.readouterr().err)
        assert "encrypted and no passphrase" in line and f"set {PASS_ENV}" in line, line
    monkeypatch.setenv(PASS_ENV, "wrong")
    assert main([*base, "ca", "show"]) == 1
    assert "wrong passphrase" in _last_line(capsys.readouterr().err)
    everything = capsys.readouterr()
    assert SECRET not in caplog.text + everything.out + everything.err


def test_ca_init_refuses_clear_key_for_a_real_ca(tmp_path, capsys):
    base = ["--config", str(write_config(tmp_path, subject="C=CN,O=Org,CN=E-Port SM2 CA"))]
    assert main([*base, "ca", "init"]) == 1
    line = _last_line(capsys.readouterr().err)
    assert f"set {PASS_ENV}" in line and "unencrypted" in line
    assert not (tmp_path / "var" / "ca" / "ca.key.pem").exists()
    assert not (tmp_path / "var" / "ca" / "ca.pem").exists()


@pytest.mark.timeout(120)
def test_clear_test_ca_key_warns_in_ca_show_and_status(tmp_path, capsys):
    base = ["--config", str(write_config(tmp_path))]
    assert main([*base, "init"]) == 0
    capsys.readouterr()
    assert main([*base, "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ca"]["key_present"] is False and doc["ca"]["warning"] is None
    assert main([*base, "ca", "init"]) == 0  # the default subject is a test CA
    out = capsys.readouterr()
    assert "NOT encrypted" in out.out and "not encrypted" in out.err
    assert main([*base, "ca", "show"]) == 0
    shown = capsys.readouterr()
    assert "NOT encrypted" in shown.out
    assert shown.err.startswith("mailbot: warning: the CA key") and PASS_ENV in shown.err
    assert main([*base, "ca", "show", "--pem"]) == 0
    shown = capsys.readouterr()
    assert shown.out.startswith("-----BEGIN CERTIFICATE-----") and "not encrypted" in shown.err

    assert main([*base, "status", "--json"]) == 0
    st = capsys.readouterr()
    doc = json.loads(st.out)
    assert doc["ca"]["key_encrypted"] is False and doc["ca"]["key_present"] is True
    assert "not encrypted" in doc["ca"]["warning"] and st.err == ""
    assert {"messages", "cases", "mailboxes", "parked", "oversize"} <= set(doc)
    assert main([*base, "status"]) == 0
    st = capsys.readouterr()
    assert "not encrypted" in st.err and "Messages" in st.out


# --- run on its first start -----------------------------------------------------------------

@pytest.mark.timeout(180)
def test_run_makes_the_test_ca_without_a_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--once"]) == 0
    err = capsys.readouterr().err
    assert "made the soft test CA" in err and "test CA" in err
    key = tmp_path / "var" / "ca" / "ca.key.pem"
    assert key.is_file() and (tmp_path / "var" / "ca" / "ca.pem").is_file()
    kid = load_ca(Config.load()).key_id
    assert main(["run", "--once"]) == 0  # made once, kept
    assert "made the soft test CA" not in capsys.readouterr().err
    assert load_ca(Config.load()).key_id == kid
    assert main(["ca", "show"]) == 0


@pytest.mark.timeout(180)
def test_run_makes_the_test_ca_when_ca_is_left_at_defaults(tmp_path, capsys, monkeypatch):
    # a file naming no [ca] keys; then one naming only the CRL URL, encrypted by passphrase
    assert main(["--config", str(write_config(tmp_path / "a")), "run", "--once"]) == 0
    assert "made the soft test CA" in capsys.readouterr().err
    assert (tmp_path / "a" / "var" / "ca" / "ca.key.pem").is_file()
    monkeypatch.setenv(PASS_ENV, SECRET)
    cfg = write_config(tmp_path / "b", crl_url="http://crl.example.cn/x.crl")
    assert main(["--config", str(cfg), "run", "--once"]) == 0
    assert "made the soft test CA" in capsys.readouterr().err
    assert (tmp_path / "b" / "var" / "ca" / "ca.key.pem").read_bytes().startswith(
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    monkeypatch.delenv(PASS_ENV)  # the next start cannot open it: refused, one line
    assert main(["--config", str(cfg), "run", "--once"]) == 1
    line = _last_line(capsys.readouterr().err)
    assert line.startswith("mailbot: cannot start:") and f"set {PASS_ENV}" in line


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("ca", "expected"), [
    ({"key_path": "/nonexistent/ca.key.pem"}, "no CA key at /nonexistent/ca.key.pem"),
    ({"subject": "C=CN,O=Org,CN=E-Port SM2 CA"}, "no CA key at"),
    ({"signer": "sdf", "sdf_library": "/nonexistent/libsdf.so"},
     "cannot load the SDF library /nonexistent/libsdf.so"),
    ({"signer": "sdf"}, "needs sdf_library"),
])
def test_run_refuses_without_the_configured_ca(ca, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAILBOT_SDF_PASSWORD", "hsm-pw")
    for once in (["--once"], []):  # the daemon too refuses before it starts
        assert main(["--config", str(write_config(tmp_path, **ca)), "run", *once]) == 1
        line = _last_line(capsys.readouterr().err)
        assert line.startswith("mailbot: cannot start:") and expected in line, line
    assert not (tmp_path / "var" / "ca").exists()  # nothing made up


@pytest.mark.timeout(120)
def test_run_refuses_a_default_ca_whose_key_is_gone(tmp_path, capsys):
    base = ["--config", str(write_config(tmp_path))]
    assert main([*base, "ca", "init"]) == 0
    Path(tmp_path / "var" / "ca" / "ca.key.pem").unlink()
    capsys.readouterr()
    assert main([*base, "run", "--once"]) == 1
    line = _last_line(capsys.readouterr().err)
    assert "its key" in line and "is missing" in line
