"""One way to fail: every error a command meets becomes one line on stderr and an exit code.

Commands raise; `mailbot.cli.main` hands whatever escapes to `report`, which maps it by
meaning: 2 for a usage or configuration mistake, 1 for an operation that failed (no database
yet, a server that cannot be reached, a refused PKI operation, a file that cannot be read),
130 for Ctrl-C. `--debug` adds the traceback; without it there is never one.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import traceback

from mailbot.config import ConfigError as ConfigValueError
from mailbot.db import NoDatabase

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a reader that went away

START_HINT = ("run `mailbot init` here first, or name your configuration with --config FILE"
              " / 尚无数据库：请先运行 mailbot init，或用 --config 指定配置文件")


class CliError(Exception):
    """An error already worded for the person at the terminal (English / Chinese)."""

    exit_code = EXIT_FAILED
    zh = "操作失败"

    def __init__(self, message: str, zh: str | None = None) -> None:
        super().__init__(message)
        if zh is not None:
            self.zh = zh

    def line(self) -> str:
        return f"mailbot: {one_line(str(self))}" + (f" / {self.zh}" if self.zh else "")


class UsageError(CliError):
    """The command line is wrong: an unknown option, a missing argument, a bad choice."""

    exit_code = EXIT_USAGE
    zh = "用法错误"


class ConfigError(CliError):
    """The configuration cannot be read, or one of its values is wrong."""

    exit_code = EXIT_USAGE
    zh = "配置有误"


class OperationFailed(CliError):
    """The command was understood but could not be carried out."""

    exit_code = EXIT_FAILED


def one_line(text: str) -> str:
    """The first non-empty line of a message, trimmed (drivers add SQL and links below it)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text.strip()


def _sqlalchemy_line(exc: BaseException) -> tuple[int, str] | None:
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover - a dependency
        return None
    if not isinstance(exc, sa_exc.SQLAlchemyError):
        return None
    orig = getattr(exc, "orig", None)
    detail = one_line(str(orig if orig is not None else exc))
    if "no such table" in detail or ("relation" in detail and "does not exist" in detail):
        return EXIT_FAILED, (f"mailbot: the database lacks mailbot's tables ({detail}): run "
                             "`mailbot db upgrade`, or check --config / 数据库结构缺失")
    if isinstance(exc, sa_exc.OperationalError):
        return EXIT_FAILED, (f"mailbot: cannot open or reach the database: {detail}"
                             " / 无法连接数据库")
    if isinstance(exc, sa_exc.ArgumentError | sa_exc.NoSuchModuleError):
        return EXIT_USAGE, f"mailbot: bad [database] url: {detail} / 配置有误"
    return EXIT_FAILED, f"mailbot: database error: {detail} / 数据库错误"


def _mailbox_line(exc: BaseException) -> tuple[int, str] | None:
    from mailbot.mailbox.base import MailboxError
    from mailbot.mailbox.url import MailboxURLError

    if isinstance(exc, MailboxURLError):
        return EXIT_USAGE, f"mailbot: bad [mailbox] url: {one_line(str(exc))} / 配置有误"
    if isinstance(exc, MailboxError):
        return EXIT_FAILED, f"mailbot: mailbox: {one_line(str(exc))} / 邮箱操作失败"
    try:
        from imapclient.exceptions import IMAPClientError
    except ImportError:  # pragma: no cover - a dependency
        return None
    if isinstance(exc, IMAPClientError):
        return EXIT_FAILED, f"mailbot: mailbox server: {one_line(str(exc))} / 邮箱服务器错误"
    return None


def _pki_line(exc: BaseException) -> tuple[int, str] | None:
    from mailbot.pki.errors import PkiError

    if isinstance(exc, PkiError):
        return EXIT_FAILED, f"mailbot: {one_line(str(exc))} / 证书操作失败"
    return None


def _outbox_line(exc: BaseException) -> tuple[int, str] | None:
    from mailbot.outbox.render import TemplateError

    if isinstance(exc, TemplateError):  # the operator's templates_dir: a configuration matter
        return EXIT_USAGE, f"mailbot: bad mail template: {one_line(str(exc))} / 邮件模板有误"
    return None


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line for an exception, chosen by what it means."""
    if isinstance(exc, CliError):
        return exc.exit_code, exc.line()
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "mailbot: interrupted / 已中断"
    if isinstance(exc, NoDatabase):
        return EXIT_FAILED, f"mailbot: {exc}: {START_HINT}"
    if isinstance(exc, ConfigValueError):
        return EXIT_USAGE, f"mailbot: bad configuration: {one_line(str(exc))} / 配置有误"
    from mailbot.app.instance import InstanceLocked

    if isinstance(exc, InstanceLocked):  # a second `run` on one mailbox and database
        return EXIT_FAILED, f"mailbot: {one_line(str(exc))} / 该邮箱已由另一个 mailbot run 服务"
    for specific in (_sqlalchemy_line, _mailbox_line, _pki_line, _outbox_line):
        found = specific(exc)
        if found is not None:
            return found
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror | ssl.SSLError):
        return EXIT_FAILED, f"mailbot: cannot reach the server: {_os_text(exc)} / 无法连接服务器"
    if isinstance(exc, OSError):
        return EXIT_FAILED, f"mailbot: {_os_text(exc)} / 文件或系统操作失败"
    if isinstance(exc, ModuleNotFoundError):
        return EXIT_FAILED, (f"mailbot: module {exc.name!r} is not installed: reinstall mailbot"
                             " (pip install .) / 缺少模块")
    return EXIT_FAILED, (f"mailbot: unexpected error: {type(exc).__name__}: "
                         f"{one_line(str(exc))} (--debug shows where) / 内部错误")


def _os_text(exc: OSError) -> str:
    if exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return one_line(str(exc)) or type(exc).__name__


def report(exc: BaseException, *, debug: bool = False) -> int:
    """Print the exception as one line (and the traceback first with --debug); the exit code."""
    code, line = describe(exc)
    try:
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(line, file=sys.stderr)
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed too: nothing left to tell
        pass
    return code


def quiet_stdout() -> None:
    """stdout was closed by the reader (`| head`): point it at /dev/null so the exit is quiet.

    As the Python documentation on SIGPIPE recommends: later flushes (at interpreter exit)
    then write nowhere instead of raising BrokenPipeError again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (tests capture stdout)
        pass
