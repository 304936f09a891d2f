"""What the command line writes on stderr besides its one-line errors: logs and progress.

Logs are text (`time LEVEL logger: message`, the default) or JSON (`--log-format json`,
$MAILBOT_LOG_FORMAT): one object per line with `time` (ISO 8601, UTC), `level`, `logger`,
`message`, whatever a log call passes in `extra=` (e.g. `{"case": "XM-2026-0007"}`), and
`exception` when there is one. Either way a filter on the handler takes secrets out first:
a password in a URL (`user:***@`), the values of the password and passphrase variables, and
PEM private-key blocks. What commands print on stderr themselves (notices, warnings, the
one-line error) passes through the same redaction, and with JSON logs becomes JSON too.

Progress (`ProgressLine`): long staff commands (`reprocess`, `cases new --from-dir`) say how
far they are on stderr, at most every 2 s, then a final line; stdout keeps their summary.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote, unquote

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
MIN_SECRET_LENGTH = 4  # a shorter "secret" would blank out ordinary words; none is that short

# scheme://user:password@host: the password runs to the last '@' of the word (an unencoded
# '@' in a password is accepted by the mailbox URL parser too), so too much is hidden, never
# too little.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@\"'<>]*):(?P<secret>[^\s\"'<>]*)@")
_PEM_KEY = re.compile(
    r"-----BEGIN (?P<kind>[A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END (?P=kind)PRIVATE KEY-----|\Z)",
    re.DOTALL)
_SECRET_VARIABLE = re.compile(r"^MAILBOT_\w*(?:PASSWORD|PASSPHRASE)$")

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_OURS = "_mailbot_handler"  # marks the handler set_up_logging installed


def secret_variables(environ: Mapping[str, str] | None = None,
                     names: Iterable[str] = ()) -> list[str]:
    """The values to hide: $MAILBOT_*PASSWORD / *PASSPHRASE, and the variables in `names`
    (the configuration's *_env keys may name others)."""
    env = os.environ if environ is None else environ
    wanted = {n for n in env if _SECRET_VARIABLE.match(n)} | {n for n in names if n}
    values = {env[n] for n in wanted if len(env.get(n) or "") >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)  # the longest first: no half-masked values


class Redactor:
    """Takes secrets out of a text; see the module docstring for which."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        found = set(self.secrets)
        for s in secrets:
            if len(s) >= MIN_SECRET_LENGTH:
                found.update({s, quote(s, safe="")})  # as typed, and as written in a URL
        self.secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _PEM_KEY.sub(lambda m: f"-----BEGIN {m['kind']}PRIVATE KEY----- {MASK} "
                                      f"-----END {m['kind']}PRIVATE KEY-----", text)
        return _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)


class RedactingFilter(logging.Filter):
    """On a handler: every record it emits has its message, exception text, stack and string
    `extra` values redacted (the record is rendered here, so its args are consumed)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: logging reports it itself
            return True
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, self._clean(value))
        return True

    def _clean(self, value: Any) -> Any:
        """An `extra` value redacted: strings, and the strings inside lists and dicts."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list | tuple):
            cleaned = [self._clean(v) for v in value]
            return cleaned if isinstance(value, list) else tuple(cleaned)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the record's extras,
    exception / stack when present."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
                            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in doc:
                doc[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, ensure_ascii=False, default=str)


class StderrLines(io.TextIOBase):
    """sys.stderr while the CLI's logging is set up: every line a command prints there (a
    notice, a warning, the one-line error) is redacted like the logs; under `--log-format
    json` it goes out as a JSON object like a log record's (logger `mailbot.cli`), so stderr
    stays one object per line."""

    def __init__(self, target: IO[str], redactor: Redactor, *, as_json: bool) -> None:
        super().__init__()
        self.target, self.redact, self.as_json = target, redactor, as_json
        self.level = "INFO"  # main() says ERROR before it prints the error line
        self._pending = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self._emit(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._emit(self._pending)
                self._pending = ""
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return not self.as_json and self.target.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", None) or "utf-8"

    def _emit(self, line: str) -> None:
        if not self.as_json:
            self.target.write(self.redact(line) + "\n")
            return
        if not line.strip():
            return
        doc = {"time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "level": self.level, "logger": "mailbot.cli", "message": self.redact(line)}
        self.target.write(json.dumps(doc, ensure_ascii=False) + "\n")


class _State:
    format = "text"
    redactor = Redactor()
    stderr: IO[str] | None = None  # the real stderr while sys.stderr is a StderrLines


def log_format(value: str) -> str:
    """argparse type of --log-format (and $MAILBOT_LOG_FORMAT)."""
    word = value.strip().lower()
    if word not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(
            f"invalid log format {value!r} (choose from {', '.join(LOG_FORMATS)})")
    return word


def set_up_logging(level: str, fmt: str = "text", *, stream: IO[str] | None = None) -> None:
    """The CLI's logging: one stderr handler on the root logger, with the redacting filter.

    As logging.basicConfig does, nothing is changed while the root logger has handlers of
    someone else's (a test runner's capture, an embedding program's set-up).
    """
    restore_stderr()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
            handler.close()
    _State.format = fmt
    _State.redactor = Redactor(secret_variables())
    if root.handlers:
        return
    target = stream or sys.stderr
    handler = logging.StreamHandler(target)
    setattr(handler, _OURS, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter(_State.redactor))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))
    if stream is None:  # what commands print on stderr is redacted too (and JSON with json)
        _State.stderr, sys.stderr = sys.stderr, StderrLines(sys.stderr, _State.redactor,
                                                            as_json=fmt == "json")


def error_lines() -> None:
    """What is printed on stderr from now on is the command's error (JSON level ERROR)."""
    if isinstance(sys.stderr, StderrLines):
        sys.stderr.flush()
        sys.stderr.level = "ERROR"


