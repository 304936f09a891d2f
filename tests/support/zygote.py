"""`python3 -m mailbot.cli ...` without paying for the imports each time: a test-only zygote.

A fault test starts mailbot once per crash point, and most of a short `run --once` is Python
importing mailbot (SQLAlchemy, Alembic, fpdf, Jinja2: about a second). The zygote is one
process that imports all that once, then forks a fresh child per request; the child takes
the request's working directory and environment (MAILBOT_TEST_CRASH_AT included: it reloads
mailbot/faults.py, which reads the switch once, at import), points its stdout and stderr at
the request's files, and runs `mailbot.cli.main(argv)` as `python3 -m mailbot.cli` would.
The zygote waits for it and answers with its return code as subprocess gives it (-9 for a
child that SIGKILLed itself). It holds no thread, connection or engine: a fork copies
nothing in flight.

Protocol (stdin / stdout, one JSON object a line): {"argv", "cwd", "env", "out", "err"} ->
{"code"}. The zygote ends at the end of its input.

`Zygote` is the tests' side: `Zygote.start()`, `.run(argv, cwd=, env=)` -> (code, out, err),
`.close()`.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRELOAD = ("mailbot.cli.main", *(f"mailbot.cli.{m}" for m in (
    "setup", "cases", "ca", "daemon", "csr", "inspect", "outbox", "demo")),
    *(f"mailbot.app.{m}" for m in ("daemon", "jobs", "workspace", "instance", "outbox_job",
                                   "status")),
    "mailbot.outbox.notice", "mailbot.outbox.transport", "mailbot.mailbox.imap",
    "mailbot.mailbox.url", "mailbot.intake.analyse", "mailbot.faults")


def _child(request: dict) -> int:
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # the requests are the zygote's, not the child's
    os.close(null)
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, request["out"]), (2, request["err"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    importlib.reload(sys.modules["mailbot.faults"])  # the switch, read as at a fresh start
    from mailbot.cli.main import main

    sys.argv = ["mailbot", *request["argv"]]
    code = main(request["argv"])
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def serve() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    channel = os.fdopen(os.dup(1), "w")  # answers; the children get fds 1 and 2 of their own
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # nothing else may write into the answers
    os.close(null)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            except BaseException:  # noqa: BLE001 - the child must never return into the loop
                traceback.print_exc()
            finally:
                os._exit(code)
        _pid, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        channel.write(json.dumps({"code": code}) + "\n")
        channel.flush()


class Zygote:
    """The tests' handle on a zygote process (module docstring)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.zygote"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=REPO, env=env)
        self.tmp = Path(tempfile.mkdtemp(prefix="mailbot-zygote-"))

    def run(self, argv: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        out, err = self.tmp / "out", self.tmp / "err"
        self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": env,
                                          "out": str(out), "err": str(err)}) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the zygote died ({self.proc.poll()})")
        return (json.loads(answer)["code"], out.read_text(errors="replace"),
                err.read_text(errors="replace"))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        for p in self.tmp.iterdir():
            p.unlink()
        self.tmp.rmdir()


if __name__ == "__main__":
    serve()
