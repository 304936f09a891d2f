"""Time analyse_message on one realistic ~300 KB application (form .docx + 4 scans + SM2 CSR).

Run from the repo root: `python bench/intake_analyse_timing.py [N]` (needs the OpenSSL CLI).
Prints ms/message on one core, and the stdlib's full parse+decode of the same bytes for scale.
"""

from __future__ import annotations

import email
import email.policy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailbot.config import load_rule_settings  # noqa: E402
from mailbot.intake.analyse import analyse_message  # noqa: E402
from tests.golden.make_golden import DOCX, FIELDS, ORG  # noqa: E402
from tests.support.mailbuilders import Att, Mail, build, jpeg, make_form, make_sm2, pdf  # noqa: E402


def application() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        sm2 = make_sm2(Path(tmp), ORG)
    scan = os.urandom  # incompressible, like real scans
    return build(Mail(subject=f"{ORG}+数字证书申办", attachments=[
        Att("中国电子口岸数字证书申请表.docx", make_form(FIELDS), DOCX),
        Att("营业执照.pdf", pdf() + scan(60000), "application/pdf"),
        Att("法定代表人身份证.jpg", jpeg()[:-2] + scan(50000), "image/jpeg"),
        Att("经办人身份证.jpg", jpeg()[:-2] + scan(50000), "image/jpeg"),
        Att("商用密码产品认证证书.pdf", pdf() + scan(60000), "application/pdf"),
        Att("server.csr", sm2.csr_pem, "application/octet-stream", "ascii")]))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    raw = application()
    settings = load_rule_settings()
    facts = analyse_message(raw, settings)
    assert facts.kind == "new" and facts.missing == [] and facts.csr and facts.csr.valid
    times = []
    for _ in range(n):
        t = time.perf_counter()
        analyse_message(raw, settings)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(50):
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        for part in msg.walk():
            part.get_payload(decode=True)
    stdlib = (time.perf_counter() - t) / 50
    print(f"message {len(raw) / 1024:.0f} KB; analyse_message median "
          f"{statistics.median(times) * 1000:.2f} ms, mean {statistics.mean(times) * 1000:.2f} ms"
          f" over {n}; stdlib parse+decode alone {stdlib * 1000:.2f} ms")


if __name__ == "__main__":
    main()
