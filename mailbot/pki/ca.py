"""CA state: the signer, the CA certificate and its chain; `ca init` makes a soft CA."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import core, pem, x509

from mailbot import clock
from mailbot.config import Config
from mailbot.pki import sm2
from mailbot.pki.errors import PkiError
from mailbot.pki.signer import BaseSigner, open_signer
from mailbot.pki.signer.soft import key_encryption, load_private_key, write_private_key

SM3_WITH_SM2 = "1.2.156.10197.1.501"
SPKI_PREFIX = bytes.fromhex("3059301306072A8648CE3D020106082A811CCF5501822D034200")
ROOT_VALIDITY_YEARS = 20
# A CA whose subject says this (the default subject does) may keep its soft key in clear
_TEST_CA = re.compile(r"\btest\s+CA\b", re.I)

# DN keys as written in config / CSRs -> asn1crypto attribute names
DN_KEYS = {
    "C": "country_name", "ST": "state_or_province_name", "L": "locality_name",
    "O": "organization_name", "OU": "organizational_unit_name", "CN": "common_name",
    "E": "email_address", "EMAILADDRESS": "email_address", "SERIALNUMBER": "serial_number",
}


class CaError(PkiError, RuntimeError):
    """The CA cannot be loaded or made; the message says what to do."""


def sig_alg() -> x509.SignedDigestAlgorithm:
    # SM3withSM2 with parameters ABSENT (what OpenSSL and GmSSL emit; GmSSL rejects NULL)
    return x509.SignedDigestAlgorithm({"algorithm": SM3_WITH_SM2})


def spki_of(pub: bytes) -> x509.PublicKeyInfo:
    sm2.check_public_key(pub)
    return x509.PublicKeyInfo.load(SPKI_PREFIX + pub)


def key_identifier(pub: bytes) -> bytes:
    """SKI: SHA-1 of the subjectPublicKey BIT STRING contents (RFC 5280 method 1)."""
    return hashlib.sha1(pub).digest()


def build_name(fields: dict[str, str]) -> x509.Name:
    """A DN: C as PrintableString, the rest UTF8String, in C, ST, L, O, OU, CN order."""
    attrs = {}
    for key, value in fields.items():
        name = DN_KEYS.get(key.upper())
        if name and value:
            attrs[name] = value
    return x509.Name.build(attrs)


_SHORT = {"country_name": "C", "state_or_province_name": "ST", "locality_name": "L",
          "organization_name": "O", "organizational_unit_name": "OU", "common_name": "CN",
          "email_address": "emailAddress", "serial_number": "serialNumber"}


def dn_text(name: x509.Name) -> str:
    """"C=CN, O=..., CN=..." in the order of the certificate (not asn1crypto's reversed one)."""
    parts = []
    for rdn in name.chosen:
        for atv in rdn:
            key = atv["type"].native
            parts.append(f"{_SHORT.get(key, atv['type'].dotted)}={atv['value'].native}")
    return ", ".join(parts)


def parse_dn(text: str) -> dict[str, str]:
    """"C=CN,O=Org,CN=Name" -> dict (commas inside values may be escaped as \\,)."""
    out: dict[str, str] = {}
    parts, cur, esc = [], "", False
    for ch in text:
        if esc:
            cur, esc = cur + ch, False
        elif ch == "\\":
            esc = True
        elif ch in ",/":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for part in parts:
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def x509_time(dt: datetime) -> x509.Time:
    # RFC 5280: UTCTime through 2049, GeneralizedTime from 2050
    dt = dt.astimezone(UTC).replace(microsecond=0)
    return x509.Time({"utc_time" if dt.year < 2050 else "general_time": dt})


def add_years(dt: datetime, years: int) -> datetime:
    try:
        return dt.replace(year=dt.year + years)
    except ValueError:  # 29 February
        return dt.replace(year=dt.year + years, day=28)


def random_serial() -> int:
    """Positive, 20 octets when DER-encoded (top bit clear, never leading zeros)."""
    return secrets.randbits(159) | (1 << 158)


@dataclass
class CaState:
    signer: BaseSigner
    cert: x509.Certificate
    chain: list[x509.Certificate]  # the CA certificate first, then its issuers

    @property
    def cert_der(self) -> bytes:
        return self.cert.dump()

    @property
    def subject(self) -> x509.Name:
        return self.cert.subject

    @property
    def public_key(self) -> bytes:
        return bytes(self.cert.public_key["public_key"].contents)[1:]

    @property
    def key_id(self) -> bytes:
        ski = self.cert.key_identifier
        return ski if ski else key_identifier(self.public_key)

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()

    @property
    def not_after(self) -> datetime:
        return self.cert["tbs_certificate"]["validity"]["not_after"].native

    def chain_pem(self) -> str:
        return "".join(pem.armor("CERTIFICATE", c.dump()).decode() for c in self.chain)


def read_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle or one DER file, in file order."""
    data = path.read_bytes()
    if pem.detect(data):
        return [x509.Certificate.load(der) for _t, _h, der in pem.unarmor(data, multiple=True)]
    return [x509.Certificate.load(data)]


def _cert_key(cert: x509.Certificate) -> bytes:
    return bytes(cert.public_key["public_key"].contents)[1:]


def ca_certificate(cfg: Config) -> x509.Certificate:
    """The configured CA certificate alone (no key: enough to check a CRL against)."""
    cert_path = cfg.var_path(cfg.ca.cert_path)
    if not cert_path.exists():
        raise CaError(f"no CA certificate at {cert_path}: run `mailbot ca init`")
    return read_certificates(cert_path)[0]


def load_ca(cfg: Config) -> CaState:
    """The configured CA: its signer and certificate chain, checked to belong together."""
    cert_path = cfg.var_path(cfg.ca.cert_path)
    if not cert_path.exists():
        raise CaError(f"no CA certificate at {cert_path}: run `mailbot ca init`")
    certs = read_certificates(cert_path)
    if cfg.ca.chain_path:
        certs += [c for c in read_certificates(cfg.var_path(cfg.ca.chain_path))
                  if c.dump() != certs[0].dump()]
    signer = open_signer(cfg)
    state = CaState(signer=signer, cert=certs[0], chain=certs)
    if signer.public_key() != state.public_key:
        raise CaError(f"the CA key does not match the CA certificate {cert_path}")
    return state


def self_signed_root(signer: BaseSigner, subject: dict[str, str], *,
                     years: int = ROOT_VALIDITY_YEARS) -> x509.Certificate:
    """A self-signed SM2 root: CA:TRUE critical, keyCertSign + cRLSign critical, SKI = AKI."""
    pub = signer.public_key()
    name = build_name(subject)
    start = clock.now().replace(microsecond=0) - timedelta(minutes=5)  # clock skew margin
    kid = key_identifier(pub)
    tbs = x509.TbsCertificate({
        "version": "v3",
        "serial_number": random_serial(),
        "signature": sig_alg(),
        "issuer": name,
        "validity": {"not_before": x509_time(start),
                     "not_after": x509_time(add_years(start, years))},
        "subject": name,
        "subject_public_key_info": spki_of(pub),
        "extensions": [
            {"extn_id": "basic_constraints", "critical": True, "extn_value": {"ca": True}},
            {"extn_id": "key_usage", "critical": True,
             "extn_value": {"key_cert_sign", "crl_sign"}},
            {"extn_id": "key_identifier", "critical": False, "extn_value": kid},
            {"extn_id": "authority_key_identifier", "critical": False,
             "extn_value": {"key_identifier": kid}},
        ],
    })
    sig = signer.sign_ca_operation(tbs.dump(), "self_signed_root")
    return x509.Certificate({"tbs_certificate": tbs, "signature_algorithm": sig_alg(),
                             "signature_value": core.OctetBitString(sig)})


def is_test_ca(subject: x509.Name | str) -> bool:
    """Whether a CA subject says it is a test CA ("... test CA", as the default subject)."""
    text = subject if isinstance(subject, str) else dn_text(subject)
    return bool(_TEST_CA.search(text))


def _passphrase(cfg: Config) -> bytes | None:
    # the secret only ever travels from the environment to libcrypto: never logged or shown
    return os.environ.get(cfg.ca.key_passphrase_env, "").encode() or None


def init_ca(cfg: Config, *, import_key: Path | None = None, import_chain: Path | None = None,
            force: bool = False) -> CaState:
    """Make the soft CA: a new key and self-signed root, or an imported key plus chain.

    With a passphrase in the variable `[ca] key_passphrase_env` names, the key is written as
    PKCS#8 PBES2 (SM4-CBC, PBKDF2-HMAC-SHA256, 600,000 iterations; see signer/soft.py).
    Without one, only a test CA (its subject says "test CA", as the default subject does) may
    have its key written in clear; for any other CA init refuses before writing anything.
    """
    if cfg.ca.signer != "soft" and import_chain is None:
        raise CaError("with signer = sdf the key stays in the device: give --chain with the "
                      "CA certificate issued for it")
    key_path = cfg.var_path(cfg.ca.key_path)
    cert_path = cfg.var_path(cfg.ca.cert_path)
    if cert_path.exists() and not force:
        raise CaError(f"a CA already exists at {cert_path} (use --force to replace it)")
    passphrase = _passphrase(cfg)
    certs = read_certificates(import_chain) if import_chain is not None else []
    if cfg.ca.signer == "soft":
        if import_key is not None:
            d = load_private_key(import_key.read_bytes(), passphrase)
        elif key_path.exists() and not force:
            raise CaError(f"a CA key already exists at {key_path} (use --force to replace it)")
        else:
            d = sm2.generate_private_key()
        # check before writing anything: a failed import leaves no half-made CA
        if certs and _cert_key(certs[0]) != sm2.public_key_of(d):
            raise CaError(f"the first certificate of {import_chain} is not for the CA key")
        subject = certs[0].subject if certs else build_name(parse_dn(cfg.ca.subject))
        if passphrase is None and not is_test_ca(subject):
            raise CaError(f"refusing to write the key of CA {dn_text(subject)!r} unencrypted: "
                          f"set {cfg.ca.key_passphrase_env} to its passphrase (only a CA "
                          "whose subject says \"test CA\" may keep its key in clear)")
        # written beside it, then renamed: re-encrypting the key in place (--key KEY_PATH)
        # never loses it halfway
        new_key = key_path.with_name(key_path.name + ".new")
        new_key.unlink(missing_ok=True)
        write_private_key(new_key, d, passphrase=passphrase)
        del d
        os.replace(new_key, key_path)
    signer = open_signer(cfg)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    if certs:
        if _cert_key(certs[0]) != signer.public_key():
            raise CaError(f"the first certificate of {import_chain} is not for the CA key")
        cert_path.write_bytes(b"".join(pem.armor("CERTIFICATE", c.dump()) for c in certs))
    else:
        root = self_signed_root(signer, parse_dn(cfg.ca.subject))
        cert_path.write_bytes(pem.armor("CERTIFICATE", root.dump()))
    return load_ca(cfg)


@dataclass
class KeyStatus:
    """How the CA key is kept, read without opening it (no passphrase needed)."""

    signer: str
    key_path: str | None  # the soft key file; None for sdf
    present: bool
    encrypted: bool | None  # None: no soft key file to judge
    protection: str | None  # e.g. "PBES2 sm4-cbc, PBKDF2 hmacWithSHA256 600000 iterations"
    warning: str | None

    def as_dict(self) -> dict[str, object]:
        return {"signer": self.signer, "key_path": self.key_path, "key_present": self.present,
                "key_encrypted": self.encrypted, "key_protection": self.protection,
                "warning": self.warning}


def key_status(cfg: Config) -> KeyStatus:
    """Whether the soft CA key is encrypted at rest, and a warning when it is not."""
    if cfg.ca.signer != "soft":
        return KeyStatus(cfg.ca.signer, None, True, None, "in the device", None)
    path = cfg.var_path(cfg.ca.key_path)
    try:
        data = path.read_bytes()
    except OSError:
        return KeyStatus("soft", str(path), False, None, None, None)
    protection = key_encryption(data)
    if protection is not None:
        return KeyStatus("soft", str(path), True, True, protection, None)
    cert = cfg.var_path(cfg.ca.cert_path)
    warning = (f"the CA key {path} is not encrypted (fit for a test CA only): set "
               f"{cfg.ca.key_passphrase_env} and run `mailbot ca init --force --key {path} "
               f"--chain {cert}` to encrypt it / CA 私钥未加密")
    return KeyStatus("soft", str(path), True, False, None, warning)
