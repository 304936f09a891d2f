"""Which of the application's materials one attachment is (issue 3 item 7).

Content decides before the name: a CSR or certificate is recognised by parsing it whatever it
is called, a document by its magic bytes; file-name keywords then say which paper a scan is.
Zip archives and TNEF winmail.dat are opened one level at a time under hard limits (count,
total size, ratio, depth), read in bounded chunks; member names are labels, never paths.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mailbot.findings import Finding
from mailbot.intake.facts import MATERIALS, AttachmentFact
from mailbot.intake.form import extract_form_details
from mailbot.intake.tnef_guard import tnef_is_safe

log = logging.getLogger(__name__)

# How each material is recognised; [required] of the same rules file is the rules' own
# (mailbot/rules/materials.py).
DEFAULT_SETTINGS: dict[str, Any] = {
    "keywords": {
        "application_form": ["申请表", "登记表", "申请书"],
        "business_licence": ["营业执照", "执照", "资质", "法人证书", "登记证书", "信用代码证",
                             "许可证"],
        "legal_rep_id": ["法定代表人", "法人", "主要负责人", "负责人"],
        "handler_id": ["经办人", "经办"],
        "crypto_product_cert": ["商用密码", "产品认证", "认证证书", "密码产品"],
    },
    "exclude": {"legal_rep_id": ["法人营业执照", "法人证书", "法人登记"]},
    "generic_id": {"keywords": ["身份证", "身份证明"],
                   "materials": ["legal_rep_id", "handler_id"]},
    "archive": {"max_members": 200, "max_total_bytes": 200 * 1024 * 1024, "max_ratio": 100,
                "ratio_min_bytes": 1024 * 1024, "max_depth": 3, "keep_bytes": 8 * 1024 * 1024},
}

MIME_TYPES: dict[str, str] = {
    "pdf": "application/pdf", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
    "bmp": "image/bmp", "tiff": "image/tiff", "webp": "image/webp", "heic": "image/heic",
    "doc": "application/msword", "xls": "application/vnd.ms-excel",
    "msg": "application/vnd.ms-outlook",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text", "ofd": "application/ofd",
    "zip": "application/zip", "rar": "application/vnd.rar", "7z": "application/x-7z-compressed",
    "gzip": "application/gzip", "tnef": "application/ms-tnef", "rtf": "application/rtf",
    "csr": "application/pkcs10", "certificate": "application/pkix-cert",
}
CSR_EXTENSIONS = (".csr", ".req", ".p10")
CERT_EXTENSIONS = (".cer", ".crt", ".der", ".pem", ".p7b", ".p7c")
MAX_PKI_BYTES = 1024 * 1024  # a CSR or certificate file is a few KB; larger text is not parsed
MAX_FORM_BYTES = 32 * 1024 * 1024
CHUNK = 64 * 1024
MAX_SNIFF_ENTRIES = 2000
# Archive clutter that is no material and not worth a row.
_JUNK = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$|Thumbs\.db$|desktop\.ini$)", re.I)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_PEM_CSR_LABEL = re.compile(rb"-{3,}\s*BEGIN (?:NEW )?CERTIFICATE REQUEST\s*-{3,}")
_PEM_CSR_TEXT = re.compile(
    r"-{3,}\s*BEGIN (?:NEW )?CERTIFICATE REQUEST\s*-{3,}(.*?)"
    r"(?:-{3,}\s*END (?:NEW )?CERTIFICATE REQUEST\s*-{3,}|$)", re.S | re.I)
# A bare base64 DER run: starts a word with "MI" (SEQUENCE), lines may end in stray blanks.
_B64_RUN = re.compile(r"(?<![A-Za-z0-9+/])MI[A-Za-z0-9+/]"
                      r"(?:[A-Za-z0-9+/]|[ \t\u00a0]*\r?\n[ \t\u00a0]*){80,}={0,2}")

try:  # the PKI helper's decoder: one reading of PEM/base64/UTF-16/DER for the whole project
    from mailbot.pki.csr import decode_text_or_der, looks_like_csr
except ImportError:  # pragma: no cover - only while the PKI package is being written
    decode_text_or_der = None  # type: ignore[assignment]
    looks_like_csr = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------------
# settings


def material_settings(settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """rules/materials.toml over the built-in defaults; accepts all rule settings or one file's."""
    merged = {k: dict(v) for k, v in DEFAULT_SETTINGS.items()}
    if not settings:
        return merged
    section = settings.get("materials") if isinstance(settings.get("materials"), Mapping) \
        else settings
    for key, value in section.items():
        if key in merged and isinstance(value, Mapping):
            merged[key].update(value)
    return merged


