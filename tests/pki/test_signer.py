"""Signers: soft key files (formats, passphrase, permissions) and SDF through a real C library.

The PKI alone: certificates are issued under stub approvals (tests/support/pki_issue.py).
"""

from __future__ import annotations

import ctypes
import os

import pytest
from asn1crypto import pem, x509

from mailbot.config import Config
from mailbot.pki import sm2
from mailbot.pki.ca import CaState, self_signed_root
from mailbot.pki.signer import ApprovalRequired, SignerError, open_signer
from mailbot.pki.signer.sdf import SDR_BASE, ECCSignature, SdfError, SdfSigner
from mailbot.pki.signer.soft import KeyFileError, SoftSigner, load_private_key, write_private_key
from tests.support.pki_issue import (
    StubCheck,
    gmssl_public_key,
    independent_verify,
    issue_stubbed,
    openssl,
    write_config,
)

pytest_plugins = ["tests.support.pki_issue_fixtures"]


@pytest.fixture(scope="module")
def openssl_keys(tmp_path_factory):
    """One SM2 key in the forms OpenSSL writes: PKCS#8, SEC1, encrypted PKCS#8 / SEC1."""
    d = tmp_path_factory.mktemp("keys")
    openssl("genpkey", "-algorithm", "SM2", "-out", "p8.pem", cwd=d)
    openssl("pkey", "-in", "p8.pem", "-aes256", "-passout", "pass:s3cret", "-out", "p8e.pem",
            cwd=d)
    openssl("ec", "-in", "p8.pem", "-out", "sec1.pem", cwd=d)
    openssl("ec", "-in", "p8.pem", "-aes256", "-passout", "pass:s3cret", "-out", "sec1e.pem",
            cwd=d)
    for f in d.iterdir():
        f.chmod(0o600)
    return d


def test_soft_key_formats(openssl_keys, monkeypatch):
    d = load_private_key((openssl_keys / "p8.pem").read_bytes())
    for name in ("sec1.pem", "p8e.pem", "sec1e.pem"):
        assert load_private_key((openssl_keys / name).read_bytes(), b"s3cret") == d
    monkeypatch.setenv("TEST_CA_PASS", "s3cret")
    signer = SoftSigner.from_file(openssl_keys / "p8e.pem", passphrase_env="TEST_CA_PASS")
    assert signer.public_key() == sm2.public_key_of(d)
    assert "s3cret" not in repr(signer) and f"{d:x}" not in repr(signer)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key((openssl_keys / "p8e.pem").read_bytes(), b"nope")
    with pytest.raises(KeyFileError, match="encrypted and no passphrase"):
        load_private_key((openssl_keys / "p8e.pem").read_bytes())


def test_soft_key_written_here_read_by_openssl(tmp_path):
    d = sm2.generate_private_key()
    write_private_key(tmp_path / "k.pem", d)
    write_private_key(tmp_path / "ke.pem", d, passphrase=b"pw")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    plain = openssl("pkey", "-in", "k.pem", "-pubout", cwd=tmp_path).stdout
    enc = openssl("pkey", "-in", "ke.pem", "-passin", "pass:pw", "-pubout", cwd=tmp_path).stdout
    assert plain == enc
    assert SoftSigner.from_file(tmp_path / "ke.pem", passphrase=b"pw").public_key() == \
        sm2.public_key_of(d)


def test_soft_key_permissions_refused(openssl_keys, tmp_path):
    p = tmp_path / "loose.pem"
    p.write_bytes((openssl_keys / "p8.pem").read_bytes())
    p.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        SoftSigner.from_file(p)
    p.chmod(0o640)
    with pytest.raises(KeyFileError, match="0640"):
        SoftSigner.from_file(p)
    with pytest.raises(KeyFileError, match="ca init"):
        SoftSigner.from_file(tmp_path / "missing.pem")


def test_not_an_sm2_key(tmp_path):
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
            "p256.pem", cwd=tmp_path)
    with pytest.raises(KeyFileError, match="not an SM2 key"):
        load_private_key((tmp_path / "p256.pem").read_bytes())


# --- SDF -------------------------------------------------------------------------------------

@pytest.fixture
def sdf_env(softsdf_lib, tmp_path, monkeypatch):
    """A key file behind the software SDF library at index 3, password 'hsm-pw'."""
    d = sm2.generate_private_key()
    write_private_key(tmp_path / "hsm3.pem", d)
    monkeypatch.setenv("SOFTSDF_KEYS", f"3|{tmp_path / 'hsm3.pem'}|hsm-pw")
    monkeypatch.delenv("SOFTSDF_SM2_1", raising=False)
    return softsdf_lib, d


def test_sdf_signer_signs(sdf_env):
    lib, d = sdf_env
    signer = SdfSigner(str(lib), 3, b"hsm-pw")
    try:
        assert signer.public_key() == sm2.public_key_of(d)
        e = sm2.message_digest(signer.public_key(), b"tbs")
        r, s = signer._sign_digest(e)
        assert sm2.verify_digest(signer.public_key(), e, r, s)
        assert independent_verify(signer.public_key(), b"tbs", sm2.encode_signature(r, s))
        assert signer.device_verify(e, r, s)
        assert not signer.device_verify(e, r, (s + 1) % sm2.N)
    finally:
        signer.close()


