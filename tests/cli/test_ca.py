"""`mailbot ca init|show|revoke`: a soft CA OpenSSL accepts, an imported CA, revocation by file."""

from __future__ import annotations

import stat

import pytest
from asn1crypto import pem

from mailbot.cases.models import AuditEntry, Case
from mailbot.cli import main
from mailbot.config import Config
from mailbot.db import make_engine, session_factory
from mailbot.pki import sm2
from mailbot.pki.ca import load_ca
from mailbot.pki.models import IssuedCertificate
from tests.support.cases import approved_case, issue_approved
from tests.support.pki_issue import openssl, write_config

pytest_plugins = ["tests.support.pki_issue_fixtures"]


@pytest.mark.timeout(120)
def test_ca_init_show_and_openssl_accepts_root(tmp_path, capsys):
    cfg = write_config(tmp_path)
    base = ["--config", str(cfg)]
    assert main([*base, "ca", "init"]) == 0
    assert "CA ready" in capsys.readouterr().out
    key = tmp_path / "var" / "ca" / "ca.key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert main([*base, "ca", "init"]) == 1  # never silently replaced
    assert "already exists" in capsys.readouterr().err

    assert main([*base, "ca", "show", "--pem"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("-----BEGIN CERTIFICATE-----")
    assert out.rstrip().endswith("-----END CERTIFICATE-----") and out.count("BEGIN") == 1
    (tmp_path / "chain.pem").write_text(out)
    res = openssl("verify", "-vfyopt", "distid:1234567812345678", "-CAfile", "chain.pem",
                  "chain.pem", cwd=tmp_path)
    assert res.stdout.decode().strip() == "chain.pem: OK"
    text = openssl("x509", "-in", "chain.pem", "-noout", "-text", cwd=tmp_path).stdout.decode()
    assert "X509v3 Basic Constraints: critical\n                CA:TRUE" in text
    assert "X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign" in text
    assert "Signature Algorithm: SM2-with-SM3" in text
    assert "CN = mailbot SM2 test CA" in text

    assert main([*base, "ca", "show"]) == 0
    shown = capsys.readouterr().out
    assert "subject:    C=CN, O=中国电子口岸数据中心, CN=mailbot SM2 test CA" in shown
    assert "signer:     soft" in shown
    assert main([*base, "ca"]) == 2  # no action: help, usage error


@pytest.mark.timeout(120)
def test_ca_init_imports_openssl_ca(tmp_path, capsys, monkeypatch):
    """A CA key plus its chain made elsewhere (here: OpenSSL, reference §7 commands)."""
    openssl("genpkey", "-algorithm", "SM2", "-aes256", "-pass", "pass:capw", "-out", "ca.key",
            cwd=tmp_path)
    openssl("req", "-new", "-x509", "-key", "ca.key", "-passin", "pass:capw", "-sm3",
            "-sigopt", "distid:1234567812345678", "-subj", "/C=CN/O=Test/CN=Imported SM2 CA",
            "-days", "3650", "-out", "ca.crt",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=tmp_path)
    monkeypatch.setenv("TEST_CA_PW", "capw")
    cfg_path = write_config(tmp_path / "site", key_passphrase_env="TEST_CA_PW")
    base = ["--config", str(cfg_path)]
    assert main([*base, "ca", "init", "--key", str(tmp_path / "ca.key"),
                 "--chain", str(tmp_path / "ca.crt")]) == 0
    capsys.readouterr()
    cfg = Config.load(cfg_path)
    state = load_ca(cfg)
    assert "Imported SM2 CA" in state.cert.subject.native["common_name"]
    key_file = cfg.var_path(cfg.ca.key_path)
    assert b"ENCRYPTED PRIVATE KEY" in key_file.read_bytes()  # kept encrypted at rest

    # a pair issued under the imported CA verifies against the OpenSSL-made certificate
    engine = make_engine(cfg.database_url)
    from mailbot.db import upgrade

    upgrade(engine=engine)
    with session_factory(engine)() as s:
        approved_case(s, "XM-2026-0401")
        pair = issue_approved(s, state, "XM-2026-0401",
                              sm2.public_key_of(sm2.generate_private_key()), {"CN": "imp"},
                              crl_url=cfg.ca.crl_url)
        s.commit()
    (tmp_path / "c.pem").write_bytes(pem.armor("CERTIFICATE", pair.sign_cert))
    res = openssl("verify", "-vfyopt", "distid:1234567812345678", "-CAfile", "ca.crt", "c.pem",
                  cwd=tmp_path)
    assert res.stdout.decode().strip() == "c.pem: OK"

    # revoke by the certificate file, then the CRL lists it
    assert main([*base, "ca", "revoke", "--cert", str(tmp_path / "c.pem"), "--reason",
                 "keyCompromise", "--by", "王五"]) == 0
    assert "revoked sign certificate" in capsys.readouterr().out
    with session_factory(engine)() as s:
        row = s.query(IssuedCertificate).filter_by(serial=pair.sign_serial).one()
        assert row.revoked_by == "王五" and row.revocation_reason == "keyCompromise"
        # the case side audits it (mailbot.app.revocation), on the certificate's case
        entry = s.query(AuditEntry).filter_by(action="revoke_certificate").one()
        assert entry.actor == "王五" and pair.sign_serial in (entry.reason or "")
        assert entry.case_id == s.query(Case).filter_by(ref="XM-2026-0401").one().id
    assert main([*base, "ca", "crl"]) == 0
    (tmp_path / "ca.crl").write_text(capsys.readouterr().out)
    text = openssl("crl", "-in", "ca.crl", "-noout", "-text", cwd=tmp_path).stdout.decode()
    assert pair.sign_serial.upper() in text
    assert main([*base, "ca", "revoke", pair.sign_serial, "--cert", "x", "--reason",
                 "keyCompromise", "--by", "x"]) == 2
    engine.dispose()


def test_ca_init_refuses_foreign_chain(tmp_path, capsys):
    openssl("genpkey", "-algorithm", "SM2", "-out", "other.key", cwd=tmp_path)
    openssl("req", "-new", "-x509", "-key", "other.key", "-sm3", "-sigopt",
            "distid:1234567812345678", "-subj", "/CN=other", "-out", "other.crt", cwd=tmp_path)
    openssl("genpkey", "-algorithm", "SM2", "-out", "mine.key", cwd=tmp_path)
    cfg = write_config(tmp_path / "site")
    assert main(["--config", str(cfg), "ca", "init", "--key", str(tmp_path / "mine.key"),
                 "--chain", str(tmp_path / "other.crt")]) == 1
    assert "not for the CA key" in capsys.readouterr().err