def _finding(code: str, severity: str, detail: str, **facts: object) -> Finding:
    return Finding(code, severity, detail, facts)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# magic bytes


def sniff_type(data: bytes) -> str | None:
    """The file type from its first bytes ("pdf", "jpeg", "docx", "zip", "tnef", ...) or None."""
    try:
        head = bytes(data[:1024])
    except (TypeError, ValueError):
        return None
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "heic"
    if head.startswith(b"BM") and len(head) >= 18 and \
            struct.unpack_from("<I", head, 14)[0] in (12, 40, 52, 56, 64, 108, 124):
        return "bmp"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return _ole_kind(data)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return _zip_kind(data)
    if head.startswith(b"Rar!\x1a\x07"):
        return "rar"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x78\x9f\x3e\x22"):
        return "tnef"
    if head.startswith(b"{\\rtf"):
        return "rtf"
    if b"%PDF-" in head:  # some producers put junk (or a BOM) before the header
        return "pdf"
    return None


def _ole_kind(data: bytes) -> str:
    window = bytes(data[:4 * 1024 * 1024])
    if "WordDocument".encode("utf-16-le") in window:
        return "doc"
    if "Workbook".encode("utf-16-le") in window:
        return "xls"
    if "__substg1.0_".encode("utf-16-le") in window:
        return "msg"
    return "doc"


def _zip_kind(data: bytes) -> str:
    names: list[str] = []
    if data.count(b"PK\x01\x02") > MAX_SNIFF_ENTRIES:  # an Office file has a few dozen parts
        return "zip"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            if "mimetype" in names and zf.getinfo("mimetype").file_size < 100:
                mt = zf.read("mimetype")
                if mt.startswith(b"application/vnd.oasis.opendocument.text"):
                    return "odt"
    except Exception:  # noqa: BLE001 - truncated prefix: fall back to the local headers
        names = _local_names(bytes(data[:64 * 1024]))
    lower = {n.lower() for n in names}
    has_ct = "[content_types].xml" in lower
    if has_ct and any(n.startswith("word/") for n in lower):
        return "docx"
    if has_ct and any(n.startswith("xl/") for n in lower):
        return "xlsx"
    if has_ct and any(n.startswith("ppt/") for n in lower):
        return "pptx"
    if "ofd.xml" in lower:
        return "ofd"
    if has_ct and len(names) <= 2:  # a prefix only showed the first header
        return "docx"
    return "zip"


def _local_names(head: bytes) -> list[str]:
    names, pos = [], 0
    while len(names) < 20:
        pos = head.find(b"PK\x03\x04", pos)
        if pos < 0 or pos + 30 > len(head):
            break
        n, extra = struct.unpack_from("<HH", head, pos + 26)
        names.append(head[pos + 30:pos + 30 + n].decode("utf-8", "replace"))
        pos += 30 + n + extra
    return names


# ---------------------------------------------------------------------------------------------
# certificate requests and certificates


def _pki_blobs(data: bytes) -> list[bytes]:
    if decode_text_or_der is None or len(data) > MAX_PKI_BYTES:
        return []
    try:
        return decode_text_or_der(data)
    except Exception:  # noqa: BLE001
        return []


def _is_csr(blob: bytes) -> bool:
    try:
        return bool(looks_like_csr is not None and looks_like_csr(blob))
    except Exception:  # noqa: BLE001
        return False


def _is_certificate(blob: bytes) -> bool:
    """X.509 certificate (asn1crypto), or a certs-only PKCS#7 bundle (.p7b, no signers)."""
    from asn1crypto import cms, x509
    try:
        cert = x509.Certificate.load(blob)
        tbs = cert["tbs_certificate"]
        tbs["serial_number"].native  # noqa: B018 - forces the parse
        tbs["validity"].native  # noqa: B018
        tbs["subject"].contents  # noqa: B018
        return cert["signature_algorithm"]["algorithm"].dotted != ""
    except Exception:  # noqa: BLE001
        pass
    try:
        info = cms.ContentInfo.load(blob)
        if info["content_type"].dotted != "1.2.840.113549.1.7.2":
            return False
        signed = info["content"]
        return len(signed["signer_infos"]) == 0 and len(signed["certificates"]) > 0
    except Exception:  # noqa: BLE001
        return False


