"""The `mailbot` command: a thin argparse front that hands each subcommand to its own module."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from mailbot import __version__
from mailbot.config import Config

# Each module registers its subcommands with `register(subparsers)`.
COMMAND_MODULES: list[str] = [
    "mailbot.core_cli",
    "mailbot.cases.cli",
    "mailbot.pki.ca_cli",
    "mailbot.daemon_cli",
    "mailbot.pki.csr_cli",
    "mailbot.intake.inspect_cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailbot",
        description="xmport@189.cn email desk: SM2 certificate applications (数字证书申办邮件处理)",
    )
    parser.add_argument("--config", metavar="FILE",
                        help="TOML configuration (default: $MAILBOT_CONFIG, else embedded defaults"
                             " under ./var) / 配置文件")
    parser.add_argument("--log-level", default=os.environ.get("MAILBOT_LOG_LEVEL", "INFO"))
    parser.add_argument("--version", action="version", version=f"mailbot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        args.config = Config.load(args.config)
    except (OSError, ValueError) as exc:
        print(f"mailbot: cannot read configuration: {exc} / 配置文件无法读取", file=sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
