"""CSR check: OpenSSL interop, encodings, device quirks (warn), rejections, never-raise property."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbot.pki import der, sm2
from mailbot.pki.csr import CsrReport, check_csr, decode_text_or_der, looks_like_csr
from mailbot.pki.der import tlv
from tests.support import pki_csr as ps
from tests.support.pki_csr import openssl, openssl_csr, pem, pem_to_der, sm2_key, workdir

CONTRACT_KEYS = ["valid", "algorithm", "subject", "codes", "findings"]


def quirks(report: CsrReport) -> set[str]:
    return {str(f.facts.get("quirk")) for f in report.findings if f.code == "csr_encoding_quirk"}


def assert_valid(report: CsrReport) -> None:
    assert report.valid, report.to_json()
    assert report.algorithm == "SM2"
    assert all(f.severity == "warn" for f in report.findings)


@pytest.fixture(scope="module")
def key() -> tuple[int, bytes]:
    d = sm2.generate_private_key()
    return d, sm2.public_key_of(d)


# --- OpenSSL-made requests ---------------------------------------------------------------------

def test_openssl_sm2_request_with_standard_id_is_valid() -> None:
    data = openssl_csr("sm2")
    report = check_csr(data)
    assert_valid(report)
    assert report.findings == [] and report.codes == []
    assert report.public_key == sm2_key()[2]
    assert report.der == pem_to_der(data)
    assert report.subject_fields == {"C": "CN", "ST": "Fujian", "L": "Xiamen", "O": "Test Co",
                                     "OU": "IT", "CN": "alice.example.cn"}
    assert report.subject == "CN=alice.example.cn,OU=IT,O=Test Co,L=Xiamen,ST=Fujian,C=CN"
    assert list(report.to_json()) == CONTRACT_KEYS
    json.dumps(report.to_json())


def test_openssl_request_without_distid_is_wrong_sm2_id() -> None:
    report = check_csr(openssl_csr("sm2-noid"))
    assert not report.valid
    assert report.codes == ["csr_wrong_sm2_id"]
    assert "-sigopt distid:1234567812345678" in report.findings[0].detail
    assert report.findings[0].severity == "reject"


@pytest.mark.parametrize(("kind", "algorithm"), [("rsa2048", "RSA-2048"), ("p256", "ECDSA P-256")])
def test_non_sm2_requests_are_named(kind: str, algorithm: str) -> None:
    report = check_csr(openssl_csr(kind))
    assert not report.valid
    assert report.algorithm == algorithm
    assert report.codes == ["csr_not_sm2"]
    assert algorithm in report.findings[0].detail
    assert report.public_key is None
    assert report.subject_fields["CN"] == "alice.example.cn"


def test_unknown_key_algorithm_is_not_sm2(key: tuple[int, bytes]) -> None:
    d, pub = key
    alg = tlv(0x30, der.enc_oid("1.2.3.4.5"))
    report = check_csr(ps.request(d, ps.info(pub, key=ps.spki(pub, alg))))
    assert report.algorithm == "unknown" and report.codes == ["csr_not_sm2"]
    assert "1.2.3.4.5" in report.findings[0].detail


def test_our_rebuilt_request_verifies_in_openssl(key: tuple[int, bytes]) -> None:
    d, pub = key
    data = ps.request(d, ps.info(pub))
    (workdir() / "ours.csr").write_bytes(pem(data))
    proc = openssl("req", "-in", "ours.csr", "-verify", "-vfyopt", ps.STD_ID, "-noout")
    assert proc is not None
    assert_valid(check_csr(data))


# --- encodings ---------------------------------------------------------------------------------

def _encodings(der_bytes: bytes) -> dict[str, bytes]:
    p = pem(der_bytes).decode()
    b64 = base64.b64encode(der_bytes).decode()
    return {
        "der": der_bytes,
        "pem": p.encode(),
        "pem-new": pem(der_bytes, "NEW CERTIFICATE REQUEST"),
        "pem-crlf": pem(der_bytes, crlf=True),
        "pem-in-text": ("Dear CA,\r\nhere is our request:\r\n\r\n" + p + "\r\nRegards\r\n").encode(),
        "base64-one-line": b64.encode(),
        "base64-lines": "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76)).encode(),
        "base64-crlf": ("\r\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)) + "\r\n")
        .encode(),
        "utf16-le-bom": b"\xff\xfe" + p.encode("utf-16-le"),
        "utf16-be-bom": b"\xfe\xff" + p.encode("utf-16-be"),
        "utf16-le-nobom": p.encode("utf-16-le"),
        "utf16-be-nobom": p.encode("utf-16-be"),
        "utf8-bom": b"\xef\xbb\xbf" + p.encode(),
    }


@pytest.mark.parametrize("variant", sorted(_encodings(b"\x30\x00")))
def test_every_encoding_is_accepted(variant: str) -> None:
    der_bytes = pem_to_der(openssl_csr("sm2"))
    data = _encodings(der_bytes)[variant]
    report = check_csr(data)
    assert_valid(report)
    assert report.findings == []
    assert report.der == der_bytes
    assert looks_like_csr(data)
    assert decode_text_or_der(data)[0] == der_bytes


def test_decode_text_prefers_request_blocks() -> None:
    der_bytes = pem_to_der(openssl_csr("sm2"))
    both = pem(b"\x30\x03\x02\x01\x05", "CERTIFICATE") + pem(der_bytes)
    assert decode_text_or_der(both)[0] == der_bytes
    assert check_csr(both).valid


# --- quirks that stay valid --------------------------------------------------------------------

def _variants(d: int, pub: bytes) -> dict[str, tuple[bytes, set[str]]]:
    temp = sm2.public_key_of(sm2.generate_private_key())
    bmp_name = ps.name(("2.5.4.6", "CN", der.PRINTABLE_STRING),
                       ("2.5.4.10", "中国电子口岸", der.BMP_STRING),
                       ("2.5.4.3", "厦门测试", der.BMP_STRING))
    std = ps.info(pub)
    ber_outer = b"\x30\x80" + std + ps.SM3_WITH_SM2 + tlv(0x03, b"\x00" + sm2.sign(d, std)) \
        + b"\x00\x00"
    return {
        "null-params": (ps.request(d, std, sigalg=ps.SM3_WITH_SM2_NULL), {"sigalg_null_params"}),
        "bmpstring": (ps.request(d, ps.info(pub, subject=bmp_name)), {"bmpstring_names"}),
        "cfca-attributes": (
            ps.request(d, ps.info(pub, subject=bmp_name, attributes=ps.cfca_attributes(temp)),
                       sigalg=ps.SM3_WITH_SM2_NULL),
            {"attribute_values_not_in_set", "bmpstring_names", "sigalg_null_params"}),
        "no-attributes": (ps.request(d, ps.info(pub, attributes=None)), {"attributes_missing"}),
        "version-1": (ps.request(d, ps.info(pub, version=b"\x02\x01\x01")), {"version_nonzero"}),
        "version-empty": (ps.request(d, ps.info(pub, version=b"\x02\x00")), {"version_empty"}),
        "empty-subject": (ps.request(d, ps.info(pub, subject=b"\x30\x00")), set()),
        "sm2-oid-key-alg": (
            ps.request(d, ps.info(pub, key=ps.spki(
                pub, tlv(0x30, der.enc_oid("1.2.156.10197.1.301")))),),
            {"sm2_oid_as_key_algorithm"}),
        "explicit-curve": (ps.request(d, ps.info(pub, key=ps.spki(pub, ps.explicit_sm2_alg()))),
                           {"explicit_sm2_curve_params"}),
        "key-unused-bits": (ps.request(d, ps.info(pub, key=ps.spki(pub, unused=3))),
                            {"bitstring_unused_bits"}),
        "sig-unused-bits": (ps.request(d, std, unused=1), {"bitstring_unused_bits"}),
        "ber-outer": (ber_outer, {"ber_lengths"}),
        "trailing-data": (ps.request(d, std) + b"\x00\x00junk", {"trailing_data"}),
        "compressed-key": (
            ps.request(d, ps.info(pub, key=ps.spki(bytes([2 + pub[-1] % 2]) + pub[1:33]))),
            {"compressed_public_key"}),
    }


VARIANTS = sorted(_variants(1, sm2.public_key_of(1)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_quirks_stay_valid_with_warnings(variant: str, key: tuple[int, bytes]) -> None:
    data, expected = _variants(*key)[variant]
    for form in (data, pem(data)):
        report = check_csr(form)
        assert_valid(report)
        assert quirks(report) == expected
        assert report.public_key == key[1]


def test_cfca_request_facts(key: tuple[int, bytes]) -> None:
    d, pub = key
    temp = sm2.public_key_of(sm2.generate_private_key())
    bmp_name = ps.name(("2.5.4.6", "CN", der.PRINTABLE_STRING),
                       ("2.5.4.3", "厦门测试", der.BMP_STRING))
    report = check_csr(ps.request(d, ps.info(pub, subject=bmp_name,
                                             attributes=ps.cfca_attributes(temp))))
    assert_valid(report)
    assert report.subject_fields == {"C": "CN", "CN": "厦门测试"}
    assert report.subject == "CN=厦门测试,C=CN"
    assert report.temp_public_key == temp
    assert report.attributes["challengePassword"] == "111111"
    assert report.attributes["cfcaTempPublicKey"]["version"] == 1  # type: ignore[index]
    # OpenSSL 3.0 cannot parse such a request at all (reference §5)
    (workdir() / "cfca.csr").write_bytes(pem(report.der or b""))
    with pytest.raises(RuntimeError):
        openssl("req", "-in", "cfca.csr", "-noout")


def test_empty_subject_is_a_warning(key: tuple[int, bytes]) -> None:
    report = check_csr(ps.request(key[0], ps.info(key[1], subject=b"\x30\x00")))
    assert_valid(report)
    assert report.codes == ["csr_empty_subject"] and report.subject == ""


# --- attributes ----------------------------------------------------------------------------

def _ext_request(*exts: tuple[str, bool]) -> bytes:
    body = b"".join(tlv(0x30, der.enc_oid(oid) + (b"\x01\x01\xff" if crit else b"")
                        + tlv(0x04, b"\x30\x00")) for oid, crit in exts)
    attr = tlv(0x30, der.enc_oid("1.2.840.113549.1.9.14") + tlv(0x31, tlv(0x30, body)))
    return tlv(0xA0, attr)


def test_known_critical_extension_is_fine_unknown_is_rejected(key: tuple[int, bytes]) -> None:
    d, pub = key
    ok = check_csr(ps.request(d, ps.info(pub, attributes=_ext_request(
        ("2.5.29.15", True), ("1.2.3.4", False)))))
    assert_valid(ok)
    assert ok.attributes["extensionRequest"] == [
        {"oid": "2.5.29.15", "name": "keyUsage", "critical": True},
        {"oid": "1.2.3.4", "name": "1.2.3.4", "critical": False}]
    bad = check_csr(ps.request(d, ps.info(pub, attributes=_ext_request(("1.2.3.4", True)))))
    assert not bad.valid
    assert bad.codes == ["csr_unknown_critical_attribute"]


def test_malformed_attribute_is_a_warning(key: tuple[int, bytes]) -> None:
    d, pub = key
    broken = tlv(0xA0, tlv(0x30, der.enc_oid("1.2.840.113549.1.9.14") + tlv(0x31, b"\x04\x01x")))
    report = check_csr(ps.request(d, ps.info(pub, attributes=broken)))
    assert_valid(report)
    assert quirks(report) == {"attribute_unparsed:1.2.840.113549.1.9.14"}


def test_duplicate_key_callback(key: tuple[int, bytes]) -> None:
    d, pub = key
    data = ps.request(d, ps.info(pub))
    seen: list[bytes] = []
    report = check_csr(data, key_already_certified=lambda k: seen.append(k) or True)
    assert seen == [pub]
    assert not report.valid and report.codes == ["csr_duplicate_key"]
    assert check_csr(data, key_already_certified=lambda k: False).valid


# --- rejections ----------------------------------------------------------------------------

def _signed_with(d: int, tbs: bytes, r: int, s: int) -> bytes:
    return ps.request(d, tbs, signature=sm2.encode_signature(r, s))


def test_bad_signatures(key: tuple[int, bytes]) -> None:
    d, pub = key
    tbs = ps.info(pub)
    r, s = sm2.decode_signature(sm2.sign(d, tbs))
    cases = {
        "r=0": _signed_with(d, tbs, 0, s), "s=0": _signed_with(d, tbs, r, 0),
        "r=n": _signed_with(d, tbs, sm2.N, s), "s=n": _signed_with(d, tbs, r, sm2.N),
        "other-id": ps.request(d, tbs, uid=b"ALICE123"),
        "other-key": ps.request(sm2.generate_private_key(), tbs),
        "ecdsa-alg": ps.request(d, tbs, sigalg=tlv(0x30, der.enc_oid("1.2.840.10045.4.3.2"))),
        "sig-trailing": ps.request(d, tbs, signature=sm2.sign(d, tbs) + b"\x00"),
        "sig-indefinite": ps.request(
            d, tbs, signature=b"\x30\x80" + sm2.sign(d, tbs)[2:] + b"\x00\x00"),
        "sig-truncated": ps.request(d, tbs, signature=sm2.sign(d, tbs)[:-2]),
        "sig-empty": ps.request(d, tbs, signature=b""),
    }
    for name, data in cases.items():
        report = check_csr(data)
        assert not report.valid, name
        assert report.codes == ["csr_bad_signature"], (name, report.to_json())
    assert "ecdsa-with-SHA256" in check_csr(cases["ecdsa-alg"]).findings[0].detail


def test_flipped_bits_in_tbs_and_signature(key: tuple[int, bytes]) -> None:
    d, pub = key
    data = bytearray(ps.request(d, ps.info(pub)))
    report = check_csr(bytes(data))
    assert report.valid
    cn_at = bytes(data).index(b"server.example.cn")
    sig_at = len(data) - 5
    for pos in (cn_at, cn_at + 5, sig_at, len(data) - 1):
        for bit in (0, 7):
            mutated = bytearray(data)
            mutated[pos] ^= 1 << bit
            rep = check_csr(bytes(mutated))
            assert not rep.valid and rep.codes == ["csr_bad_signature"], (pos, bit)


def test_bad_public_keys(key: tuple[int, bytes]) -> None:
    d, pub = key
    off = pub[:-1] + bytes([pub[-1] ^ 1])
    for bad in (off, b"\x04" + b"\x00" * 64, pub[:-1], b"\x05" + pub[1:]):
        report = check_csr(ps.request(d, ps.info(bad, key=ps.spki(bad))))
        assert not report.valid
        assert report.codes == ["csr_bad_public_key"], report.to_json()


@pytest.mark.parametrize("data", [
    b"", b"hello", b"\x30\x00", b"\x30\x03\x02\x01\x00", "不是请求".encode(),
    b"-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n",
    b"\x30\x80\x30\x80", b"\xff" * 64,
])
def test_unreadable(data: bytes) -> None:
    report = check_csr(data)
    assert not report.valid and report.codes == ["csr_unreadable"]
    assert report.algorithm == "unknown"
    assert not looks_like_csr(data)


def test_oversized_input_is_unreadable() -> None:
    data = pem(pem_to_der(openssl_csr("sm2"))) + b" " * (2 << 20)
    report = check_csr(data)
    assert report.codes == ["csr_unreadable"] and "too large" in report.findings[0].detail


def test_truncated_and_certificate_are_unreadable() -> None:
    der_bytes = pem_to_der(openssl_csr("sm2"))
    for cut in (1, 10, len(der_bytes) // 2):
        assert check_csr(der_bytes[:-cut]).codes == ["csr_unreadable"]
    key_path = sm2_key()[0]
    cert = openssl("req", "-new", "-x509", "-key", str(key_path), "-sm3", "-sigopt", ps.STD_ID,
                   "-subj", "/CN=not a request", "-days", "1")
    assert check_csr(cert).codes == ["csr_unreadable"]
    assert not looks_like_csr(cert)


# --- property: never raises ------------------------------------------------------------------

@given(st.binary(max_size=600))
def test_arbitrary_bytes_give_a_report(data: bytes) -> None:
    report = check_csr(data)
    assert isinstance(report, CsrReport)
    if report.valid:
        assert all(f.severity == "warn" for f in report.findings)
    json.dumps(report.to_json())
    assert isinstance(looks_like_csr(data), bool)
    assert isinstance(decode_text_or_der(data), list)


_VALID = ps.request(7, ps.info(sm2.public_key_of(7), attributes=ps.cfca_attributes(
    sm2.public_key_of(11))))


@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255),
                          st.sampled_from(["set", "insert", "delete"])), min_size=1, max_size=6))
def test_mutated_requests_give_a_report(edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(_VALID)
    for pos, value, op in edits:
        pos = min(pos, len(data) - 1)
        if op == "set":
            data[pos] = value
        elif op == "insert":
            data.insert(pos, value)
        elif len(data) > 1:
            del data[pos]
    report = check_csr(bytes(data))
    assert isinstance(report, CsrReport)
    json.dumps(report.to_json())
    check_csr(pem(bytes(data)))


# --- the lenient DER reader ------------------------------------------------------------------

def test_der_reader_basics() -> None:
    assert der.oid_str(bytes.fromhex("2A811CCF5501822D")) == "1.2.156.10197.1.301"
    assert der.enc_oid("1.2.156.10197.1.501") == bytes.fromhex("06082A811CCF55018375")
    node = der.read(b"\x30\x80\x02\x01\x05\x00\x00")
    assert node.indefinite and node.ber_slips() and node.children()[0].content == b"\x05"
    assert der.read(b"\x30\x81\x03\x02\x01\x05").nonminimal
    for bad in (b"\x30", b"\x30\x05\x02\x01", b"\x02\x80\x00\x00", b"\x1f\x01\x00",
                b"\x30\x80\x02\x01\x05"):
        with pytest.raises(der.DerError):
            der.read(bad)


def test_deep_nesting_is_bounded() -> None:
    deep_indef = b"\x30\x80" * 5000 + b"\x00\x00" * 5000
    deep_def = b""
    for _ in range(3000):
        deep_def = tlv(0x30, deep_def)
    for data in (deep_indef, deep_def, pem(deep_def)):
        assert check_csr(data).codes == ["csr_unreadable"]


# --- r or s without its leading zero (Henan CA's P10 tools and other devices) -----------------

def _strip_leading_zero(sig: bytes) -> tuple[bytes, list[str]]:
    """The SM2Signature re-encoded with each 33-byte INTEGER (00 + top bit set) cut to 32."""
    ints, stripped = [], []
    for label, node in zip(("r", "s"), der.read(sig).children(), strict=True):
        body = node.content
        if len(body) == 33 and body[0] == 0 and body[1] & 0x80:
            body, _ = body[1:], stripped.append(label)
        ints.append(tlv(0x02, body))
    return tlv(0x30, b"".join(ints)), stripped


def _openssl_request_with_high_r_or_s() -> tuple[bytes, bytes, list[str]]:
    """(request DER, quirky request DER, which integers lost their 00) from OpenSSL itself."""
    key = ps.sm2_key()[0]
    for n in range(40):  # each integer has its top bit set about half the time
        out = workdir() / f"quirk{n}.csr"
        openssl("req", "-new", "-key", str(key), "-sm3", "-sigopt", ps.STD_ID,
                "-subj", "/C=CN/O=Henan Test/CN=henan.example.cn", "-out", str(out))
        data = pem_to_der(out.read_bytes())
        info_node, alg, bits = der.read(data).children()
        quirky_sig, stripped = _strip_leading_zero(bits.content[1:])
        if stripped:
            quirky = tlv(0x30, data[info_node.start:info_node.end]
                         + data[alg.start:alg.end] + tlv(0x03, b"\x00" + quirky_sig))
            return data, quirky, stripped
    raise AssertionError("OpenSSL never produced a high r or s")


def test_signature_integer_without_leading_zero_is_a_quirk() -> None:
    strict, quirky, stripped = _openssl_request_with_high_r_or_s()
    assert_valid(check_csr(strict))
    with pytest.raises(sm2.SM2Error, match="negative"):  # strict DER reads it as negative
        sm2.decode_signature(der.read(quirky).children()[2].content[1:])
    for form in (quirky, pem(quirky)):
        report = check_csr(form)
        assert_valid(report)
        assert quirks(report) == {"signature_integer_unsigned"}, (stripped, report.to_json())
        assert report.codes == ["csr_encoding_quirk"]
    # the unsigned reading never bends the proof of possession
    tampered = bytearray(quirky)
    at = bytes(quirky).index(b"henan.example.cn")
    tampered[at] ^= 1
    report = check_csr(bytes(tampered))
    assert not report.valid and report.codes == ["csr_bad_signature"]


def test_only_a_32_byte_integer_is_read_unsigned() -> None:
    high = b"\x80" + b"\x11" * 31
    ok = tlv(0x30, tlv(0x02, high) + tlv(0x02, b"\x01"))
    assert sm2.decode_signature(ok, unsigned_32=True) == (int.from_bytes(high, "big"), 1)
    with pytest.raises(sm2.SM2Error):
        sm2.decode_signature(ok)
    for body in (b"\x80" + b"\x11" * 30, b"\xff" * 33):  # 31 bytes, 33 bytes: still negative
        with pytest.raises(sm2.SM2Error):
            sm2.decode_signature(tlv(0x30, tlv(0x02, body) + tlv(0x02, b"\x01")),
                                 unsigned_32=True)