def pki_materials(data: bytes) -> list[str]:
    """["csr"] / ["certificate"] / both when the bytes parse as such (PEM, DER, base64, UTF-16)."""
    found: list[str] = []
    for blob in _pki_blobs(data):
        if "csr" not in found and _is_csr(blob):
            found.append("csr")
        elif "certificate" not in found and _is_certificate(blob):
            found.append("certificate")
    return found


_PRIVATE_PEM = re.compile(rb"-{3,}\s*BEGIN [A-Z0-9 ]*PRIVATE KEY\s*-{3,}")


def _ascii_probe(data: bytes) -> bytes:
    """ASCII armour is searchable in UTF-16 text once the zero bytes are gone."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:64].count(0) * 3 >= min(len(data), 64):
        return data.replace(b"\x00", b"")
    return data


def _holds_private_key(data: bytes) -> bool:
    """PEM "… PRIVATE KEY" armour (any text encoding) or DER PKCS#8 / SEC1 / PKCS#12."""
    if len(data) > MAX_PKI_BYTES:
        return False
    if _PRIVATE_PEM.search(_ascii_probe(data)):
        return True
    try:
        from mailbot.pki import der
        for blob in _pki_blobs(data) or ([data] if data[:1] == b"\x30" else []):
            parts = der.read(blob).children()
            if len(parts) < 3 or parts[0].tag != der.INTEGER:
                continue
            version, second, third = parts[0].content, parts[1].tag, parts[2].tag
            if (version == b"\x00" and second == der.SEQUENCE and third == der.OCTET_STRING) \
                    or (version == b"\x01" and second == der.OCTET_STRING) \
                    or (version == b"\x03" and second == der.SEQUENCE == third):
                return True  # PKCS#8, SEC1 EC key, PKCS#12 (.pfx)
    except Exception:  # noqa: BLE001
        return False
    return False


def find_csr_in_text(text: str) -> bytes | None:
    """DER of a CSR pasted in a body (PEM or bare base64); PEM armour that will not decode is
    returned as its text so the CSR checker can say it is unreadable."""
    try:
        return _find_csr_in_text(text or "")
    except Exception:  # noqa: BLE001
        return None


def _find_csr_in_text(text: str) -> bytes | None:
    text = text[:4 * 1024 * 1024]
    m = _PEM_CSR_TEXT.search(text)
    if m:
        body = re.sub(r"[^A-Za-z0-9+/=]", "", re.sub(r"(?m)^[\w-]+:.*$", "", m.group(1)))
        der = _b64_der(body)
        if der is not None and _is_csr(der):
            return der
        return m.group(0).encode("ascii", "replace")
    for run in _B64_RUN.finditer(text):
        der = _b64_der(re.sub(r"\s+", "", run.group(0)))
        if der is not None and _is_csr(der):
            return der
    return None


def _b64_der(compact: str) -> bytes | None:
    """Decode base64 and cut at the end of the first DER element (trailing words ignored)."""
    import base64
    import binascii
    compact = compact.split("=", 1)[0]
    compact = compact[:len(compact) - len(compact) % 4] if len(compact) % 4 == 1 else compact
    try:
        raw = base64.b64decode(compact + "=" * (-len(compact) % 4))
    except (binascii.Error, ValueError):
        return None
    from mailbot.pki import der

    try:
        node = der.read(raw)
    except der.DerError:
        return None
    return raw[:node.end] if node.tag == der.SEQUENCE else None


# ---------------------------------------------------------------------------------------------
# names


def safe_member_name(name: str) -> tuple[str, str]:
    """(label, path) for an archive member: control characters out, no directories in the label,
    no `..` anywhere. The path (folders kept, for keywords) is never used as a file path."""
    name = _CONTROL.sub("", name.replace("\\", "/"))
    parts = [p.strip() for p in name.split("/")]
    parts = [p for p in parts if p and p not in (".", "..") and not re.fullmatch(r"[A-Za-z]:", p)]
    if not parts:
        return "unnamed", "unnamed"
    return parts[-1][:255], "/".join(parts)[:1024]


