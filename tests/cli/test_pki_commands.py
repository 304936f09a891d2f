"""The PKI through the command line: `mailbot ca crl`, `ca revoke`, `envelope open`.

Moved from tests/pki (test_crl.py, test_envelope.py): mailbot.cli loads app and cases
(`ca revoke` audits through mailbot.app.revocation), and tests/pki tests the PKI alone.
"""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest
from asn1crypto import crl, pem

from mailbot.cli import main
from mailbot.pki import envelope, sm2
from mailbot.pki.signer.soft import load_private_key
from tests.support.pki_issue import openssl, write_config


@pytest.mark.timeout(120)
def test_cli_crl_revoke_verify(tmp_path, capsys):
    cfg = write_config(tmp_path)
    base = ["--config", str(cfg)]
    assert main([*base, "ca", "init"]) == 0
    capsys.readouterr()
    assert main([*base, "ca", "crl"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("-----BEGIN X509 CRL-----") and out.strip().endswith("-----")
    crl_file = tmp_path / "var" / "ca" / "ca.crl"
    assert crl_file.exists()
    assert main([*base, "ca", "crl", "--verify", str(crl_file)]) == 0
    assert "CRL OK (number 1" in capsys.readouterr().out
    # --der through the real entry point (binary stdout); nothing revoked since and far from
    # nextUpdate: the same CRL again, same number (a new one only when needed)
    first = crl_file.read_bytes()
    res = subprocess.run([sys.executable, "-m", "mailbot.cli", *base, "ca", "crl", "--der"],
                         capture_output=True, timeout=60, check=True)
    assert res.stdout == crl_file.read_bytes() == first
    assert crl.CertificateList.load(res.stdout).crl_number_value.native == 1
    assert main([*base, "ca", "crl", "--force"]) == 0  # a new one on request
    assert crl.CertificateList.load(crl_file.read_bytes()).crl_number_value.native == 2
    capsys.readouterr()
    bad = tmp_path / "bad.crl"
    data = bytearray(crl_file.read_bytes())
    data[-3] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert main([*base, "ca", "crl", "--verify", str(bad)]) == 1
    assert "does not verify" in capsys.readouterr().err
    assert main([*base, "ca", "revoke", "abcd", "--reason", "keyCompromise", "--by", "x"]) == 1
    assert "no certificate with serial abcd" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_cli_envelope_open(tmp_path, capsys):
    cfg = write_config(tmp_path)
    openssl("genpkey", "-algorithm", "SM2", "-out", "sign.pem", cwd=tmp_path)
    sign_d = load_private_key((tmp_path / "sign.pem").read_bytes())
    enc_d = sm2.generate_private_key()
    (tmp_path / "envprivatekey").write_bytes(
        envelope.make_envelope(sm2.public_key_of(sign_d), enc_d))
    assert main(["--config", str(cfg), "envelope", "open", "--key", str(tmp_path / "sign.pem"),
                 str(tmp_path / "envprivatekey")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("-----BEGIN PRIVATE KEY-----")
    (tmp_path / "enc.pem").write_text(out)
    text = openssl("pkey", "-in", "enc.pem", "-noout", "-text", cwd=tmp_path).stdout.decode()
    assert "ASN1 OID: SM2" in text
    assert load_private_key(out.encode()) == enc_d
    # --out: 0600, SEC1 also possible; PEM-armoured envelope accepted
    (tmp_path / "env.pem").write_bytes(pem.armor("ENVELOPED KEY",
                                                 (tmp_path / "envprivatekey").read_bytes()))
    target = tmp_path / "enc2.pem"
    assert main(["--config", str(cfg), "envelope", "open", "--key", str(tmp_path / "sign.pem"),
                 "--format", "sec1", "--out", str(target), str(tmp_path / "env.pem")]) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert load_private_key(target.read_bytes()) == enc_d
    assert capsys.readouterr().out == ""  # nothing on stdout when written to a file
    # wrong key: exit 1 and a clear message
    openssl("genpkey", "-algorithm", "SM2", "-out", "other.pem", cwd=tmp_path)
    assert main(["--config", str(cfg), "envelope", "open", "--key",
                 str(tmp_path / "other.pem"), str(tmp_path / "envprivatekey")]) == 1
    err = capsys.readouterr().err
    assert "does not fit" in err