def restore_stderr() -> None:
    """sys.stderr back to what it was before set_up_logging (at the end of main)."""
    if _State.stderr is not None:
        wrapper, sys.stderr, _State.stderr = sys.stderr, _State.stderr, None
        try:
            wrapper.flush()
        except (OSError, ValueError):
            pass


def url_password(url: str) -> str | None:
    """The password written in a URL's user part (percent-decoded), if any."""
    _, sep, rest = url.strip().partition("://")
    if not sep:
        return None
    rest = rest.partition("?")[0]
    at = rest.rfind("@")
    user, colon, password = rest[:max(at, 0)].partition(":")
    if at <= 0 or not colon or not password or password == "{password}":  # a placeholder
        return None
    return unquote(password)


def protect(names: Iterable[str] = (), urls: Iterable[str] = ()) -> None:
    """Also hide the values of these environment variables and the passwords written in these
    URLs (the configuration's *_env keys and URLs, known once it is read)."""
    found = secret_variables(names=names)
    found += [pw for pw in (url_password(u) for u in urls) if pw]
    _State.redactor.add(found)


# -- progress ------------------------------------------------------------------------------
class ProgressLine:
    """Progress of a long staff command on stderr, at most one line every `every` seconds
    (a state that has not changed: every `quiet` seconds), then a final line (`finish`).

    Call it as `progress(done, total, what)` from any thread; nothing is printed during the
    first `every` seconds, so a quick command shows only its final line. With JSON logs the
    lines are log records (logger `mailbot.progress`) so stderr stays one object per line.
    """

    def __init__(self, label: str, *, every: float = 2.0, quiet: float = 10.0,
                 stream: IO[str] | None = None) -> None:
        self.label, self.every, self.quiet = label, every, quiet
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._state: tuple[int, int, str] | None = None
        self._shown: tuple[int, int, str] | None = None
        self._last = self.started  # when a line was last printed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> ProgressLine:
        self._ticker = threading.Thread(target=self._tick, name="mailbot-progress", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None

    def __call__(self, done: int, total: int, what: str) -> None:
        with self._lock:
            self._state = (done, total, what)
        self._maybe_print()

    def finish(self, summary: str | None = None) -> None:
        """The final line: `summary`, else the last state, with the time taken."""
        self.__exit__()
        with self._lock:
            state = self._state
        text = summary or (self._describe(*state) if state else "finished")
        self._emit(f"{self.label}: done: {text} in {self._elapsed()}", state)

    @staticmethod
    def _describe(done: int, total: int, what: str) -> str:
        return f"{done}/{total} {what}" if total else what

    def _elapsed(self) -> str:
        seconds = time.monotonic() - self.started
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"

    def _tick(self) -> None:
        while not self._stop.wait(max(min(self.every, 0.5), 0.05)):
            self._maybe_print()

    def _maybe_print(self) -> None:
        with self._lock:
            state, clock = self._state, time.monotonic()
            if state is None or clock - self._last < self.every:
                return
            if state == self._shown and clock - self._last < self.quiet:
                return
            self._shown, self._last = state, clock
        self._emit(f"{self.label}: {self._describe(*state)} ({self._elapsed()})", state)

    def _emit(self, line: str, state: tuple[int, int, str] | None) -> None:
        if _State.format == "json":
            done, total = (state[0], state[1]) if state else (0, 0)
            logging.getLogger("mailbot.progress").info(line, extra={"done": done,
                                                                    "total": total})
            return
        try:
            print(line, file=self.stream, flush=True)
        except (OSError, ValueError):  # stderr went away: progress is no reason to fail
            pass