def _zip_member_name(info: zipfile.ZipInfo) -> str:
    """Member name as the sender's system wrote it: UTF-8 flag, Info-ZIP Unicode path, else
    GBK (zipfile decoded it as cp437; undo that and try UTF-8, then GB18030)."""
    name = info.filename
    if info.flag_bits & 0x800:
        return name
    unicode_path = _unicode_path_extra(info)
    if unicode_path:
        return unicode_path
    try:
        raw = name.encode("cp437")
    except UnicodeEncodeError:
        return name
    if raw.isascii():
        return name
    for codec in ("utf-8", "gb18030"):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return name


def _unicode_path_extra(info: zipfile.ZipInfo) -> str | None:
    extra, pos = info.extra or b"", 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + size]
        if tag == 0x7075 and len(body) > 5 and body[0] == 1:
            try:
                return body[5:].decode("utf-8")
            except UnicodeDecodeError:
                return None
        pos += 4 + size
    return None


def _normalise_name(name: str) -> str:
    return unicodedata.normalize("NFKC", name).lower().replace(" ", "")


def name_materials(name: str, settings: Mapping[str, Any] | None = None) -> list[str]:
    """Materials a file name speaks of (several for 法人及经办人身份证.pdf), in contract order."""
    cfg = settings if settings and "keywords" in settings else material_settings(settings)
    norm = _normalise_name(name)
    found: set[str] = set()
    excludes = cfg.get("exclude", {})
    for material, words in cfg.get("keywords", {}).items():
        text = norm
        for phrase in excludes.get(material, []):
            text = text.replace(_normalise_name(phrase), "")
        if any(_normalise_name(w) in text for w in words if w):
            found.add(material)
    generic = cfg.get("generic_id", {})
    person = set(generic.get("materials", [])) & found
    if not person and any(_normalise_name(w) in norm for w in generic.get("keywords", []) if w):
        found.update(generic.get("materials", []))
    return [m for m in MATERIALS if m in found]


# ---------------------------------------------------------------------------------------------
# classification


@dataclass
class _Budget:
    """Limits shared by an attachment and everything nested in it."""

    remaining: int
    cfg: dict[str, Any]


def classify_attachment(filename: str, content_type: str, data: bytes,
                        settings: Mapping[str, Any] | None = None, *, inline: bool = False,
                        content_id: str | None = None) -> list[AttachmentFact]:
    """One fact per file (archives: one per member, "outer.zip/inner"); never raises."""
    name = filename or "(unnamed)"
    try:
        cfg = material_settings(settings)
        budget = _Budget(int(cfg["archive"]["max_total_bytes"]), cfg)
        data = bytes(data or b"")
        facts = _classify(name, name, content_type or "", data, budget, 0)
        for fact in facts:
            if fact.filename == name:
                fact.inline, fact.content_id = inline, content_id
        return facts
    except Exception as exc:  # noqa: BLE001 - arbitrary applicant bytes must not stop intake
        log.exception("classifying %r failed", name)
        size = len(data) if isinstance(data, bytes | bytearray) else 0
        return [AttachmentFact(name, content_type or "application/octet-stream", size, ["other"],
                               hashlib.sha256(bytes(data or b"")).hexdigest(),
                               findings=[_finding("attachment_rejected", "warn",
                                                  f"{name}: could not be read ({type(exc).__name__})",
                                                  filename=name, reason="error")])]


def _declared_type(content_type: str) -> str:
    ct = (content_type or "").split(";", 1)[0].strip().lower()
    return ct or "application/octet-stream"


