"""The CA's key at rest: PKCS#8 PBES2 with SM4-CBC and PBKDF2-HMAC-SHA256 (600,000 iterations),
readable by OpenSSL; in clear only for a test CA; `key_status` says which.

The PKI alone (no cases, no CLI); the command line is tested in tests/cli/test_ca_house.py.
"""

from __future__ import annotations

import logging

import pytest
from asn1crypto import keys, pem

from mailbot.config import Config
from mailbot.pki import sm2
from mailbot.pki.ca import CaError, init_ca, is_test_ca, key_status, load_ca
from mailbot.pki.signer.soft import (
    KEY_CIPHER_OID,
    KEY_PBKDF2_ITERATIONS,
    KeyFileError,
    SoftSigner,
    is_encrypted_key,
    key_encryption,
    load_private_key,
    private_key_pem,
    write_private_key,
)
from tests.support.pki_issue import openssl, write_config

PASS = "c0rrect-h0rse-电池"  # non-ASCII too: the passphrase is its UTF-8 bytes, as OpenSSL reads


def test_encrypted_key_structure_and_openssl(tmp_path, monkeypatch):
    d = sm2.generate_private_key()
    write_private_key(tmp_path / "k.pem", d, passphrase=PASS.encode())
    data = (tmp_path / "k.pem").read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert is_encrypted_key(data)

    # the structure, read independently with asn1crypto
    info = keys.EncryptedPrivateKeyInfo.load(pem.unarmor(data)[2])
    alg = info["encryption_algorithm"]
    assert alg["algorithm"].native == "pbes2"
    kdf = alg["parameters"]["key_derivation_func"]
    assert kdf["algorithm"].native == "pbkdf2"
    assert kdf["parameters"]["iteration_count"].native >= 600_000 == KEY_PBKDF2_ITERATIONS
    assert kdf["parameters"]["prf"]["algorithm"].native == "sha256"
    assert len(kdf["parameters"]["salt"].native) == 16
    scheme = alg["parameters"]["encryption_scheme"]
    assert scheme["algorithm"].dotted == KEY_CIPHER_OID == "1.2.156.10197.1.104.2"
    assert len(scheme["parameters"].parsed.native) == 16  # the IV, one SM4 block
    assert key_encryption(data) == ("PBES2 sm4-cbc, PBKDF2 hmacWithSHA256 600000 iterations")

    # OpenSSL 3 names it and opens it with the passphrase from the environment
    parsed = openssl("asn1parse", "-in", "k.pem", cwd=tmp_path).stdout.decode()
    assert ":sm4-cbc" in parsed and ":PBES2" in parsed and ":PBKDF2" in parsed
    assert ":hmacWithSHA256" in parsed and ":0927C0" in parsed  # 600000
    monkeypatch.setenv("TEST_KEY_PASS", PASS)
    res = openssl("pkey", "-in", "k.pem", "-passin", "env:TEST_KEY_PASS", "-noout", "-text",
                  cwd=tmp_path).stdout.decode()
    assert "ASN1 OID: SM2" in res
    assert f"{d:064x}" in res.replace(":", "").replace(" ", "").replace("\n", "")
    bad = openssl("pkey", "-in", "k.pem", "-passin", "pass:wrong", "-noout", cwd=tmp_path,
                  check=False)
    assert bad.returncode != 0

    # and mailbot reads back what it wrote, and an OpenSSL-written one just the same
    assert load_private_key(data, PASS.encode()) == d
    openssl("pkcs8", "-topk8", "-in", "k.pem", "-passin", "env:TEST_KEY_PASS", "-v2",
            "sm4-cbc", "-v2prf", "hmacWithSHA256", "-iter", "600000", "-passout",
            "pass:other", "-out", "o.pem", cwd=tmp_path)
    assert load_private_key((tmp_path / "o.pem").read_bytes(), b"other") == d


