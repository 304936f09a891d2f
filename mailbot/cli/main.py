"""The `mailbot` command: a thin argparse front that hands each subcommand to its own module.

Errors are handled here, once: whatever a command raises is printed as one line by
`mailbot.cli.errors.report` (exit 2 usage or configuration, 1 a failed operation, 130
Ctrl-C); `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tomllib
from collections.abc import Sequence
from typing import NoReturn

from mailbot import __version__
from mailbot.cli.errors import EXIT_CLOSED_PIPE, ConfigError, UsageError, quiet_stdout, report
from mailbot.cli.logs import (
    LOG_FORMATS,
    error_lines,
    log_format,
    protect,
    restore_stderr,
    set_up_logging,
)
from mailbot.config import Config
from mailbot.config import ConfigError as ConfigValueError

# Each module registers its subcommands with `register(subparsers)`.
COMMAND_MODULES: list[str] = [
    "mailbot.cli.setup",
    "mailbot.cli.cases",
    "mailbot.cli.ca",
    "mailbot.cli.daemon",
    "mailbot.cli.csr",
    "mailbot.cli.inspect",
    "mailbot.cli.outbox",
    "mailbot.cli.demo",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (UsageError), not usage text and an exit."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.partition(" ")[2]  # "cases list" of "mailbot cases list"
        raise UsageError(f"{command + ': ' if command else ''}{message}"
                         f" (see `{self.prog} --help`)")


def log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid log level {value!r} (choose from {', '.join(LOG_LEVELS)})")
    return level


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mailbot",
        description="xmport@189.cn email desk: SM2 certificate applications (数字证书申办邮件处理)",
    )
    parser.add_argument("--config", metavar="FILE",
                        help="TOML configuration (default: $MAILBOT_CONFIG, else embedded defaults"
                             " under ./var) / 配置文件")
    parser.add_argument("--log-level", type=log_level, metavar="LEVEL",
                        default=os.environ.get("MAILBOT_LOG_LEVEL", "INFO"),
                        help=f"{', '.join(LOG_LEVELS)} (default: $MAILBOT_LOG_LEVEL, else INFO)")
    parser.add_argument("--log-format", type=log_format, metavar="FORMAT",
                        default=os.environ.get("MAILBOT_LOG_FORMAT", "text"),
                        help=f"{' or '.join(LOG_FORMATS)}: json is one object per line (default:"
                             " $MAILBOT_LOG_FORMAT, else text) / 日志格式")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error / 出错时显示调用栈")
    parser.add_argument("--version", action="version", version=f"mailbot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def load_config(path: str | None) -> Config:
    """The configuration, read and checked before any database or server is opened."""
    path = path or os.environ.get("MAILBOT_CONFIG") or None
    try:
        cfg = Config.load(path)
    except FileNotFoundError:
        raise ConfigError(f"cannot read configuration: no such file: {path}",
                          "配置文件无法读取") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {path}: {exc.strerror or exc}",
                          "配置文件无法读取") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read configuration: {path}: {exc}", "配置文件无法读取") from None
    except ConfigValueError as exc:
        raise ConfigError(f"bad configuration{f' in {path}' if path else ''}: {exc}") from None
    check_config(cfg, path)
    return cfg


def check_config(cfg: Config, path: str | None = None) -> None:
    """What lives in a layer: the mailbox URL's grammar, SQLAlchemy's, the rules files."""
    from mailbot.db import check_url
    from mailbot.mailbox.url import MailboxURLError, parse_mailbox_url
    from mailbot.rules.engine import load_rules
    from mailbot.rules.materials import configured_required

    where = f" in {path}" if path else ""
    try:
        parse_mailbox_url(cfg.mailbox.url, password_env=None)
    except MailboxURLError as exc:
        raise ConfigError(f"bad configuration{where}: [mailbox] url: {exc} (use "
                          "imaps://USER@host:993/INBOX, imap://host:143/INBOX?starttls, "
                          "imap://USER:PASS@127.0.0.1:PORT/INBOX or maildir:PATH)") from None
    try:
        check_url(cfg.database_url)
        configured_required(cfg.rules_dir)  # the rules files parse, their tables make sense
        load_rules(cfg.rules_dir)  # rules.toml: known rules, known parameters, right types
    except ConfigValueError as exc:
        raise ConfigError(f"bad configuration{where}: {exc}") from None


def protect_config(cfg: Config) -> None:
    """The logs hide the secrets this configuration names: its password variables' values
    and any password written in its URLs."""
    protect(names=(cfg.mailbox.password_env, cfg.smtp.password_env, cfg.database.password_env,
                   cfg.ca.key_passphrase_env, cfg.ca.sdf_password_env),
            urls=(cfg.mailbox.url, cfg.smtp.url, cfg.database.url))


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    set_up_logging(args.log_level, args.log_format)  # secrets are taken out of every line
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    args.config = load_config(args.config)
    protect_config(args.config)
    rc = int(args.func(args) or 0)
    sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in words[:words.index("--")] if "--" in words else "--debug" in words
    try:
        return _run(words)
    except BrokenPipeError:  # `mailbot status --json | head -1`: the reader has enough
        quiet_stdout()
        return EXIT_CLOSED_PIPE
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the one place errors end
        error_lines()  # with --log-format json the error line is a JSON object (level ERROR)
        return report(exc, debug=debug)
    finally:
        restore_stderr()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
