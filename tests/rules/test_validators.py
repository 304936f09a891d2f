"""The form-field validators: credit code, ID number, mobile, address, company, serial, key loss.

Valid credit codes and ID numbers are built here from the standards' own algorithms, written
out again independently of the module (GB 32100-2015 and GB 11643-1999 / ISO 7064 MOD 11-2),
so a wrong weight or table in the module cannot pass its own test.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailbot import clock
from mailbot.rules.validators import (
    KEY_LOSS_WORDS,
    email_problem,
    in_district,
    is_resident_id_type,
    is_uscc_length,
    key_loss_words,
    mobile_problem,
    normalise_company,
    normalise_serial,
    resident_id_check_digit,
    resident_id_problem,
    same_company,
    same_serial,
    uscc_check_char,
    uscc_problem,
    uscc_region,
)

# --- independent implementations of the two check algorithms -------------------------------

# GB 32100-2015 table 2: the code characters and their values (I, O, S, V, Z are not used).
GB32100_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
# GB 32100-2015 table 3: weight of position i is 3^(i-1) mod 31.
GB32100_WEIGHTS = [pow(3, i, 31) for i in range(17)]


def gb32100_check(first17: str) -> str:
    """C18 = 31 - (sum of value*weight mod 31); 31 is written as 0."""
    total = sum(GB32100_CHARS.index(c) * w for c, w in zip(first17, GB32100_WEIGHTS, strict=True))
    c18 = 31 - total % 31
    return GB32100_CHARS[0 if c18 == 31 else c18]


def make_uscc(region: str, authority: str = "9", kind: str = "1", body: str = "MA2XNB7K3") -> str:
    head = authority + kind + region + body
    return head + gb32100_check(head)


# ISO 7064 MOD 11-2: weight of position i (counting from the right, check digit = 1) is 2^(i-1)
# mod 11; the check digit a1 makes the full sum ≡ 1 (mod 11), 10 written X.
def iso7064_mod11_2(first17: str) -> str:
    total = sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(first17))
    for digit in range(11):
        if (total + digit) % 11 == 1:
            return "X" if digit == 10 else str(digit)
    raise AssertionError("unreachable")


def make_id(region: str = "350203", birth: str = "19900307", seq: str = "123") -> str:
    head = region + birth + seq
    return head + iso7064_mod11_2(head)


def test_the_independent_tables_match_the_published_ones() -> None:
    assert GB32100_WEIGHTS == [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]
    assert [pow(2, 17 - i, 11) for i in range(17)] == [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10,
                                                       5, 8, 4, 2]
    # The worked examples printed with GB 11643-1999.
    assert iso7064_mod11_2("11010519491231002") == "X"
    assert iso7064_mod11_2("44052418800101001") == "4"


# --- 统一社会信用代码 -----------------------------------------------------------------------

XIAMEN = make_uscc("350200")
SHANGHAI = make_uscc("310000", authority="5", kind="2", body="0000000AB")


@pytest.mark.parametrize("code", [
    XIAMEN, SHANGHAI, make_uscc("350211"), make_uscc("350583", "Y", "1"),
    "91110108551385082Q", "9131000063159284XQ",  # codes published by companies
])
def test_valid_credit_codes_pass(code: str) -> None:
    assert uscc_problem(code) is None
    assert is_uscc_length(code)
    assert uscc_check_char(code[:17]) == code[17]


def test_a_credit_code_is_normalised_before_it_is_checked() -> None:
    full_width = XIAMEN.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)})
    assert full_width != XIAMEN
    for written in (XIAMEN.lower(), f" {XIAMEN[:6]} {XIAMEN[6:]} ", full_width,
                    f"\u3000{XIAMEN}\u3000", f"{XIAMEN[:9]}\t{XIAMEN[9:]}\n"):
        assert uscc_problem(written) is None, written
        assert is_uscc_length(written)
        assert uscc_region(written) == "350200"


def test_a_wrong_check_character_is_named() -> None:
    wrong = XIAMEN[:17] + GB32100_CHARS[(GB32100_CHARS.index(XIAMEN[17]) + 1) % 31]
    problem = uscc_problem(wrong)
    assert problem and "check character" in problem and XIAMEN[17] in problem
    assert is_uscc_length(wrong)  # 18 characters: org_code_invalid, not org_code_not_uscc


@pytest.mark.parametrize("letter", list("IOZSV"))
def test_letters_outside_the_charset_fail(letter: str) -> None:
    code = XIAMEN[:10] + letter + XIAMEN[11:]
    problem = uscc_problem(code)
    assert problem and "characters outside" in problem and letter in problem
    assert is_uscc_length(code)


def test_the_region_must_be_digits() -> None:
    head = "91" + "35A200" + "MA2XNB7K3"
    problem = uscc_problem(head + gb32100_check(head))
    assert problem and "administrative division" in problem


@pytest.mark.parametrize("code", ["", "   ", "12345678-9", "350200123456789", XIAMEN + "1",
                                  XIAMEN[:17], "MA2XNB7K3"])
def test_codes_of_other_lengths_are_not_credit_codes(code: str) -> None:
    assert not is_uscc_length(code)
    assert uscc_problem(code) is not None
    assert uscc_region(code) == ""
    assert not in_district(code)


def test_region_and_district() -> None:
    assert uscc_region(XIAMEN) == "350200"
    assert uscc_region(SHANGHAI) == "310000"
    for region in ("350200", "350203", "350583", "350681", "350802"):
        assert in_district(make_uscc(region)), region
    for region in ("310000", "350100", "350300", "350400", "350700", "440300"):
        assert not in_district(make_uscc(region)), region
    assert in_district(SHANGHAI, prefixes=("31",))
    assert not in_district(XIAMEN, prefixes=())


_uscc_char = st.sampled_from(GB32100_CHARS)
_uscc_head = st.builds(
    lambda a, t, r, b: a + t + r + b,
    _uscc_char, _uscc_char,
    st.text(alphabet="0123456789", min_size=6, max_size=6),
    st.text(alphabet=GB32100_CHARS, min_size=9, max_size=9),
)


@given(_uscc_head)
def test_every_code_with_the_right_check_character_passes(head: str) -> None:
    assert uscc_problem(head + gb32100_check(head)) is None


@given(_uscc_head, st.integers(0, 17), _uscc_char)
def test_any_single_character_change_fails(head: str, position: int, char: str) -> None:
    code = head + gb32100_check(head)
    if code[position] == char:
        char = GB32100_CHARS[(GB32100_CHARS.index(char) + 1) % 31]
    changed = code[:position] + char + code[position + 1:]
    assert uscc_problem(changed) is not None


# --- 居民身份证号码 -------------------------------------------------------------------------

SIMING = make_id()  # Xiamen Siming district, born 1990-03-07


@pytest.mark.parametrize("number", [
    SIMING, make_id("310101", "20000229"), make_id("350206", "19000101", "002"),
    "11010519491231002X", make_id("440524", "19800101", "001"),
])
def test_valid_id_numbers_pass(number: str) -> None:
    assert resident_id_problem(number) is None
    assert resident_id_check_digit(number[:17]) == number[17]


def test_an_id_number_with_check_digit_x_is_written_any_way() -> None:
    x_number = "11010519491231002X"
    assert resident_id_problem(x_number.lower()) is None
    assert resident_id_problem("11010519491231002ｘ") is None  # full-width small x
    full_width = SIMING.translate({c: c + 0xFEE0 for c in range(0x30, 0x3A)})
    assert resident_id_problem(full_width) is None
    assert resident_id_problem(f"{SIMING[:6]} {SIMING[6:14]} {SIMING[14:]}") is None
    assert resident_id_problem(f"\u3000{SIMING}\n") is None


def test_a_wrong_check_digit_is_named() -> None:
    wrong = SIMING[:17] + ("0" if SIMING[17] != "0" else "1")
    problem = resident_id_problem(wrong)
    assert problem and "check digit" in problem and SIMING[17] in problem


@pytest.mark.parametrize(("birth", "reason"), [
    ("19900230", "not a real date"),
    ("19901301", "not a real date"),
    ("19000229", "not a real date"),  # 1900 was no leap year
    ("18991231", "before 1900"),
    ("20990101", "in the future"),
])
def test_the_birth_date_must_be_a_real_past_day(birth: str, reason: str) -> None:
    problem = resident_id_problem(make_id(birth=birth), today=date(2026, 11, 25))
    assert problem and reason in problem


def test_the_published_1880_example_has_a_good_check_digit_but_too_early_a_birth() -> None:
    assert resident_id_check_digit("44052418800101001") == "4"
    assert "before 1900" in (resident_id_problem("440524188001010014") or "")


def test_future_is_judged_by_the_daemon_clock_in_china(
        frozen_clock: clock.FrozenClock) -> None:
    # 16:30 UTC on 24 Nov is already 25 Nov in Xiamen: someone born that day is no error.
    frozen_clock.current = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)
    assert resident_id_problem(make_id(birth="20261125")) is None
    assert "future" in (resident_id_problem(make_id(birth="20261126")) or "")


@pytest.mark.parametrize(("number", "reason"), [
    ("", "empty"),
    ("350203900307123", "15-digit"),
    ("35020319900307123", "not 18"),
    ("3502031990030712345", "not 18"),
    ("35020319900307A234", "17 digits"),
    ("35020319900307123Y", "17 digits"),
    (make_id(region="990203"), "province"),
    (make_id(region="000000"), "province"),
])
def test_malformed_id_numbers_fail(number: str, reason: str) -> None:
    problem = resident_id_problem(number)
    assert problem and reason in problem


_id_head = st.builds(
    lambda province, county, born, seq: province + county + born.strftime("%Y%m%d") + seq,
    st.sampled_from(["11", "31", "35", "44", "65"]),
    st.text(alphabet="0123456789", min_size=4, max_size=4),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2020, 12, 31)),
    st.text(alphabet="0123456789", min_size=3, max_size=3),
)


@given(_id_head)
def test_every_id_number_with_the_right_check_digit_passes(head: str) -> None:
    assert resident_id_problem(head + iso7064_mod11_2(head), today=date(2026, 1, 1)) is None


@given(_id_head, st.integers(0, 17), st.sampled_from("0123456789X"))
def test_any_single_digit_change_of_an_id_number_fails(head: str, position: int,
                                                       char: str) -> None:
    number = head + iso7064_mod11_2(head)
    if number[position] == char:
        char = "0123456789X"[("0123456789X".index(char) + 1) % 11]
    changed = number[:position] + char + number[position + 1:]
    assert resident_id_problem(changed, today=date(2026, 1, 1)) is not None


@pytest.mark.parametrize("written", [
    "居民身份证", "身份证", "二代身份证", "第二代居民身份证", "中华人民共和国居民身份证",
    "临时居民身份证", "身份证号码", "二代证", " 居民身份证 ", "居民身份证（二代）",
    "【身份证】", "ID card", "Resident Identity Card", "身份证：",
])
def test_resident_id_types_are_recognised(written: str) -> None:
    assert is_resident_id_type(written)


@pytest.mark.parametrize("written", [
    "护照", "港澳居民来往内地通行证", "台湾居民来往大陆通行证", "外国人永久居留身份证",
    "港澳台居民居住证", "军官证", "", "  ", "营业执照", "身份证明",
])
def test_other_document_types_are_not_checked(written: str) -> None:
    assert not is_resident_id_type(written)


# --- 联系电话 -------------------------------------------------------------------------------

@pytest.mark.parametrize("phone", [
    "13812345678", "19912345678", "138 1234 5678", "138-1234-5678", "+86 13812345678",
    "+86-138-1234-5678", "0086 13812345678", "8613812345678", "(+86) 138 1234 5678",
    "１３８１２３４５６７８", "\u3000138\u30001234\u30005678",
])
def test_mobile_numbers_pass(phone: str) -> None:
    assert mobile_problem(phone) is None


@pytest.mark.parametrize(("phone", "reason"), [
    ("0592-5123456", "not a mobile number"),
    ("0592-5653395", "not a mobile number"),
    ("+86 0592 5123456", "not a mobile number"),
    ("5653395", "not a mobile number"),
    ("12812345678", "13-19"),
    ("1381234567", "11 digits"),
    ("138123456789", "11 digits"),
    ("", "empty"),
    ("13812345678 / 13912345678", "other than digits"),
    ("无", "other than digits"),
])
def test_other_numbers_are_not_mobiles(phone: str, reason: str) -> None:
    problem = mobile_problem(phone)
    assert problem and reason in problem


@given(st.sampled_from("3456789"), st.text(alphabet="0123456789", min_size=9, max_size=9),
       st.sampled_from(["", "+86", "+86 ", "0086", "86"]), st.sampled_from(["", " ", "-"]))
def test_any_mobile_number_passes_however_it_is_spaced(second: str, rest: str, prefix: str,
                                                      sep: str) -> None:
    number = "1" + second + rest
    assert mobile_problem(prefix + sep.join([number[:3], number[3:7], number[7:]])) is None


# --- 邮件地址 -------------------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "xmport@189.cn", "it.admin@yunfan-tech.com.cn", "a+certs@example.com", " ops@qq.com ",
    "用户@例子.中国", "admin@厦门云帆.公司", "x@xn--fiqs8s.cn", "O'Brien@example.ie",
])
def test_deliverable_addresses_pass(address: str) -> None:
    assert email_problem(address) is None


@pytest.mark.parametrize(("address", "reason"), [
    ("", "empty"),
    ("xmport189.cn", "no @"),
    ("a@b@189.cn", "exactly one @"),
    ("@189.cn", "nothing before @"),
    ("ops@", "no domain"),
    ("ops@localhost", "no dot"),
    ("ops@.189.cn", "dot"),
    ("ops@189.cn.", "dot"),
    ("ops@189..cn", "two dots"),
    ("ops @189.cn", "spaces"),
    ("ops@189 .cn", "spaces"),
    ("ops@qq。com", "full stop"),
    ("ops＠qq.com", "full-width"),
    ("ｏｐｓ@qq.com", "full-width"),
    (".ops@qq.com", "malformed"),
    ("o..ps@qq.com", "malformed"),
    ("o(p)s@qq.com", "malformed"),
    ('"o p"@qq.com', "spaces"),
    ("ops@-qq.com", "hyphen"),
    ("ops@q_q.com", "characters other than"),
    ("ops@10.0.0.1", "top-level"),
    ("张三 <ops@qq.com>", "bare address"),
])
def test_undeliverable_addresses_fail(address: str, reason: str) -> None:
    problem = email_problem(address)
    assert problem and reason in problem


# --- 申请单位 -------------------------------------------------------------------------------

FULL = "厦门云帆网络科技有限公司"


@pytest.mark.parametrize("written", [
    FULL, f" {FULL} ", "厦门 云帆网络\u3000科技有限公司", f"“{FULL}”", f"《{FULL}》",
    f"【{FULL}】", f'"{FULL}"', f"（{FULL}）", f"「“{FULL}”」",
])
def test_the_same_company_written_differently(written: str) -> None:
    assert normalise_company(written) == FULL
    assert same_company(written, FULL)


def test_parentheses_inside_a_name_are_kept_and_folded() -> None:
    assert normalise_company("厦门云帆（集团）有限公司") == "厦门云帆(集团)有限公司"
    assert same_company("厦门云帆（集团）有限公司", "厦门云帆(集团)有限公司")
    assert normalise_company("(厦门)云帆(集团)") == "(厦门)云帆(集团)"
    assert normalise_company("ＡＢＣ（厦门）有限公司") == "ABC(厦门)有限公司"


@pytest.mark.parametrize(("a", "b"), [
    ("云帆网络", FULL), ("厦门云帆网络科技有限公司厦门分公司", FULL),
    ("厦门云帆网络技术有限公司", FULL), ("", ""), ("  ", FULL),
])
def test_different_names_are_different(a: str, b: str) -> None:
    assert not same_company(a, b)


@given(st.text(max_size=30))
@example("Y\u00af")  # NFKC makes ¯ a space plus a combining macron
def test_normalising_a_company_twice_changes_nothing(name: str) -> None:
    once = normalise_company(name)
    assert normalise_company(once) == once


# --- certificate serials --------------------------------------------------------------------

@pytest.mark.parametrize(("a", "b"), [
    ("1A2B3C", "1a2b3c"), ("1a:2b:3c", "1A2B3C"), ("1A 2B 3C", "0x1a2b3c"),
    ("00001A2B3C", "1A2B3C"), ("0X1A2B3C", 0x1A2B3C), ("1234", 0x1234),
    ("１Ａ２Ｂ", "1a2b"), ("00", 0),
])
def test_same_serials(a: str | int, b: str | int) -> None:
    assert same_serial(a, b)
    assert same_serial(b, a)


@pytest.mark.parametrize(("a", "b"), [
    ("1A2B3C", "1A2B3D"), ("1234", 1234), ("", ""), ("xyz", "xyz"), ("1A2B", None),
    (-1, -1), ("0x", "0"),
])
def test_different_or_unreadable_serials(a: str | int | None, b: str | int | None) -> None:
    assert not same_serial(a, b)


def test_normalise_serial() -> None:
    assert normalise_serial("7E:3F:00:01") == 0x7E3F0001
    assert normalise_serial("1234") == 0x1234  # hex, never decimal
    assert normalise_serial(255) == 255
    assert normalise_serial("序号1234") is None
    assert normalise_serial(True) is None
    assert normalise_serial(None) is None


@given(st.integers(min_value=0, max_value=2**160 - 1), st.booleans(), st.booleans(),
       st.integers(0, 3))
def test_any_serial_matches_its_written_forms(n: int, upper: bool, colons: bool,
                                              zeros: int) -> None:
    text = "0" * zeros + format(n, "X" if upper else "x")
    if colons:
        text = text.rjust(len(text) + len(text) % 2, "0")
        text = ":".join(text[i:i + 2] for i in range(0, len(text), 2))
    assert normalise_serial(text) == n
    assert same_serial(text, n)
    assert same_serial("0x" + format(n, "x"), text)


# --- 须知四 ---------------------------------------------------------------------------------

def test_key_loss_words() -> None:
    assert key_loss_words("我单位服务器私钥丢失，申请注销") == ["丢失"]
    assert key_loss_words("私钥疑似泄露，设备损毁") == ["泄露", "损毁"]
    assert key_loss_words("密钥泄漏；U盾遗失；设备被盗") == ["泄漏", "遗失", "被盗"]
    assert key_loss_words("证书私钥丢\n失") == ["丢失"]  # a line break inside the word
    assert key_loss_words("厦门云帆网络科技有限公司+数字证书申办") == []
    assert key_loss_words("") == []


def test_key_loss_words_are_returned_once_in_a_fixed_order() -> None:
    text = "".join(reversed(KEY_LOSS_WORDS)) * 2
    assert key_loss_words(text) == list(KEY_LOSS_WORDS)
