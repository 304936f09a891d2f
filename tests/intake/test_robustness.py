"""Hostile and broken input: analysis never raises, never hangs, keeps memory bounded."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbot.intake import analyse as analyse_mod
from mailbot.intake.analyse import analyse_message
from mailbot.intake.facts import KINDS, MATERIALS
from mailbot.intake.mime import MAX_PARTS
from tests.support.mailbuilders import Att, Mail, build, pdf, zip_bomb

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
BASE = (GOLDEN / "001.eml").read_bytes()
# Mutation bases: Foxmail GBK application, S/MIME, forwarded rfc822, zip, 163 raw 8-bit + body CSR.
BASES = {name: (GOLDEN / f"{name}.eml").read_bytes() for name in ("001", "003", "014", "015",
                                                                    "019")}


def check(raw: bytes, *, internal: bool = True) -> dict:
    """Analyse; with `internal` the guarded core runs bare so any exception is a failure."""
    if internal:
        facts = analyse_mod._analyse(raw, analyse_mod._default_settings(), None)
    else:
        facts = analyse_message(raw)
    data = facts.to_inspect_json()
    json.dumps(data, ensure_ascii=False)
    assert data["kind"] in KINDS
    assert all(r["material"] in MATERIALS for r in data["attachments"])
    assert all(f["severity"] in ("reject", "missing", "warn") for f in data["findings"])
    return data


mutation = st.tuples(st.sampled_from(["flip", "insert", "delete", "dup", "cut"]),
                     st.integers(min_value=0, max_value=20_000),
                     st.binary(min_size=1, max_size=64))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("base", sorted(BASES))
@given(ops=st.lists(mutation, min_size=1, max_size=8))
def test_mutated_messages_never_raise(base: str, ops) -> None:
    raw = bytearray(BASES[base])
    for op, pos, blob in ops:
        pos = min(pos, max(len(raw) - 1, 0))
        if op == "flip" and raw:
            raw[pos] ^= blob[0] or 0xFF
        elif op == "insert":
            raw[pos:pos] = blob
        elif op == "delete":
            del raw[pos:pos + len(blob)]
        elif op == "dup":
            raw[pos:pos] = raw[pos:pos + 200]
        elif op == "cut":
            del raw[pos:]
    check(bytes(raw))


@pytest.mark.timeout(120)
@given(st.binary(max_size=4096))
def test_binary_junk(raw: bytes) -> None:
    check(raw)


@pytest.mark.timeout(60)
@given(st.lists(st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=x\r\n", b"\r\n", b"--x\r\n", b"--x--\r\n",
    b"Content-Type: message/rfc822\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"Subject: =?gbk?B?1tDOxA==?=\r\n", b"Content-Disposition: attachment; filename*0*=gbk''%D6",
    b"; filename*1*=%D0.pdf\r\n", b"JVBERi0xLjQK\r\n", b"=?utf-8?Q?=E4=B8?=", b"\t folded\r\n",
    b"From: MAILER-DAEMON\r\n", b"Content-Type: application/zip; name=a.zip\r\n",
    b"UEsDBBQAAAAIAA==\r\n", b"-----BEGIN CERTIFICATE REQUEST-----\r\n"]), max_size=60))
def test_torture_fragments(pieces: list[bytes]) -> None:
    check(b"".join(pieces))


def test_fixed_torture_cases() -> None:
    cases = [
        b"", b"\r\n", b"\n\n\n", b"\x00" * 1000, b":" * 1000, b"Subject:\r\n\r\n",
        b"Content-Type: multipart/mixed\r\n\r\n--\r\n--\r\n",                  # no boundary
        b'Content-Type: multipart/mixed; boundary=""\r\n\r\n--\r\n--\r\n',    # empty boundary
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n" + b"--a\r\n" * 5000,
        b"Subject: " + b"=?gbk?B?" * 20000 + b"\r\n\r\n",
        b"X: " + b"a" * 2_000_000 + b"\r\n\r\nbody",                          # huge header
        b"".join(b"H%d: v\r\n" % i for i in range(20000)) + b"\r\nbody",
        b"Content-Type: text/plain; charset=no-such\r\n\r\n\xff\xfe\xfd",
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!",
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n=====",
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nM",
    ]
    for raw in cases:
        check(raw)
    assert [f["code"] for f in check(b"")["findings"]] == ["unparseable_message"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("depth", [200, 2000])
def test_deep_rfc822_chain(depth: int) -> None:
    msg = build(Mail(subject="厦门测试公司+数字证书申办",
                     attachments=[Att("营业执照.pdf", pdf(100), "application/pdf")]))
    for i in range(depth):
        msg = (b"Subject: Fwd %d\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"L%d\"\r\n\r\n--L%d\r\n"
               b"Content-Type: message/rfc822\r\n\r\n" % (i, i, i)) + msg + b"\r\n--L%d--\r\n" % i
    data = check(msg)
    assert data["kind"] == "unrelated"  # the application sits below the depth limit


@pytest.mark.timeout(60)
def test_deep_multipart_nesting_and_many_parts() -> None:
    body = b"Content-Type: text/plain\r\n\r\nx"
    for i in range(500):
        body = (b"Content-Type: multipart/mixed; boundary=\"n%d\"\r\n\r\n--n%d\r\n" % (i, i)
                + body + b"\r\n--n%d--\r\n" % i)
    check(b"Subject: deep\r\n" + body)
    many = b"".join(b"--m\r\nContent-Type: application/pdf; name=\"%d.pdf\"\r\n\r\n%%PDF\r\n" % i
                    for i in range(5000))
    data = check(b"Subject: many\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n" + many
                 + b"--m--\r\n")
    assert len(data["attachments"]) < MAX_PARTS


@pytest.mark.timeout(60)
def test_truncated_everywhere() -> None:
    step = max(1, len(BASE) // 97)
    for cut in range(0, len(BASE), step):
        check(BASE[:cut])




@pytest.mark.timeout(120)
def test_zip_bomb_is_refused_quickly_and_in_little_memory() -> None:
    bomb = zip_bomb()
    raw = build(Mail(subject="厦门测试公司+数字证书申办",
                     attachments=[Att("材料.zip", bomb, "application/zip", "ascii")]))
    tracemalloc.start()
    try:
        data = check(raw, internal=False)
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * len(raw) + 4 * 1024 * 1024, (peak, len(raw))
    assert not any(r["size"] >= 64 * 1024 * 1024 and r["material"] != "other"
                   for r in data["attachments"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["scan", "unknown"])
def test_memory_bounded_by_message_size(kind: str) -> None:
    """A 12 MB file: a scan is streamed; an unknown file is decoded once (bounded by 3x)."""
    payload = (b"%PDF-1.4\n" if kind == "scan" else b"") + os.urandom(12 * 1024 * 1024)
    raw = build(Mail(subject="厦门测试公司+数字证书申办",
                     attachments=[Att("营业执照.pdf" if kind == "scan" else "data.bin",
                                      payload, "application/octet-stream")]))
    analyse_message(raw)  # warm imports so they do not count
    tracemalloc.start()
    try:
        facts = analyse_message(raw)
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    limit = (0.5 if kind == "scan" else 3) * len(raw)
    assert peak < limit, (kind, peak, len(raw))
    assert [a.size for a in facts.attachments] == [len(payload)]
    if kind == "scan":
        assert facts.attachments[0].data is None  # never held


@pytest.mark.timeout(60)
def test_internal_error_still_yields_json(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a, **_k):
        raise RuntimeError("simulated bug")
    monkeypatch.setattr(analyse_mod, "parse_message", boom)
    data = analyse_message(BASE).to_inspect_json()
    assert data["kind"] == "unrelated"
    assert [f["code"] for f in data["findings"]] == ["unparseable_message"]
