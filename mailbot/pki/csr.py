"""Certificate requests (PKCS#10 / GM/T 0092-2020): decode, parse leniently, verify strictly.

A request is valid when it holds an SM2 public key and its SM3withSM2 signature verifies with
the standard ID 1234567812345678 over the certificationRequestInfo bytes exactly as received.
Encoding slips that devices really emit (reference §5) become `warn` findings; the proof of
possession never bends. `check_csr` never raises on any input.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mailbot.findings import Finding
from mailbot.pki import der, sm2
from mailbot.pki.der import DerError, Node

log = logging.getLogger(__name__)

# Requests are a few KiB; anything far larger is no request (and bounds the text scanning).
MAX_INPUT = 1 << 20

OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_SM2 = "1.2.156.10197.1.301"
OID_SM2_SIGN = "1.2.156.10197.1.301.1"
OID_SM3_WITH_SM2 = "1.2.156.10197.1.501"
OID_RSA = "1.2.840.113549.1.1.1"
OID_RSA_PSS = "1.2.840.113549.1.1.10"
OID_CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"
OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
OID_CFCA_TEMP_KEY = "1.2.840.113549.1.9.63"
OID_PRIME_FIELD = "1.2.840.10045.1.1"

NAMED_CURVES = {
    "1.2.840.10045.3.1.7": "ECDSA P-256", "1.3.132.0.34": "ECDSA P-384",
    "1.3.132.0.35": "ECDSA P-521", "1.3.132.0.10": "ECDSA secp256k1",
    "1.2.840.10045.3.1.1": "ECDSA P-192", "1.3.132.0.33": "ECDSA P-224",
    "1.3.36.3.3.2.8.1.1.7": "ECDSA brainpoolP256r1",
}
OTHER_KEY_ALGS = {
    "1.3.101.112": "Ed25519", "1.3.101.113": "Ed448", "1.3.101.110": "X25519",
    "1.3.101.111": "X448", "1.2.840.10040.4.1": "DSA",
}
SIG_ALGS = {
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
    "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.2.840.113549.1.1.10": "RSASSA-PSS",
    "1.2.840.10045.4.1": "ecdsa-with-SHA1", "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384", "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
    "1.3.101.112": "Ed25519", OID_SM3_WITH_SM2: "SM3withSM2", OID_SM2_SIGN: "sm2sign",
}
# Requested extensions we understand (a critical one of any other kind is refused).
KNOWN_EXTENSIONS = {
    "2.5.29.14": "subjectKeyIdentifier", "2.5.29.15": "keyUsage", "2.5.29.17": "subjectAltName",
    "2.5.29.19": "basicConstraints", "2.5.29.32": "certificatePolicies",
    "2.5.29.37": "extKeyUsage", "2.5.29.35": "authorityKeyIdentifier",
}
# RFC 4514 names (plus the usual extras), for subject strings and subject_fields keys
DN_NAMES = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.9": "STREET",
    "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.4": "SN", "2.5.4.42": "GN", "2.5.4.12": "title",
    "2.5.4.5": "serialNumber", "2.5.4.97": "organizationIdentifier", "2.5.4.17": "postalCode",
    "1.2.840.113549.1.9.1": "emailAddress", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
KNOWN_ATTRIBUTES = {OID_CHALLENGE_PASSWORD: "challengePassword",
                    OID_EXTENSION_REQUEST: "extensionRequest",
                    OID_CFCA_TEMP_KEY: "cfcaTempPublicKey",
                    "1.2.840.113549.1.9.2": "unstructuredName"}

# SM2 and P-256 domain parameters for recognising explicit ECParameters
_SM2_DOMAIN = (sm2.P, sm2.A, sm2.B, sm2.GX, sm2.GY, sm2.N)
_P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF

REGENERATE_HINT = ("regenerate the request with the standard SM2 ID, e.g. `openssl req -new -key "
                   "KEY -sm3 -sigopt distid:1234567812345678 -subj ... -out request.csr` "
                   "(OpenSSL 3 signs with an empty ID unless told)")


@dataclass
class CsrReport:
    """What `check_csr` found. `to_json()` is the `csr check --json` contract."""

    valid: bool = False
    algorithm: str = "unknown"
    subject: str = ""
    subject_fields: dict[str, str] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    public_key: bytes | None = None
    der: bytes | None = None
    # Parsed request attributes: {"challengePassword": str, "extensionRequest": [...],
    # "cfcaTempPublicKey": {"version": int, "public_key": hex or None}, "other": [oid, ...]}
    attributes: dict[str, object] = field(default_factory=dict)
    # CFCA temporary public key (65-byte 04||X||Y) when the attribute carries a valid point
    temp_public_key: bytes | None = None
    signature_algorithm: str = ""
    key_algorithm_oid: str = ""
    # True when the signature verified with the standard ID over the received request info
    signature_verified: bool = False
    quirks: list[str] = field(default_factory=list)

    def add(self, code: str, severity: str, detail: str, **facts: object) -> None:
        self.findings.append(Finding(code, severity, detail, facts))  # type: ignore[arg-type]
        if code not in self.codes:
            self.codes.append(code)

    def quirk(self, name: str, detail: str) -> None:
        """An encoding slip that leaves the proof of possession intact: a `warn` finding."""
        if name in self.quirks:
            return
        self.quirks.append(name)
        self.add("csr_encoding_quirk", "warn", detail, quirk=name)

    @property
    def rejected(self) -> bool:
        return any(f.severity == "reject" for f in self.findings)

    def to_json(self) -> dict[str, object]:
        return {"valid": self.valid, "algorithm": self.algorithm, "subject": self.subject,
                "codes": list(self.codes), "findings": [f.to_json() for f in self.findings]}


# ---------------------------------------------------------------------------------------------
# Decoding the container: PEM / base64 / UTF-16 / DER

_PEM_RE = re.compile(r"-----BEGIN ([A-Z0-9 #]+)-----(.*?)-----END \1-----", re.S)
_B64_RE = re.compile(r"^[A-Za-z0-9+/\s]+=*\s*$")


def _as_text(data: bytes) -> str:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", errors="replace")
    if data[:3] == b"\xef\xbb\xbf":
        return data[3:].decode("utf-8", errors="replace")
    # BOM-less UTF-16: ASCII text with every other byte zero
    if len(data) >= 4 and data.count(0) * 3 >= len(data):
        even_zero = data[0::2].count(0) > data[1::2].count(0)
        return data.decode("utf-16-be" if even_zero else "utf-16-le", errors="replace")
    return data.decode("latin-1")


def _b64(body: str) -> bytes | None:
    lines = [ln for ln in body.splitlines() if ":" not in ln]  # drop RFC 1421 headers
    compact = re.sub(r"\s+", "", "".join(lines))
    if not compact:
        return None
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _is_tlv_sequence(blob: bytes) -> bool:
    try:
        return blob[:1] == b"\x30" and der.read(blob).tag == der.SEQUENCE
    except DerError:
        return False


def decode_text_or_der(data: bytes) -> list[bytes]:
    """DER blobs found in PEM / bare base64 / UTF-16 text / DER input; request blocks first."""
    try:
        data = bytes(data)
    except (TypeError, ValueError):
        return []
    if len(data) > MAX_INPUT:
        return []
    if _is_tlv_sequence(data):
        return [data]
    text = _as_text(data)
    blocks = []
    for label, body in _PEM_RE.findall(text):
        blob = _b64(body)
        if blob:
            blocks.append((0 if "REQUEST" in label else 1, blob))
    if blocks:
        return [b for _, b in sorted(blocks, key=lambda x: x[0])]
    stripped = text.strip().strip("\x00\ufeff")
    if stripped and _B64_RE.match(stripped):
        blob = _b64(stripped)
        if blob and _is_tlv_sequence(blob):
            return [blob]
    return []


def _request_shape(blob: bytes) -> tuple[Node, list[Node], list[Node]] | None:
    """(outer, [info, sigalg, sig], info children) if blob has the CertificationRequest shape."""
    try:
        outer = der.read(blob)
        if outer.tag != der.SEQUENCE:
            return None
        parts = outer.children()
        if len(parts) != 3 or parts[0].tag != der.SEQUENCE or parts[1].tag != der.SEQUENCE \
                or parts[2].tag != der.BIT_STRING:
            return None
        info = parts[0].children()
        i = 1 if info and info[0].tag == der.INTEGER else 0
        if len(info) < i + 2:
            return None
        name, spki = info[i], info[i + 1]
        if name.tag != der.SEQUENCE or any(r.tag != der.SET for r in name.children()):
            return None
        spki_parts = spki.children() if spki.tag == der.SEQUENCE else []
        if len(spki_parts) != 2 or spki_parts[0].tag != der.SEQUENCE \
                or spki_parts[1].tag != der.BIT_STRING:
            return None
        return outer, parts, info
    except DerError:
        return None


def looks_like_csr(data: bytes) -> bool:
    """Cheap test: do the bytes decode to something shaped like a CertificationRequest?"""
    try:
        return any(_request_shape(b) is not None for b in decode_text_or_der(data))
    except Exception:  # noqa: BLE001 - a sniffing helper must never raise
        return False


# ---------------------------------------------------------------------------------------------
# Pieces of the request

def _bitstring(node: Node, what: str, report: CsrReport) -> bytes:
    body = node.content
    if not body:
        raise DerError(f"empty {what} BIT STRING")
    if body[0]:
        report.quirk("bitstring_unused_bits",
                     f"{what} BIT STRING declares {body[0]} unused bits (should be 0)")
    return body[1:]


def _parse_name(name: Node, report: CsrReport) -> None:
    rdns: list[str] = []
    fields: dict[str, str] = {}
    kinds: set[str] = set()
    for rdn in name.children():
        parts = []
        for atv in rdn.children():
            kids = atv.children()
            if len(kids) < 2 or kids[0].tag != der.OID:
                raise DerError("bad AttributeTypeAndValue")
            oid = der.oid_str(kids[0].content)
            value, kind = der.decode_string(kids[1])
            kinds.add(kind)
            key = DN_NAMES.get(oid, oid)
            fields[key] = f"{fields[key]}; {value}" if key in fields else value
            parts.append(f"{key}={_escape_dn(value)}")
        rdns.append("+".join(parts))
    report.subject = ",".join(reversed(rdns))  # RFC 4514: most specific RDN first
    report.subject_fields = fields
    if "BMPString" in kinds:
        report.quirk("bmpstring_names", "subject uses BMPString (UTF-16) names")
    if not rdns:
        report.add("csr_empty_subject", "warn", "the request has an empty subject DN")


def _escape_dn(value: str) -> str:
    if value.startswith("#"):
        return value
    out = re.sub(r'([,+"\\<>;=])', r"\\\1", value)
    if out[:1] in (" ", "#"):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def _decompress(point: bytes) -> bytes:
    x = int.from_bytes(point[1:], "big")
    if x >= sm2.P:
        raise sm2.SM2Error("compressed SM2 point with x >= p")
    y = pow((x * x * x + sm2.A * x + sm2.B) % sm2.P, (sm2.P + 1) // 4, sm2.P)
    if (y * y - (x * x * x + sm2.A * x + sm2.B)) % sm2.P:
        raise sm2.SM2Error("compressed SM2 point is not on the curve")
    if y % 2 != point[0] - 2:
        y = sm2.P - y
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def _explicit_curve(params: Node) -> str:
    """Name the curve given as explicit ECParameters: "SM2", "ECDSA P-256" or "ECDSA (explicit)"."""
    try:
        kids = params.children()
        field_id = kids[1].children()
        if der.oid_str(field_id[0].content) != OID_PRIME_FIELD:
            return "ECDSA (explicit curve)"
        p = der.int_value(field_id[1].content)
        curve = kids[2].children()
        a = int.from_bytes(curve[0].content, "big")
        b = int.from_bytes(curve[1].content, "big")
        base = kids[3].content
        n = der.int_value(kids[4].content)
        gx = int.from_bytes(base[1:33], "big") if base[:1] == b"\x04" and len(base) == 65 else -1
        gy = int.from_bytes(base[33:65], "big") if gx >= 0 else -1
        if (p, a, b, gx, gy, n) == _SM2_DOMAIN:
            return "SM2"
        if p == _P256_P:
            return "ECDSA P-256"
    except (DerError, IndexError):
        pass
    return "ECDSA (explicit curve)"


def _parse_spki(spki: Node, report: CsrReport) -> bytes | None:
    """Set report.algorithm; return the key bytes from the BIT STRING when the key is SM2."""
    alg, bits = spki.children()
    alg_kids = alg.children()
    if not alg_kids or alg_kids[0].tag != der.OID:
        raise DerError("bad key AlgorithmIdentifier")
    oid = der.oid_str(alg_kids[0].content)
    params = alg_kids[1] if len(alg_kids) > 1 else None
    key = _bitstring(bits, "public key", report)
    if oid == OID_EC_PUBLIC_KEY:
        if params is not None and params.tag == der.OID:
            curve = der.oid_str(params.content)
            report.algorithm = "SM2" if curve == OID_SM2 else NAMED_CURVES.get(
                curve, f"ECDSA (curve {curve})")
        elif params is not None and params.tag == der.SEQUENCE:
            report.algorithm = _explicit_curve(params)
            if report.algorithm == "SM2":
                report.quirk("explicit_sm2_curve_params",
                             "key uses explicit curve parameters (equal to SM2) "
                             "instead of the named curve 1.2.156.10197.1.301")
        else:
            report.algorithm = "ECDSA (no curve)"
    elif oid == OID_SM2:
        report.algorithm = "SM2"
        report.quirk("sm2_oid_as_key_algorithm",
                     "key algorithm is the SM2 OID itself instead of id-ecPublicKey + SM2 curve")
    elif oid in (OID_RSA, OID_RSA_PSS):
        label = "RSA" if oid == OID_RSA else "RSA-PSS"
        try:
            modulus = der.read(key).children()[0]
            report.algorithm = f"{label}-{der.int_value(modulus.content).bit_length()}"
        except (DerError, IndexError):
            report.algorithm = label
    else:
        report.algorithm = OTHER_KEY_ALGS.get(oid, "unknown")
    report.key_algorithm_oid = oid
    return key if report.algorithm == "SM2" else None


def _sm2_point(key: bytes, report: CsrReport) -> bytes | None:
    try:
        if len(key) == 33 and key[0] in (2, 3):
            point = _decompress(key)
            report.quirk("compressed_public_key", "SM2 public key is in compressed form")
        else:
            point = key
        sm2.check_public_key(point)
        return point
    except sm2.SM2Error as exc:
        report.add("csr_bad_public_key", "reject", f"SM2 public key is invalid: {exc}")
        return None


def _attribute_values(attr: Node, report: CsrReport) -> tuple[str, list[Node]]:
    kids = attr.children()
    if not kids or kids[0].tag != der.OID:
        raise DerError("bad Attribute")
    oid = der.oid_str(kids[0].content)
    if len(kids) == 2 and kids[1].tag == der.SET:
        return oid, kids[1].children()
    report.quirk("attribute_values_not_in_set",
                 "request attributes carry values not wrapped in a SET (CFCA style)")
    return oid, kids[1:]


def _parse_extension_request(values: list[Node], report: CsrReport) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for exts in values:
        for ext in exts.children():
            kids = ext.children()
            oid = der.oid_str(kids[0].content)
            critical = len(kids) > 2 and kids[1].tag == der.BOOLEAN and kids[1].content != b"\x00"
            name = KNOWN_EXTENSIONS.get(oid, oid)
            out.append({"oid": oid, "name": name, "critical": critical})
            if critical and oid not in KNOWN_EXTENSIONS:
                report.add("csr_unknown_critical_attribute", "reject",
                           f"the request asks for an unknown critical extension {oid}", oid=oid)
    return out


def _parse_cfca_temp_key(values: list[Node], report: CsrReport) -> dict[str, object]:
    """CFCA 1.2.840.113549.1.9.63: OCTET STRING { SEQUENCE { INTEGER, OCTET STRING(136) } }."""
    facts: dict[str, object] = {"public_key": None}
    try:
        inner = values[0]
        seq = der.read(inner.content) if inner.tag == der.OCTET_STRING else inner
        kids = seq.children()
        facts["version"] = der.int_value(kids[0].content)
        blob = kids[1].content
        facts["length"] = len(blob)
        if len(blob) == 136:
            # X, Y left-aligned in 64-byte fields (the sample), else right-aligned (SDF style)
            for xs, ys in ((8, 72), (40, 104)):
                point = b"\x04" + blob[xs:xs + 32] + blob[ys:ys + 32]
                try:
                    sm2.check_public_key(point)
                except sm2.SM2Error:
                    continue
                report.temp_public_key = point
                facts["public_key"] = point.hex()
                break
    except (DerError, IndexError):
        pass
    if report.temp_public_key is None:
        report.add("csr_temp_key_unreadable", "warn",
                   "CFCA temporary public key attribute (1.2.840.113549.1.9.63) is not a valid "
                   "SM2 point")
    return facts


def _parse_attributes(node: Node, report: CsrReport) -> None:
    attrs: dict[str, object] = {}
    other: list[str] = []
    for attr in node.children():
        oid = "?"
        try:
            oid, values = _attribute_values(attr, report)
            if oid == OID_CHALLENGE_PASSWORD and values:
                attrs["challengePassword"] = der.decode_string(values[0])[0]
            elif oid == OID_EXTENSION_REQUEST:
                attrs["extensionRequest"] = _parse_extension_request(values, report)
            elif oid == OID_CFCA_TEMP_KEY:
                attrs["cfcaTempPublicKey"] = _parse_cfca_temp_key(values, report)
            elif oid in KNOWN_ATTRIBUTES and values:
                attrs[KNOWN_ATTRIBUTES[oid]] = der.decode_string(values[0])[0]
            else:
                other.append(oid)
        except (DerError, IndexError):
            # the signature covers these bytes as received; an odd attribute is no reason to
            # refuse, and requested extensions are not copied into certificates anyway
            report.quirk(f"attribute_unparsed:{oid}", f"request attribute {oid} cannot be parsed")
    if other:
        attrs["other"] = other
    report.attributes = attrs


def _parse_sigalg(node: Node, report: CsrReport) -> str:
    kids = node.children()
    if not kids or kids[0].tag != der.OID:
        raise DerError("bad signature AlgorithmIdentifier")
    oid = der.oid_str(kids[0].content)
    report.signature_algorithm = SIG_ALGS.get(oid, oid)
    if oid in (OID_SM3_WITH_SM2, OID_SM2_SIGN):
        if oid == OID_SM2_SIGN:
            report.quirk("sm2sign_oid_as_signature_algorithm",
                         "signature algorithm is sm2sign 1.2.156.10197.1.301.1, "
                         "not SM3withSM2 1.2.156.10197.1.501")
        if len(kids) > 1:
            if kids[1].tag == der.NULL and not kids[1].content:
                report.quirk("sigalg_null_params",
                             "SM3withSM2 AlgorithmIdentifier carries NULL parameters")
            else:
                report.quirk("sigalg_unexpected_params",
                             "SM3withSM2 AlgorithmIdentifier carries unexpected parameters")
    return oid


# ---------------------------------------------------------------------------------------------

def check_csr(data: bytes, *,
              key_already_certified: Callable[[bytes], bool] | None = None) -> CsrReport:
    """Check a certificate request; never raises on any input (the callback's errors pass)."""
    report = CsrReport()
    try:
        blobs = decode_text_or_der(data)
        shaped = next(((b, s) for b in blobs if (s := _request_shape(b)) is not None), None)
        if shaped is None:
            too_big = len(data) > MAX_INPUT
            report.add("csr_unreadable", "reject",
                       f"the file is too large for a certificate request ({len(data)} bytes)"
                       if too_big else
                       "the file is not a certificate request (PKCS#10) in PEM, base64 or DER")
            return report
        blob, (outer, parts, info) = shaped
        report.der = blob
        _check_parsed(report, blob, outer, parts, info)
    except (DerError, IndexError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        report.add("csr_unreadable", "reject", f"the certificate request cannot be parsed: {exc}")
    except Exception:  # noqa: BLE001 - the contract is "never raises"; a bug must not stop intake
        log.exception("unexpected error while checking a certificate request")
        report.add("csr_unreadable", "reject", "the certificate request cannot be parsed")
    if report.public_key is not None and key_already_certified is not None \
            and key_already_certified(report.public_key):
        report.add("csr_duplicate_key", "reject",
                   "this public key is already certified; generate a new key pair")
    report.valid = (report.algorithm == "SM2" and report.signature_verified
                    and not report.rejected)
    return report


def _check_parsed(report: CsrReport, blob: bytes, outer: Node, parts: list[Node],
                  info: list[Node]) -> None:
    info_node, sigalg_node, sig_node = parts
    if outer.end != len(blob):
        report.quirk("trailing_data", f"{len(blob) - outer.end} bytes follow the request")
    if outer.ber_slips():
        report.quirk("ber_lengths", "request uses BER lengths (indefinite or non-minimal)")
    # version
    if info[0].tag == der.INTEGER:
        version_node, rest = info[0], info[1:]
        if not version_node.content:
            report.quirk("version_empty", "request version is a zero-length INTEGER")
        elif der.int_value(version_node.content) != 0:
            report.quirk("version_nonzero",
                         f"request version is {der.int_value(version_node.content)}, not 0 (v1)")
    else:
        rest = info
        report.quirk("version_missing", "request has no version field")
    name, spki, extra = rest[0], rest[1], rest[2:]
    _parse_name(name, report)
    key = _parse_spki(spki, report)
    # attributes [0]
    attr_node = next((n for n in extra if n.tag in (0xA0, 0x80)), None)
    if attr_node is None:
        report.quirk("attributes_missing", "request has no [0] attributes field")
    elif attr_node.tag == 0xA0:
        _parse_attributes(attr_node, report)
    sig_oid = _parse_sigalg(sigalg_node, report)
    if report.algorithm != "SM2":
        extra_note = " (RSA keys are refused since 2022-07-01)" if report.algorithm.startswith(
            "RSA") else ""
        what = (f"a key of unknown algorithm {report.key_algorithm_oid}"
                if report.algorithm == "unknown" else f"an {report.algorithm} key")
        report.add("csr_not_sm2", "reject", f"the request holds {what}, not SM2{extra_note}",
                   algorithm=report.algorithm)
        return
    assert key is not None
    point = _sm2_point(key, report)
    if point is None:
        return
    report.public_key = point
    if sig_oid not in (OID_SM3_WITH_SM2, OID_SM2_SIGN):
        report.add("csr_bad_signature", "reject",
                   f"the request is signed with {report.signature_algorithm}, not SM3withSM2",
                   signature_algorithm=report.signature_algorithm)
        return
    unsigned = False
    try:
        sig = _bitstring(sig_node, "signature", report)
        try:
            r, s = sm2.decode_signature(sig)
        except sm2.SM2Error as strict:
            try:  # Henan CA's P10 tools and others write r or s without the leading 00
                r, s = sm2.decode_signature(sig, unsigned_32=True)
                unsigned = True
            except sm2.SM2Error:
                raise strict from None
    except (sm2.SM2Error, DerError) as exc:
        report.add("csr_bad_signature", "reject", f"the signature cannot be decoded: {exc}")
        return
    tbs = blob[info_node.start:info_node.end]  # exactly as received
    if sm2.verify_digest(point, sm2.message_digest(point, tbs), r, s):
        report.signature_verified = True
        if unsigned:
            report.quirk("signature_integer_unsigned",
                         "the signature's r or s is a 32-byte INTEGER without its leading 00 "
                         "(negative in strict DER); read as the unsigned value it means")
        return
    if sm2.verify_digest(point, sm2.message_digest(point, tbs, b""), r, s):
        report.add("csr_wrong_sm2_id", "reject",
                   "the signature verifies only with an empty SM2 ID, not the standard "
                   "1234567812345678: " + REGENERATE_HINT)
        return
    report.add("csr_bad_signature", "reject",
               "the signature does not verify over the request with the standard SM2 ID")