def test_encrypted_key_needs_its_passphrase(tmp_path, monkeypatch):
    d = sm2.generate_private_key()
    write_private_key(tmp_path / "k.pem", d, passphrase=b"pw-1")
    monkeypatch.delenv("TEST_KEY_PASS", raising=False)
    with pytest.raises(KeyFileError, match="encrypted and no passphrase.*set TEST_KEY_PASS"):
        SoftSigner.from_file(tmp_path / "k.pem", passphrase_env="TEST_KEY_PASS")
    monkeypatch.setenv("TEST_KEY_PASS", "pw-2")
    with pytest.raises(KeyFileError, match="wrong passphrase") as exc:
        SoftSigner.from_file(tmp_path / "k.pem", passphrase_env="TEST_KEY_PASS")
    assert "pw-2" not in str(exc.value) and "pw-1" not in str(exc.value)
    monkeypatch.setenv("TEST_KEY_PASS", "pw-1")
    assert SoftSigner.from_file(tmp_path / "k.pem", passphrase_env="TEST_KEY_PASS"
                                ).public_key() == sm2.public_key_of(d)
    # each write draws its own salt and IV
    assert private_key_pem(d, passphrase=b"x") != private_key_pem(d, passphrase=b"x")


def test_is_test_ca():
    assert is_test_ca(Config().ca.subject)  # the default subject says so
    assert is_test_ca("C=CN,O=X,CN=Some Test  CA 2")
    assert not is_test_ca("C=CN,O=中国电子口岸数据中心,CN=China E-Port SM2 CA")
    assert not is_test_ca("CN=Contest CAfe")


def test_init_ca_with_passphrase_writes_encrypted_key(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    cfg = Config.load(write_config(tmp_path, subject="C=CN,O=Org,CN=Production SM2 CA",
                                   key_passphrase_env="TEST_CA_PASS"))
    monkeypatch.setenv("TEST_CA_PASS", PASS)
    state = init_ca(cfg)
    data = cfg.var_path(cfg.ca.key_path).read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    ks = key_status(cfg)
    assert ks.encrypted is True and ks.warning is None and "sm4-cbc" in (ks.protection or "")
    assert not list(cfg.var_path("ca").glob("*.new"))
    assert load_ca(cfg).key_id == state.key_id
    monkeypatch.delenv("TEST_CA_PASS")
    with pytest.raises(KeyFileError, match="set TEST_CA_PASS"):
        load_ca(cfg)
    assert PASS not in caplog.text


def test_init_ca_without_passphrase(tmp_path, monkeypatch):
    monkeypatch.delenv("MAILBOT_CA_KEY_PASSPHRASE", raising=False)
    # not a test CA: refused before anything is written
    cfg = Config.load(write_config(tmp_path / "prod", subject="C=CN,O=Org,CN=Production CA"))
    with pytest.raises(CaError, match="unencrypted: set MAILBOT_CA_KEY_PASSPHRASE"):
        init_ca(cfg)
    assert not cfg.var_path(cfg.ca.key_path).exists()
    assert not cfg.var_path(cfg.ca.cert_path).exists()
    # the default test CA: in clear, and key_status warns
    cfg = Config.load(write_config(tmp_path / "test"))
    init_ca(cfg)
    data = cfg.var_path(cfg.ca.key_path).read_bytes()
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----") and key_encryption(data) is None
    ks = key_status(cfg)
    assert ks.present and ks.encrypted is False
    assert ks.warning and "not encrypted" in ks.warning and "MAILBOT_CA_KEY_PASSPHRASE" in ks.warning
    assert ks.as_dict()["key_encrypted"] is False
    # no key yet: nothing to judge, nothing to warn about
    empty = key_status(Config.load(write_config(tmp_path / "none")))
    assert not empty.present and empty.encrypted is None and empty.warning is None
    assert key_status(Config.load(write_config(tmp_path / "hsm", signer="sdf"))).warning is None


def test_reencrypt_in_place(tmp_path, monkeypatch):
    """The warning's advice: `init --force --key KEY --chain CERT` with the passphrase set."""
    monkeypatch.delenv("MAILBOT_CA_KEY_PASSPHRASE", raising=False)
    cfg = Config.load(write_config(tmp_path))
    before = init_ca(cfg)
    key, cert = cfg.var_path(cfg.ca.key_path), cfg.var_path(cfg.ca.cert_path)
    monkeypatch.setenv("MAILBOT_CA_KEY_PASSPHRASE", "pw")
    after = init_ca(cfg, import_key=key, import_chain=cert, force=True)
    assert after.key_id == before.key_id and after.cert_der == before.cert_der
    assert key_status(cfg).encrypted is True
