"""Field validators for the application form: pure functions the rules call.

Each checks one value as it is written on 《中国电子口岸数字证书申请表》 against the standard
or the source document's instruction (填写说明) that governs it, and knows nothing of findings,
the database or mail; the rule that calls it chooses the finding code and severity.

One style throughout:

- a ``*_problem(value) -> str | None`` returns ``None`` when the value is fine, else one short
  English reason (for the finding's ``detail`` and for staff), never raising on odd input;
- a predicate (``is_…``, ``same_…``, ``in_district``) returns ``bool``;
- a ``normalise_…`` returns the canonical form used for comparing (``None`` when there is none).

Every validator first undoes what typing on a Chinese keyboard does to a value: NFKC folds
full-width digits, letters and brackets to ASCII (``１３８`` → ``138``, ``（`` → ``(``), and the
ideographic space U+3000 is whitespace like any other.

Standards followed (algorithms confirmed against published descriptions of each):

- GB 32100-2015, 统一社会信用代码: 18 characters from ``0-9 A-H J-N P-R T U W-Y`` (no I O Z S V);
  character 18 = (31 − Σ value(cᵢ)·wᵢ mod 31) mod 31 with weights
  1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28 (values: ``0``–``9`` are 0–9, ``A`` 10 …
  ``Y`` 30); characters 3–8 the registration authority's administrative division (GB/T 2260).
- GB 11643-1999, 公民身份号码: 6-digit address, 8-digit birth date, 3-digit sequence, check
  digit by ISO 7064 MOD 11-2: Σ aᵢ·wᵢ mod 11 with weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2,
  remainder 0…10 → ``1 0 X 9 8 7 6 5 4 3 2``.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, timedelta, timezone

from mailbot import clock

__all__ = [
    "DISTRICT_PREFIXES", "KEY_LOSS_WORDS", "USCC_CHARSET",
    "email_problem", "in_district", "is_resident_id_type", "is_uscc_length", "key_loss_words",
    "mobile_problem", "normalise_company", "normalise_resident_id", "normalise_serial",
    "normalise_uscc", "resident_id_check_digit", "resident_id_problem", "same_company",
    "same_serial", "uscc_check_char", "uscc_problem", "uscc_region",
]

_WHITESPACE = re.compile(r"\s+")  # str patterns: \s covers U+3000 and the other Unicode spaces


def _fold(value: str) -> str:
    """NFKC (full-width → ASCII) and every whitespace character removed.

    NFKC runs again after the removal, since NFKC may itself leave a space before a combining
    mark (¯ → space + U+0304), whose removal lets the mark compose: this keeps folding idempotent.
    """
    spaced = _WHITESPACE.sub("", unicodedata.normalize("NFKC", value or ""))
    return unicodedata.normalize("NFKC", spaced)


# --- 统一社会信用代码 (GB 32100-2015) ---------------------------------------------------------

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 characters of GB 32100 in value order (I, O, Z, S and V are never used)."""
_USCC_VALUE = {c: i for i, c in enumerate(USCC_CHARSET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

DISTRICT_PREFIXES: tuple[str, ...] = ("3502", "3505", "3506", "3508")
"""厦门关区 by administrative division: Xiamen, Quanzhou, Zhangzhou, Longyan (DESIGN.md §4)."""


def normalise_uscc(code: str) -> str:
    """The credit code as compared: NFKC, all whitespace removed, upper-cased."""
    return _fold(code).upper()


def is_uscc_length(code: str) -> bool:
    """Whether the code is 18 characters once normalised, i.e. meant as a credit code.

    A code of another length is another qualification's code (``org_code_not_uscc``); an
    18-character one that fails ``uscc_problem`` is a mistyped credit code (``org_code_invalid``).
    """
    return len(normalise_uscc(code)) == 18


def uscc_check_char(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters (already normalised).

    Raises ValueError for a wrong length or a character outside ``USCC_CHARSET``.
    """
    if len(first17) != 17 or any(c not in _USCC_VALUE for c in first17):
        raise ValueError("need 17 characters of the GB 32100 character set")
    total = sum(_USCC_VALUE[c] * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_CHARSET[(31 - total % 31) % 31]


def uscc_problem(code: str) -> str | None:
    """Why ``code`` is not a valid 统一社会信用代码 (GB 32100-2015), or None when it is.

    Checks, after normalising: 18 characters; each from ``USCC_CHARSET`` (characters 1 and 2,
    the registration authority and type codes, and 9–17, the organisation's own code);
    characters 3–8 six digits (the administrative division); character 18 the check character.
    The registration authority and type codes are not matched against their published lists,
    which keep growing (1, 5, 9, Y, then N, A …); a mistyped one fails the check character.
    """
    norm = normalise_uscc(code)
    if not norm:
        return "empty code"
    if len(norm) != 18:
        return f"not 18 characters (has {len(norm)})"
    bad = sorted({c for c in norm if c not in _USCC_VALUE})
    if bad:
        return ("characters outside the GB 32100 set (0-9 and A-Y without I, O, S, V, Z): "
                + " ".join(bad))
    if not norm[2:8].isdigit():
        return f"characters 3-8 (administrative division) are not digits: {norm[2:8]}"
    expected = uscc_check_char(norm[:17])
    if norm[17] != expected:
        return f"wrong check character {norm[17]} (the first 17 give {expected})"
    return None


def uscc_region(code: str) -> str:
    """The 6-digit administrative division code (characters 3–8) of a credit code.

    ``""`` when the normalised code is not 18 characters or those six are not digits.
    """
    norm = normalise_uscc(code)
    region = norm[2:8]
    return region if len(norm) == 18 and region.isdigit() else ""


def in_district(code: str, prefixes: tuple[str, ...] = DISTRICT_PREFIXES) -> bool:
    """Whether the credit code's administrative division starts with one of ``prefixes``.

    False when there is no region to read (see ``uscc_region``).
    """
    region = uscc_region(code)
    return bool(region) and region.startswith(tuple(prefixes))


# --- 居民身份证号码 (GB 11643-1999) ---------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
# Province-level codes of GB/T 2260 (71 Taiwan; 81, 82, 83 the residence permits of Hong Kong,
# Macao and Taiwan residents, which use the same number format).
_ID_PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 "
    "61 62 63 64 65 71 81 82 83".split())
_CHINA_TZ = timezone(timedelta(hours=8))


def normalise_resident_id(number: str) -> str:
    """The ID number as compared: NFKC (full-width digits), whitespace removed, ``x`` → ``X``."""
    return _fold(number).upper()


def resident_id_check_digit(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check digit of GB 11643 for 17 digits (``0``–``9`` or ``X``).

    Raises ValueError unless given exactly 17 ASCII digits.
    """
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("need 17 digits")
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def resident_id_problem(number: str, today: date | None = None) -> str | None:
    """Why ``number`` is not a valid 18-digit 居民身份证号码 (GB 11643-1999), or None.

    Checks, after normalising: 18 characters, 17 digits then a digit or X; a known
    province-level address code; a birth date (characters 7–14, YYYYMMDD) that is a real day
    from 1900-01-01 up to ``today`` (default: today in China, from ``mailbot.clock``); the
    check digit. A 15-digit first-generation number is refused by name: those cards expired
    in 2013.
    """
    norm = normalise_resident_id(number)
    if not norm:
        return "empty number"
    if len(norm) == 15 and norm.isdigit():
        return "old 15-digit number; the 18-digit number is needed"
    if len(norm) != 18:
        return f"not 18 characters (has {len(norm)})"
    if not (norm[:17].isascii() and norm[:17].isdigit()) or norm[17] not in "0123456789X":
        return "must be 17 digits followed by a digit or X"
    if norm[:2] not in _ID_PROVINCES:
        return f"unknown province code {norm[:2]}"
    try:
        born = datetime.strptime(norm[6:14], "%Y%m%d").date()
    except ValueError:
        return f"birth date {norm[6:14]} is not a real date"
    if today is None:
        today = clock.now().astimezone(_CHINA_TZ).date()
    if born < date(1900, 1, 1):
        return f"birth date {born.isoformat()} is before 1900"
    if born > today:
        return f"birth date {born.isoformat()} is in the future"
    expected = resident_id_check_digit(norm[:17])
    if norm[17] != expected:
        return f"wrong check digit {norm[17]} (the first 17 digits give {expected})"
    return None


_RESIDENT_ID_TYPE = re.compile(
    r"(中华人民共和国|中国)?(第二代|二代|第一代|一代)?(临时)?(居民)?身份证(件|号码|号)?"
    r"|二代证"
    r"|(prc|chinese|china)?(resident)?(identity|id)card"
)
_ID_TYPE_BRACKETS = re.compile(r"[()\[\]【】〔〕<>《》]")
_ID_TYPE_QUALIFIER = re.compile(r"\((第?二代|第?一代|正反面|复印件)\)")


def is_resident_id_type(id_type: str) -> bool:
    """Whether a form's 证件类型 names the mainland resident identity card (居民身份证).

    Accepts the ways forms write it: 居民身份证, 身份证, 二代身份证, 第二代居民身份证,
    中华人民共和国居民身份证, 临时居民身份证, 身份证号码, 二代证, ``ID card`` (spaces,
    full-width brackets and a qualifier such as （二代） ignored). Other documents — 护照,
    港澳居民来往内地通行证, 台湾居民来往大陆通行证, 外国人永久居留身份证, 居住证 — are not, and
    their numbers are not checked; nor is an empty type.
    """
    folded = _fold(id_type).lower()
    folded = _ID_TYPE_QUALIFIER.sub("", folded)
    folded = _ID_TYPE_BRACKETS.sub("", folded).rstrip(".。:：")
    return bool(folded) and _RESIDENT_ID_TYPE.fullmatch(folded) is not None


# --- 联系电话: a mobile number (填写说明三) ---------------------------------------------------

_PHONE_SEPARATORS = re.compile(r"[\s\-.()]")
_MOBILE = re.compile(r"1[3-9]\d{9}")


def mobile_problem(phone: str) -> str | None:
    """Why ``phone`` is not a mainland China mobile number, or None when it is.

    A mobile number is 11 digits starting ``13``–``19``, optionally after ``+86``, ``0086`` or
    ``86``; spaces, hyphens, dots and parentheses are ignored and full-width digits folded.
    A landline (0592-5653395) is a problem: the form asks for a mobile (填写说明三).
    """
    digits = _PHONE_SEPARATORS.sub("", unicodedata.normalize("NFKC", phone or ""))
    if not digits:
        return "empty phone number"
    if digits.startswith(("+86", "0086")):
        digits = digits[len("+86"):] if digits[0] == "+" else digits[len("0086"):]
    elif digits.startswith("86") and len(digits) == 13:  # 86 without + is a prefix only then
        digits = digits[2:]
    if not (digits.isascii() and digits.isdigit()):
        return "not a phone number (characters other than digits)"
    if digits.startswith("0") or (len(digits) != 11 and not digits.startswith("1")):
        return "not a mobile number (a landline or other number)"
    if len(digits) != 11:
        return f"a mobile number has 11 digits (this has {len(digits)})"
    if not _MOBILE.fullmatch(digits):
        return "not a mobile number (must start 13-19)"
    return None


# --- 邮件地址 (the address certificates are sent to) -------------------------------------------

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")  # RFC 5322 3.2.3, no quotes or comments
_ASCII_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _domain_problem(domain: str) -> str | None:
    if not domain:
        return "no domain after @"
    if domain.startswith(".") or domain.endswith("."):
        return "domain starts or ends with a dot"
    labels = domain.split(".")
    if len(labels) < 2:
        return "domain has no dot"
    if any(not label for label in labels):
        return "empty part (two dots) in the domain"
    for label in labels:
        if not all(c.isascii() and (c.isalnum() or c == "-") or not c.isascii() and c.isalnum()
                   for c in label):
            return f"domain part {label!r} has characters other than letters, digits, hyphens"
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return "domain is not a valid internationalised name"
    if len(ascii_domain) > 253:
        return "domain is too long"
    ascii_labels = ascii_domain.split(".")
    for label in ascii_labels:
        if not _ASCII_LABEL.fullmatch(label):
            return f"domain part {label!r} starts or ends with a hyphen, or is too long"
    if ascii_labels[-1].isdigit():
        return "domain ends in a number, not a top-level domain"
    return None


def email_problem(address: str) -> str | None:
    """Why ``address`` cannot receive the certificates, or None when it looks deliverable.

    The address is taken as written, outer whitespace trimmed (it is where the certificates
    go, so it is never silently rewritten): exactly one ``@``; a local part that is non-empty,
    has no spaces and is an RFC 5322 dot-atom (no quoted strings or comments; non-ASCII
    letters allowed, RFC 6531); a domain with at least one dot, no empty label, no leading or
    trailing dot, labels of letters, digits and hyphens that encode to IDNA (例子.中国 is fine).
    Full-width characters (``＠``, ``．``, ``ｑｑ``) left by a Chinese input method are a problem.
    A display name (``张三 <a@b.cn>``) is not an address.
    """
    addr = (address or "").strip()
    if not addr:
        return "empty address"
    if "<" in addr or ">" in addr:
        return "not a bare address (remove the name and angle brackets)"
    if any(c.isspace() for c in addr):
        return "address contains spaces"
    if "。" in addr:
        return "uses the Chinese full stop 。 instead of a dot"
    if unicodedata.normalize("NFKC", addr) != addr:
        return "address contains full-width characters"
    if addr.count("@") != 1:
        return "needs exactly one @" if "@" in addr else "no @ in the address"
    local, domain = addr.split("@")
    if not local:
        return "nothing before @"
    # Non-ASCII letters stand in as "a": the shape is then RFC 5322's dot-atom.
    ascii_local = "".join(c if c.isascii() else ("a" if c.isalnum() else "\x00") for c in local)
    if not _DOT_ATOM.fullmatch(ascii_local):
        return "local part (before @) is malformed (a dot at either end, two dots, or symbols)"
    return _domain_problem(domain)


# --- 申请单位 -------------------------------------------------------------------------------

_PAIRS = {"(": ")", "[": "]", "{": "}", "《": "》", "〈": "〉", "【": "】", "〔": "〕",
          "「": "」", "『": "』", "“": "”", "‘": "’", '"': '"', "'": "'", "<": ">"}


def _strip_enclosing(text: str) -> str:
    """Remove brackets or quotes that enclose the whole text (repeatedly), never a part of it."""
    while len(text) >= 2 and _PAIRS.get(text[0]) == text[-1]:
        opener, closer = text[0], text[-1]
        if opener != closer:
            depth = 0
            for i, c in enumerate(text):  # the opener must close at the very end
                depth += 1 if c == opener else -1 if c == closer else 0
                if depth == 0 and i < len(text) - 1:
                    return text
        elif opener in text[1:-1]:  # "a"b"c": not one quoted whole
            return text
        text = text[1:-1]
    return text


def normalise_company(name: str) -> str:
    """The organisation name as compared: NFKC (full-width parentheses and letters → ASCII),
    all whitespace (U+3000 included) removed, and brackets or quotes around the whole name
    removed (“厦门云帆网络科技有限公司” → 厦门云帆网络科技有限公司; 厦门云帆(集团)有限公司 keeps
    its parentheses).
    """
    return _strip_enclosing(_fold(name))


def same_company(a: str, b: str) -> bool:
    """Whether two names are the same organisation name once normalised, exactly.

    A short name is another name (云帆网络 is not 厦门云帆网络科技有限公司); an empty name
    matches nothing.
    """
    na, nb = normalise_company(a), normalise_company(b)
    return bool(na) and na == nb


# --- certificate serials -------------------------------------------------------------------

_SERIAL_SEPARATORS = re.compile(r"[\s:\-]")
_HEX = re.compile(r"[0-9a-f]+")


def normalise_serial(value: str | int | None) -> int | None:
    """A certificate serial number as an int, or None when ``value`` is not one.

    An int is taken as the number itself (negative: None). A string is read as **hex**, as
    serials are written in this domain (the form's 序号, ``openssl x509 -serial``, Windows'
    certificate dialog): case, whitespace, colons, hyphens, a ``0x`` prefix and leading zeros
    are ignored, full-width characters folded; so ``"1234"`` means 0x1234, never decimal 1234.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    text = _SERIAL_SEPARATORS.sub("", unicodedata.normalize("NFKC", value)).lower()
    if text.startswith("0x"):
        text = text[2:]
    if not _HEX.fullmatch(text):
        return None
    return int(text, 16)


def same_serial(a: str | int | None, b: str | int | None) -> bool:
    """Whether two serials are the same number (see ``normalise_serial``); False if either
    is unreadable."""
    na, nb = normalise_serial(a), normalise_serial(b)
    return na is not None and na == nb


# --- 须知四: a lost, leaked or damaged key -------------------------------------------------

KEY_LOSS_WORDS: tuple[str, ...] = ("丢失", "泄露", "泄漏", "损毁", "遗失", "被盗")
"""Words saying the private key is lost, leaked or damaged (revocation reason keyCompromise)."""


def key_loss_words(text: str) -> list[str]:
    """Which of ``KEY_LOSS_WORDS`` appear in ``text``, in that order, each once.

    Whitespace (a line break inside a word) is ignored. Negation is not understood:
    "私钥未泄露" still names 泄露, which is the safe side, since staff see it as urgent and
    decide.
    """
    folded = _fold(text)
    return [word for word in KEY_LOSS_WORDS if word in folded]