def _classify(label: str, keyname: str, content_type: str, data: bytes, budget: _Budget,
              depth: int, *, size: int | None = None, sha256: str | None = None,
              parent: str = "") -> list[AttachmentFact]:
    """Classify bytes under `label`; `keyname` (the name with archive folders) feeds keywords,
    and a member whose own name says nothing inherits what its archive's name says."""
    cfg = budget.cfg
    kind = sniff_type(data)
    if kind == "zip" and size is None:
        return _expand_zip(label, keyname, data, budget, depth)
    if kind == "tnef" and size is None:
        return _expand_tnef(label, keyname, data, budget, depth)
    fact = AttachmentFact(label, MIME_TYPES.get(kind or "", _declared_type(content_type)),
                          len(data) if size is None else size, [],
                          sha256 or hashlib.sha256(data).hexdigest())
    fact.sniffed = f"magic:{kind}" if kind else None
    complete = size is None
    if kind in ("zip", "tnef"):  # only a head was kept: too big to open here
        fact.materials = ["other"]
        fact.findings.append(_finding("attachment_rejected", "warn",
                                      f"{label}: archive too large to open inside an archive",
                                      filename=label, reason="too_large"))
        return [fact]
    basename = keyname.rsplit("/", 1)[-1].lower()
    if kind in ("rar", "7z", "gzip"):
        fact.materials = ["other"]
        fact.findings.append(_finding(
            "archive_unsupported", "warn",
            f"{label}: {kind} archives are not opened; send the files as a zip or one by one",
            filename=label, format=kind))
        return [fact]
    if kind is None and complete and _holds_private_key(data):
        # Never kept, never logged: the applicant must make a new key pair and CSR.
        fact.materials = ["other"]
        fact.sniffed = "parsed:private-key"
        fact.findings.append(_finding(
            "private_key_sent", "reject",
            f"{label}: holds a private key; it must never leave the device - generate a new "
            "key pair and certificate request", filename=label))
        return [fact]
    if kind is None and complete:
        found = pki_materials(data)
        how = "parsed"
        if not found and len(data) <= MAX_PKI_BYTES and \
                _PEM_CSR_LABEL.search(_ascii_probe(data)) is not None:
            found, how = ["csr"], "armour"  # the CSR checker will say what is wrong inside
        if not found and basename.endswith(CSR_EXTENSIONS) and len(data) <= MAX_PKI_BYTES:
            found, how = ["csr"], "name"
        if found:
            fact.materials = found
            fact.content_type = MIME_TYPES[found[0]]
            fact.sniffed = f"{how}:" + "+".join(found)
            fact.data = data
            return [fact]
        if basename.endswith(CERT_EXTENSIONS):
            fact.findings.append(_finding(
                "attachment_rejected", "warn",
                f"{label}: named as a certificate but no certificate could be read from it",
                filename=label, reason="unreadable_certificate"))
    materials = name_materials(keyname, cfg) or (name_materials(parent, cfg) if parent else [])
    if kind == "docx" and complete and len(data) <= MAX_FORM_BYTES:
        details = extract_form_details(data)
        if details.is_form or "application_form" in materials:
            fact.form = dict(details.fields)
            fact.data = data
            if details.is_form:
                materials = ["application_form"] + [m for m in materials
                                                    if m != "application_form"]
                fact.sniffed = "form:docx"
    fact.materials = [m for m in MATERIALS if m in materials] or ["other"]
    return [fact]


def _member_fact(label: str, size: int, reason: str, detail: str,
                 severity: str = "reject") -> AttachmentFact:
    return AttachmentFact(label, "application/octet-stream", size, ["other"], "",
                          findings=[_finding("attachment_rejected", severity, detail,
                                             filename=label, reason=reason)])


def _archive_failed(label: str, data: bytes, kind: str, reason: str,
                    detail: str) -> list[AttachmentFact]:
    fact = AttachmentFact(label, MIME_TYPES.get(kind, "application/octet-stream"), len(data),
                          ["other"], hashlib.sha256(data).hexdigest(), sniffed=f"magic:{kind}")
    fact.findings.append(_finding("attachment_rejected", "reject", f"{label}: {detail}",
                                  filename=label, reason=reason))
    return [fact]


