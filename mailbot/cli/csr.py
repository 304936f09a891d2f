"""`mailbot csr check FILE [--json]`: check a certificate request before sending it.

Exit 0 valid, 1 invalid or unreadable, 2 usage error (including a missing file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mailbot.pki.csr import CsrReport, check_csr

# Chinese labels for the summary; the English detail comes from the finding itself.
CODE_ZH = {
    "csr_unreadable": "无法识别为证书请求文件",
    "csr_not_sm2": "不是 SM2 密钥（RSA 自 2022-07-01 起不再受理）",
    "csr_bad_signature": "请求签名验证失败",
    "csr_wrong_sm2_id": "签名使用了空的 SM2 用户标识，请用 distid:1234567812345678 重新生成",
    "csr_bad_public_key": "SM2 公钥无效",
    "csr_duplicate_key": "该公钥已签发过证书，请重新生成密钥对",
    "csr_unknown_critical_attribute": "请求含有无法识别的关键扩展",
    "csr_encoding_quirk": "编码不规范（不影响受理）",
    "csr_empty_subject": "主题为空（不影响受理）",
    "csr_temp_key_unreadable": "CFCA 临时公钥属性无法解析（不影响受理）",
}


def register(sub: argparse._SubParsersAction) -> None:
    csr = sub.add_parser("csr", help="certificate requests / 证书请求")
    csr_sub = csr.add_subparsers(dest="csr_command", metavar="ACTION")
    check = csr_sub.add_parser("check", help="check a CSR file (PEM, DER, base64) / 检查证书请求")
    check.add_argument("file", metavar="FILE", help="the request file, or - for stdin")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.set_defaults(func=cmd_check)
    csr.set_defaults(func=lambda args: _usage(csr))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def summary(report: CsrReport) -> str:
    """A short bilingual human summary of a report."""
    if report.valid:
        head = "VALID: SM2 certificate request, signature OK / 证书请求有效（SM2，签名正确）"
    else:
        head = "INVALID certificate request / 证书请求无效"
    lines = [head, f"  algorithm / 算法: {report.algorithm}",
             f"  subject / 主题:   {report.subject or '(empty / 空)'}"]
    for f in report.findings:
        zh = CODE_ZH.get(f.code, "")
        lines.append(f"  [{f.severity}] {f.code}: {f.detail}" + (f" / {zh}" if zh else ""))
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        path = Path(args.file)
        if not path.is_file():
            print(f"mailbot csr check: no such file: {args.file} / 文件不存在", file=sys.stderr)
            return 2
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"mailbot csr check: cannot read {args.file}: {exc.strerror} / 文件无法读取",
                  file=sys.stderr)
            return 1
    report = check_csr(data)
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        print(summary(report))
    return 0 if report.valid else 1