def test_sdf_errors_are_readable(sdf_env, monkeypatch):
    lib, _ = sdf_env
    bad = SdfSigner(str(lib), 3, b"wrong")
    with pytest.raises(SdfError, match=r"wrong password \(SDR_PRKRERR 0x01000018\)"):
        bad._sign(b"x")
    bad.close()
    with pytest.raises(SdfError, match="no key at this key index"):
        SdfSigner(str(lib), 9, b"hsm-pw")
    with pytest.raises(SignerError, match="cannot load the SDF library"):
        SdfSigner(str(lib) + ".missing", 3, b"hsm-pw")
    # signing without the access right: PARDENY, through the same binding
    signer = SdfSigner(str(lib), 3, b"hsm-pw")
    try:
        sig = ECCSignature()
        with pytest.raises(SdfError, match="no access right") as info:
            signer._sdf.call("SDF_InternalSign_ECC", signer._ses, 3, bytes(32), 32,
                             ctypes.byref(sig))
        assert info.value.code == SDR_BASE + 0x07
        # SGD_SM2_1 differs between headers: a mismatch is named
        signer.sm2_alg_id = 0x00020200
        with pytest.raises(SdfError, match="sdf_sm2_alg_id"):
            signer.device_verify(bytes(32), 1, 1)
        monkeypatch.setenv("SOFTSDF_SM2_1", "0x00020200")
        assert signer.device_verify(*_signed(signer)) is True
    finally:
        signer.close()


def _signed(signer: SdfSigner) -> tuple[bytes, int, int]:
    e = sm2.message_digest(signer.public_key(), b"m")
    return (e, *signer._sign_digest(e))


@pytest.mark.timeout(120)
def test_certificate_signed_via_sdf_verifies_with_openssl(sdf_env, session, tmp_path,
                                                          monkeypatch):
    lib, _ = sdf_env
    monkeypatch.setenv("TEST_SDF_PW", "hsm-pw")
    cfg = Config.load(write_config(tmp_path / "cfg", signer="sdf", sdf_library=str(lib),
                                   sdf_key_index=3, sdf_password_env="TEST_SDF_PW"))
    signer = open_signer(cfg)
    assert isinstance(signer, SdfSigner)
    try:
        root = self_signed_root(signer, {"C": "CN", "CN": "HSM CA"})
        state = CaState(signer=signer, cert=root, chain=[root])
        pair = issue_stubbed(session, state, "XM-2026-0301",
                             sm2.public_key_of(sm2.generate_private_key()), {"CN": "h"})
        assert pair.approval.staff == "张三"
        # no approval, no signature: also on the device
        with pytest.raises(ApprovalRequired):
            signer.begin_issuance(None, StubCheck())  # type: ignore[arg-type]
    finally:
        signer.close()
    (tmp_path / "ca.pem").write_text(state.chain_pem())
    (tmp_path / "c.pem").write_bytes(pem.armor("CERTIFICATE", pair.sign_cert))
    for cert in ("ca.pem", "c.pem"):
        res = openssl("verify", "-vfyopt", "distid:1234567812345678", "-CAfile", "ca.pem", cert,
                      cwd=tmp_path)
        assert res.stdout.decode().strip() == f"{cert}: OK"
    assert x509.Certificate.load(pair.sign_cert).authority_key_identifier == state.key_id


def test_sdf_needs_password_env(softsdf_lib, tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_SDF_PW_UNSET", raising=False)
    cfg = Config.load(write_config(tmp_path, signer="sdf", sdf_library=str(softsdf_lib),
                                   sdf_password_env="TEST_SDF_PW_UNSET"))
    with pytest.raises(SignerError, match="TEST_SDF_PW_UNSET"):
        open_signer(cfg)
    assert "TEST_SDF_PW_UNSET" not in os.environ


def test_sdf_generates_key_pairs_on_the_device(sdf_env):
    lib, _ = sdf_env
    counter = ctypes.CDLL(str(lib)).SOFTSDF_KeyPairsGenerated
    counter.restype = ctypes.c_uint
    before = counter()
    signer = SdfSigner(str(lib), 3, b"hsm-pw")
    try:
        d, pub = signer.generate_key_pair()
        d2, _ = signer.generate_key_pair()
    finally:
        signer.close()
    assert counter() == before + 2
    assert 1 <= d <= sm2.N - 2 and d != d2
    assert gmssl_public_key(d) == pub


def test_soft_signer_generates_key_pairs_with_libcrypto(monkeypatch):
    signer = SoftSigner(sm2.generate_private_key())

    def no_python_keys() -> int:
        raise AssertionError("the soft signer's keys come from libcrypto")

    monkeypatch.setattr(sm2, "generate_private_key", no_python_keys)
    d, pub = signer.generate_key_pair()
    assert 1 <= d <= sm2.N - 2 and gmssl_public_key(d) == pub
    assert signer.generate_key_pair()[0] != d