def _expand_zip(label: str, keyname: str, data: bytes, budget: _Budget,
                depth: int) -> list[AttachmentFact]:
    lim = budget.cfg["archive"]
    if depth >= int(lim["max_depth"]):
        return _archive_failed(label, data, "zip", "depth",
                               f"archives nested deeper than {lim['max_depth']} are not opened")
    max_members = int(lim["max_members"])
    # zipfile builds an object per central-directory entry before we can count: count first.
    if data.count(b"PK\x01\x02") > max(10 * max_members, 2000):
        return _archive_failed(label, data, "zip", "count",
                               f"the zip archive holds far more than {max_members} files")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception:  # noqa: BLE001 - BadZipFile, truncated, bogus sizes...
        return _archive_failed(label, data, "zip", "corrupt", "the zip archive cannot be read")
    facts: list[AttachmentFact] = []
    members = [i for i in infos if not i.is_dir() and not _JUNK.search(i.filename)]
    with zf:
        for n, info in enumerate(members):
            if n >= max_members:
                facts.append(_member_fact(
                    f"{label}/...", 0, "count",
                    f"{label}: only the first {max_members} of {len(members)} files were read",
                    severity="warn"))
                break
            inner, path = safe_member_name(_zip_member_name(info))
            member_label = f"{label}/{inner}"
            if info.flag_bits & 0x1:
                facts.append(_member_fact(member_label, info.file_size, "encrypted",
                                          f"{member_label}: the file is password-protected"))
                continue
            facts.extend(_zip_member(zf, info, member_label, path, budget, depth, keyname))
            if budget.remaining <= 0:
                break
    if not facts:
        return _archive_failed(label, data, "zip", "empty", "the zip archive holds no files")
    return facts


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, path: str,
                budget: _Budget, depth: int, parent: str) -> list[AttachmentFact]:
    lim = budget.cfg["archive"]
    ratio_cap = max(int(lim["max_ratio"]) * max(info.compress_size, 1),
                    int(lim["ratio_min_bytes"]))
    if info.file_size > ratio_cap:
        return [_member_fact(label, info.file_size, "ratio",
                             f"{label}: refused, it would inflate over {lim['max_ratio']}:1")]
    if info.file_size > budget.remaining:
        budget.remaining = 0
        return [_member_fact(label, info.file_size, "total_size",
                             f"{label}: refused, the archive unpacks to more than "
                             f"{lim['max_total_bytes']} bytes")]
    keep = int(lim["keep_bytes"])
    cap = min(ratio_cap, budget.remaining)
    digest = hashlib.sha256()
    kept = bytearray()
    size = 0
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:  # the header lied about the size: stop right here
                    budget.remaining = 0
                    return [_member_fact(label, size, "ratio",
                                         f"{label}: refused, it inflates beyond its limits")]
                digest.update(chunk)
                if len(kept) < keep:
                    kept += chunk[:keep - len(kept)]
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
            ValueError, OSError) as exc:
        return [_member_fact(label, size, "corrupt",
                             f"{label}: cannot be unpacked ({type(exc).__name__})")]
    budget.remaining -= size
    body = bytes(kept)
    if size > keep:  # judged by its first bytes only, like a big scan in the message itself
        return _classify(label, path, "", body, budget, depth + 1, size=size,
                         sha256=digest.hexdigest(), parent=parent)
    return _classify(label, path, "", body, budget, depth + 1, parent=parent)


def _expand_tnef(label: str, keyname: str, data: bytes, budget: _Budget,
                 depth: int) -> list[AttachmentFact]:
    """Outlook's winmail.dat: its attached files, each classified like a zip member."""
    lim = budget.cfg["archive"]
    if depth >= int(lim["max_depth"]):
        return _archive_failed(label, data, "tnef", "depth",
                               "attachments nested this deep are not opened")
    if not tnef_is_safe(data):
        return _archive_failed(label, data, "tnef", "corrupt", "the winmail.dat cannot be read")
    try:
        import tnefparse
        logging.getLogger("tnefparse").setLevel(logging.CRITICAL)
        tnef = tnefparse.TNEF(data, do_checksum=False)
        attachments = list(tnef.attachments)
    except Exception:  # noqa: BLE001
        return _archive_failed(label, data, "tnef", "corrupt", "the winmail.dat cannot be read")
    facts: list[AttachmentFact] = []
    for n, att in enumerate(attachments):
        if n >= int(lim["max_members"]):
            facts.append(_member_fact(f"{label}/...", 0, "count",
                                      f"{label}: only the first {n} files were read", "warn"))
            break
        raw_name: Any = ""
        try:
            raw_name = att.long_filename() or att.name
        except Exception:  # noqa: BLE001
            raw_name = getattr(att, "_name", b"")
        if isinstance(raw_name, bytes):
            raw_name = _decode_legacy(raw_name)
        inner, path = safe_member_name(str(raw_name).strip("\x00") or f"attachment{n + 1}")
        member_label = f"{label}/{inner}"
        body = bytes(att.data or b"")
        if len(body) > budget.remaining:
            budget.remaining = 0
            facts.append(_member_fact(member_label, len(body), "total_size",
                                      f"{member_label}: refused, too large"))
            break
        budget.remaining -= len(body)
        facts.extend(_classify(member_label, path, "", body, budget, depth + 1,
                               parent=keyname))
    if not facts:
        return _archive_failed(label, data, "tnef", "empty", "the winmail.dat holds no files")
    return facts


def _decode_legacy(raw: bytes) -> str:
    raw = raw.rstrip(b"\x00")
    for codec in ("utf-8", "gb18030"):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")
