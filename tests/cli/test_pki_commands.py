"""The PKI through the command line: `mailbot ca crl`, `ca revoke`, `envelope open`.

Moved from tests/pki (test_crl.py, test_envelope.py): mailbot.cli loads app and cases
(`ca revoke` audits through mailbot.app.revocation), and tests/pki tests the PKI alone.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from asn1crypto import crl, pem

from mailbot.cli import main
from mailbot.pki import envelope, sm2
from mailbot.pki.signer.soft import load_private_key, private_key_pem
from tests.support.pki_issue import openssl, write_config

STD_ID = "distid:1234567812345678"


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


def _envelope_files(tmp_path: Path) -> tuple[Path, Path, Path, int]:
    """sign.pem (OpenSSL), envprivatekey (mailbot), env.cer of the enveloped key (OpenSSL)."""
    openssl("genpkey", "-algorithm", "SM2", "-out", "sign.pem", cwd=tmp_path)
    sign_d = load_private_key((tmp_path / "sign.pem").read_bytes())
    enc_d = sm2.generate_private_key()
    (tmp_path / "envprivatekey").write_bytes(
        envelope.make_envelope(sm2.public_key_of(sign_d), enc_d))
    # env.cer: any certificate of the enveloped key will do for the check (self-signed here)
    (tmp_path / "enc-ca.pem").write_bytes(private_key_pem(enc_d))
    openssl("req", "-new", "-x509", "-key", "enc-ca.pem", "-sm3", "-sigopt", STD_ID,
            "-subj", "/CN=enc", "-days", "1", "-outform", "DER", "-out", "env.cer", cwd=tmp_path)
    (tmp_path / "enc-ca.pem").unlink()
    return tmp_path / "sign.pem", tmp_path / "envprivatekey", tmp_path / "env.cer", enc_d


def _open(cfg: Path, *args: str | Path) -> int:
    return main(["--config", str(cfg), "envelope", "open", *map(str, args)])


def _assert_no_key_material(text: str, d: int) -> None:
    assert "PRIVATE KEY" not in text and f"{d:064x}" not in text.lower()
    assert f"{d:x}" not in text.lower() and str(d) not in text


@pytest.mark.timeout(120)
def test_cli_envelope_open(tmp_path, capsys, caplog):
    """--key KEY.pem [--cert env.cer] --out FILE ENVELOPE: the key only ever goes to FILE."""
    caplog.set_level(logging.DEBUG)
    cfg = write_config(tmp_path)
    sign, env, cert, enc_d = _envelope_files(tmp_path)
    target = tmp_path / "enc.pem"
    assert _open(cfg, "--key", sign, "--cert", cert, "--out", target, env) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert load_private_key(target.read_bytes()) == enc_d
    text = openssl("pkey", "-in", str(target), "-noout", "-text", cwd=tmp_path).stdout.decode()
    assert "ASN1 OID: SM2" in text
    cap = capsys.readouterr()
    assert cap.out == ""  # never the terminal
    assert "matches the certificate" in cap.err and str(target) in cap.err
    _assert_no_key_material(cap.err + caplog.text, enc_d)
    # without --cert; SEC1; a PEM-armoured envelope and a PEM env.cer; mode 0600 under umask 0
    (tmp_path / "env.pem").write_bytes(pem.armor("ENVELOPED KEY", env.read_bytes()))
    (tmp_path / "env-cer.pem").write_bytes(pem.armor("CERTIFICATE", cert.read_bytes()))
    old = os.umask(0)
    try:
        assert _open(cfg, "--key", sign, "--format", "sec1", "--out", tmp_path / "enc2.pem",
                     tmp_path / "env.pem") == 0
        assert _open(cfg, "--key", sign, "--cert", tmp_path / "env-cer.pem", "--out",
                     tmp_path / "enc3.pem", env) == 0
    finally:
        os.umask(old)
    for name in ("enc2.pem", "enc3.pem"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
        assert load_private_key((tmp_path / name).read_bytes()) == enc_d
    assert (tmp_path / "enc2.pem").read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")
    cap = capsys.readouterr()
    assert cap.out == ""
    _assert_no_key_material(cap.err + caplog.text, enc_d)


def test_cli_envelope_open_needs_out(tmp_path, capsys):
    cfg = write_config(tmp_path)
    sign, env, _cert, enc_d = _envelope_files(tmp_path)
    assert _open(cfg, "--key", sign, env) == 2  # usage: --out is required
    cap = capsys.readouterr()
    assert cap.out == "" and "--out" in cap.err and len(cap.err.strip().splitlines()) == 1
    _assert_no_key_material(cap.err, enc_d)


def test_cli_envelope_open_never_overwrites(tmp_path, capsys):
    cfg = write_config(tmp_path)
    sign, env, _cert, enc_d = _envelope_files(tmp_path)
    existing = tmp_path / "existing.pem"
    existing.write_bytes(b"keep me")
    assert _open(cfg, "--key", sign, "--out", existing, env) == 1
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1
    assert "exists; not overwriting" in cap.err
    assert existing.read_bytes() == b"keep me"
    # a (dangling) symlink is not followed to create its target
    link = tmp_path / "link.pem"
    link.symlink_to(tmp_path / "elsewhere.pem")
    assert _open(cfg, "--key", sign, "--out", link, env) == 1
    assert not (tmp_path / "elsewhere.pem").exists()
    assert "exists; not overwriting" in capsys.readouterr().err


def test_cli_envelope_open_o_excl_guards_a_race(tmp_path, capsys, monkeypatch):
    """A file appearing between the early check and the write is still not overwritten."""
    from mailbot.cli import ca as cli_ca

    cfg = write_config(tmp_path)
    sign, env, _cert, _enc_d = _envelope_files(tmp_path)
    target = tmp_path / "late.pem"
    real_open = cli_ca.envelope.open_envelope

    def open_then_race(*a, **k):
        d = real_open(*a, **k)
        target.write_bytes(b"appeared meanwhile")
        return d

    monkeypatch.setattr(cli_ca.envelope, "open_envelope", open_then_race)
    assert _open(cfg, "--key", sign, "--out", target, env) == 1
    assert target.read_bytes() == b"appeared meanwhile"
    assert "exists; not overwriting" in capsys.readouterr().err


def test_cli_envelope_open_refuses_a_foreign_certificate(tmp_path, capsys):
    cfg = write_config(tmp_path)
    sign, env, _cert, enc_d = _envelope_files(tmp_path)
    # the applicant's own (signing) certificate instead of env.cer: another key
    openssl("req", "-new", "-x509", "-key", "sign.pem", "-sm3", "-sigopt", STD_ID,
            "-subj", "/CN=sign", "-days", "1", "-out", "sign.cer", cwd=tmp_path)
    target = tmp_path / "enc.pem"
    assert _open(cfg, "--key", sign, "--cert", tmp_path / "sign.cer", "--out", target, env) == 1
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1
    assert "not the key of the given certificate" in cap.err
    assert not target.exists()
    _assert_no_key_material(cap.err, enc_d)
    # not a certificate at all
    assert _open(cfg, "--key", sign, "--cert", env, "--out", target, env) == 1
    assert "not a certificate" in capsys.readouterr().err
    assert not target.exists()


def test_cli_envelope_open_wrong_key(tmp_path, capsys):
    cfg = write_config(tmp_path)
    _sign, env, cert, _enc_d = _envelope_files(tmp_path)
    openssl("genpkey", "-algorithm", "SM2", "-out", "other.pem", cwd=tmp_path)
    target = tmp_path / "enc.pem"
    assert _open(cfg, "--key", tmp_path / "other.pem", "--cert", cert, "--out", target, env) == 1
    cap = capsys.readouterr()
    assert "does not fit" in cap.err and len(cap.err.strip().splitlines()) == 1
    assert not target.exists()
