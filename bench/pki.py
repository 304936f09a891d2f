#!/usr/bin/env python3
"""PKI benchmark (issue 4): SM2 verify and CSR checks, as ratios to OpenSSL in the same run.

    python3 bench/pki.py [--seconds 3] [--json]

Verify half (this file's first sections):
  1. `openssl speed -seconds S sm2`: OpenSSL's SM2 verifies per second (the reference);
  2. mailbot.pki.sm2.verify (Z, e, strict checks, backend) per second, for every backend;
  3. mailbot.pki.csr.check_csr on an OpenSSL-made SM2 CSR per second (decode, parse, verify);
  4. a loop of `openssl req -verify -vfyopt distid:...` processes on the same CSR per second.
Each figure is printed with its ratio to OpenSSL (time per op ours / time per op OpenSSL).
Target: SM2 verify within 5x OpenSSL's time.

Other sections (e.g. certificate pairs issued per second) add themselves to SECTIONS: a section
is a function (ctx: dict) -> list[Row]; ctx holds shared facts such as "openssl_verify_per_s".
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from timing import rate  # noqa: E402  (bench/timing.py)

from mailbot.pki import csr, sm2  # noqa: E402

STD_ID = "distid:1234567812345678"


@dataclass
class Row:
    name: str
    per_second: float
    reference: str = ""          # what the ratio compares against
    ratio: float | None = None   # our time per op / reference time per op (lower is better)
    note: str = ""


Section = Callable[[dict], list[Row]]
SECTIONS: list[Section] = []


def section(fn: Section) -> Section:
    SECTIONS.append(fn)
    return fn




def openssl_speed_sm2(seconds: float) -> tuple[float, float]:
    """(sign/s, verify/s) from `openssl speed -seconds N sm2`."""
    out = subprocess.run(["openssl", "speed", "-seconds", str(max(1, round(seconds))), "sm2"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    m = re.search(r"SM2 \(\w+\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"cannot read `openssl speed sm2` output:\n{out}")
    return float(m.group(1)), float(m.group(2))


def make_openssl_csr(workdir: Path) -> Path:
    key, path = workdir / "bench.key", workdir / "bench.csr"
    subprocess.run(["openssl", "genpkey", "-algorithm", "SM2", "-out", str(key)], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", str(key), "-sm3", "-sigopt", STD_ID,
                    "-subj", "/C=CN/O=Bench Co/CN=bench.example.cn", "-out", str(path)],
                   check=True, capture_output=True)
    return path


@section
def verify_section(ctx: dict) -> list[Row]:
    seconds = ctx["seconds"]
    ossl_sign, ossl_verify = openssl_speed_sm2(seconds)
    ctx["openssl_sign_per_s"], ctx["openssl_verify_per_s"] = ossl_sign, ossl_verify
    rows = [Row("openssl speed sm2: verify", ossl_verify, "itself", 1.0),
            Row("openssl speed sm2: sign", ossl_sign, "itself", 1.0)]
    d = sm2.generate_private_key()
    pub = sm2.public_key_of(d)
    msg = b"x" * 300  # about a request-info's size
    sig = sm2.sign(d, msg)
    default = sm2.backend_name().split()[0]
    for name in sorted(sm2.BACKENDS, key=lambda b: b != default):
        prev = sm2.use_backend(name)
        try:
            assert sm2.verify(pub, msg, sig)
            v = rate(lambda: sm2.verify(pub, msg, sig), seconds)
            s = rate(lambda: sm2.sign(d, msg), seconds / 2)
        finally:
            sm2.use_backend(prev)
        tag = " (default)" if name == default else ""
        rows.append(Row(f"mailbot sm2.verify [{name}]{tag}", v, "openssl speed sm2 verify",
                        ossl_verify / v))
        rows.append(Row(f"mailbot sm2.sign [{name}]{tag}", s, "openssl speed sm2 sign",
                        ossl_sign / s))
    return rows


@section
def csr_section(ctx: dict) -> list[Row]:
    seconds = ctx["seconds"]
    with tempfile.TemporaryDirectory(prefix="mailbot-bench-") as tmp:
        path = make_openssl_csr(Path(tmp))
        data = path.read_bytes()
        assert csr.check_csr(data).valid
        ours = rate(lambda: csr.check_csr(data), seconds)

        def openssl_req_verify() -> None:
            subprocess.run(["openssl", "req", "-in", str(path), "-verify", "-vfyopt", STD_ID,
                            "-noout"], check=True, capture_output=True)

        loop = rate(openssl_req_verify, seconds, min_ops=10)
    ossl_verify = ctx["openssl_verify_per_s"]
    return [
        Row("mailbot check_csr (PEM, SM2, verify)", ours, "openssl speed sm2 verify",
            ossl_verify / ours, "decode + lenient parse + strict verify"),
        Row("loop of `openssl req -verify` processes", loop, "mailbot check_csr",
            ours / loop, "ratio = its time per CSR / ours: process start dominates"),
    ]


@section
def issue_section(ctx: dict) -> list[Row]:
    """Certificate pairs (sign + enc cert + envelope) per second with the soft signer."""
    from mailbot import clock as _clock  # noqa: F401 - the issuance path reads the clock
    from mailbot.cases.approval import CaseApprovalCheck, approval_for_case
    from mailbot.cases.audit import append_audit
    from mailbot.cases.models import Case
    from mailbot.config import Config
    from mailbot.db import make_engine, session_factory, upgrade
    from mailbot.pki import issue
    from mailbot.pki.ca import init_ca

    seconds = ctx["seconds"]
    with tempfile.TemporaryDirectory(prefix="mailbot-bench-issue-") as tmp:
        work = Path(tmp)
        (work / "mailbot.toml").write_text(
            f'[paths]\nvar_dir = "{work / "var"}"\n[database]\n'
            f'url = "sqlite:///{work / "bench.sqlite3"}"\n', encoding="utf-8")
        cfg = Config.load(work / "mailbot.toml")
        ca = init_ca(cfg)
        engine = make_engine(cfg.database_url)
        upgrade(engine=engine)
        applicant = sm2.public_key_of(sm2.generate_private_key())
        serial = iter(range(1, 1_000_000))
        with session_factory(engine)() as s:

            def one_pair() -> None:
                # One approval gives one pair: each pair is its own approved case, and the
                # signer's approval check (cases) runs before both signatures, as in production.
                ref = f"XM-2026-{next(serial):04d}"
                case = Case(ref=ref, kind="new", state="approved", company="Bench Co")
                s.add(case)
                s.flush()
                append_audit(s, actor="bench", action="approve", case=case,
                             from_state="awaiting_confirmation", to_state="approved")
                approval = approval_for_case(s, ref, applicant)
                issue.issue_pair(s, ca, approval, CaseApprovalCheck(s), applicant,
                                 {"CN": "bench"}, company="Bench Co", crl_url=cfg.ca.crl_url)
                s.commit()

            ours = rate(one_pair, seconds)
        engine.dispose()

        # OpenSSL doing the same signing work: one `openssl x509 -req` process per certificate
        key = work / "var" / "ca" / "ca.key.pem"
        csr_path = make_openssl_csr(work)
        ext = work / "ext.cnf"
        ext.write_text("[sign]\nbasicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,nonRepudiation\n"
                       "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                       f"crlDistributionPoints=URI:{cfg.ca.crl_url}\n")
        ca_pem = work / "var" / "ca" / "ca.pem"

        def openssl_x509_req() -> None:
            subprocess.run(["openssl", "x509", "-req", "-in", str(csr_path), "-vfyopt", STD_ID,
                            "-CA", str(ca_pem), "-CAkey", str(key), "-sm3", "-sigopt", STD_ID,
                            "-set_serial", "0x1001", "-days", "3650", "-extfile", str(ext),
                            "-extensions", "sign", "-out", str(work / "o.crt")],
                           check=True, capture_output=True)

        ossl_cert = rate(openssl_x509_req, seconds, min_ops=10)
    ossl_sign = ctx.get("openssl_sign_per_s") or openssl_speed_sm2(seconds)[0]
    return [
        Row("mailbot issue_pair [soft signer] (pairs)", ours, "openssl speed sm2 sign x2",
            ossl_sign / 2 / ours,
            "2 certs + enc key + envelope + case, approval row and its check, per pair"),
        Row("loop of `openssl x509 -req` (certificates)", ossl_cert, "mailbot issue_pair",
            (1 / ossl_cert) * 2 * ours,
            "ratio = its time for 2 certificates / our time per pair"),
    ]


def run(seconds: float) -> tuple[list[Row], dict]:
    ctx: dict = {"seconds": seconds, "backend": sm2.backend_name()}
    rows: list[Row] = []
    for fn in SECTIONS:
        rows.extend(fn(ctx))
    return rows, ctx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows, ctx = run(args.seconds)
    if args.json:
        print(json.dumps({"backend": ctx["backend"], "rows": [asdict(r) for r in rows]},
                         indent=2))
        return 0
    print(f"SM2 backend: {ctx['backend']}")
    print(f"{'measurement':46} {'ops/s':>10} {'ms/op':>8}  {'ratio':>6}  vs")
    for r in rows:
        ratio = f"{r.ratio:6.2f}" if r.ratio is not None else "     -"
        print(f"{r.name:46} {r.per_second:10.0f} {1000 / r.per_second:8.3f}  {ratio}  "
              f"{r.reference}{'; ' + r.note if r.note else ''}")
    verify = next(r for r in rows if r.name.startswith("mailbot sm2.verify"))
    verdict = "OK" if verify.ratio is not None and verify.ratio <= 5 else "MISSED"
    print(f"target: SM2 verify within 5x OpenSSL's time -> {verify.ratio:.2f}x {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
