#!/usr/bin/env python3
"""Intake benchmark (issue 3): mailbox -> archive -> facts -> cases, against a real Dovecot.

    python3 bench/intake.py [--messages 500] [--kb 300] [--big-mb 30] [--rounds 3] [--db URL]
    python3 bench/intake.py --messages 600 --replies   # issue 11: `run --once` with replies

1. starts its own Dovecot (tests/dovecot.py), APPENDs N application emails of ~300 KB
   (a filled .docx form, four PDF/JPEG scans, a real SM2 CSR made by OpenSSL);
2. times a bare imapclient BODY.PEEK[] fetch of the same messages (the reference rate);
3. times `mailbot run --once`'s mail job (Daemon.run_once with the later jobs left out): fetch,
   archive, record, move, analyse on every core, cases recorded and their answers queued in the
   outbox; prints messages/s and the ratio to the raw fetch rate; then times the outbox job
   alone: the answers rendered and written (file: delivery), answers/s; with --replies the
   whole `run --once` (every job, the acknowledgements written to a file: outbox) is timed;
4. in a child process, ingests one message with a 30 MB attachment and prints the peak RSS
   growth over the idle process (main process and parse worker), as a multiple of the size.
Targets: ratio >= 1/3; RSS growth < 4x the message size.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from email.message import EmailMessage
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from imapclient import IMAPClient  # noqa: E402

from bench.timing import PgSchema  # noqa: E402
from tests.support.dovecot import DovecotServer, ensure_vmail, free_port  # noqa: E402

# -- realistic applications ---------------------------------------------------------------

DOCX_CT = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
           '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
           '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
           'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
           '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
           'officedocument.wordprocessingml.document.main+xml"/></Types>')
DOCX_RELS = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
             '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
             '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
             'relationships/officeDocument" Target="word/document.xml"/></Relationships>')
W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def _cell(text: str) -> str:
    return f"<w:tc><w:p><w:r><w:t xml:space=\"preserve\">{text}</w:t></w:r></w:p></w:tc>"


def _uscc(first17: str) -> str:
    from mailbot.rules.validators import uscc_check_char

    return first17 + uscc_check_char(first17)


def _resident_id(first17: str) -> str:
    from mailbot.rules.validators import resident_id_check_digit

    return first17 + resident_id_check_digit(first17)


def make_form_docx(company: str, code: str, n: int) -> bytes:
    """The 申请表 as a filled table (label cell, value cell), as applicants type it in Word."""
    rows = [
        ["申请类别", "☑新办 □注销"],
        ["申请单位", company], ["机构代码", code], ["邮件地址", f"handler{n}@example{n}.cn"],
        ["法定代表人/主要负责人", f"张{n}", "联系电话", f"1385921{n:04d}"],
        ["证件类型", "居民身份证", "证件号码", _resident_id(f"35020319800101{n % 1000:03d}")],
        ["经办人", f"李{n}", "联系电话", f"1395920{n:04d}"],
        ["证件类型", "居民身份证", "证件号码", _resident_id(f"35020319900202{n % 1000:03d}")],
        ["服务类密码设备商用密码产品认证证书编号", f"GM0031{n:06d}"],
        ["通用名", company],
    ]
    body = "".join("<w:tr>" + "".join(_cell(c) for c in r) + "</w:tr>" for r in rows)
    doc = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="{W}">'
           "<w:body><w:p><w:r><w:t>中国电子口岸数字证书申请表</w:t></w:r></w:p>"
           f"<w:tbl>{body}</w:tbl></w:body></w:document>")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", DOCX_CT)
        z.writestr("_rels/.rels", DOCX_RELS)
        z.writestr("word/document.xml", doc)
    return buf.getvalue()


def make_pdf(size: int) -> bytes:
    """A one-page PDF whose image stream is `size` bytes of scan-like noise."""
    head = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
            b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
            b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\n"
            + f"4 0 obj<</Length {size}/Filter/DCTDecode>>stream\n".encode())
    return head + os.urandom(size) + b"\nendstream endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def make_jpeg(size: int) -> bytes:
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + \
        os.urandom(size) + b"\xff\xd9"


def make_csrs(count: int, workdir: Path) -> list[bytes]:
    """Real SM2 CSRs (SM3withSM2, default ID) from the OpenSSL CLI."""
    out = []
    for i in range(count):
        key = workdir / f"k{i}.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:SM2", "-out", str(key)], check=True,
                       capture_output=True)
        csr = subprocess.run(["openssl", "req", "-new", "-key", str(key), "-sm3", "-sigopt",
                              "distid:1234567812345678", "-utf8", "-subj",
                              f"/C=CN/O=厦门基准测试{i}有限公司/CN=厦门基准测试{i}有限公司"],
                             check=True, capture_output=True).stdout
        out.append(csr)
    return out


def make_application(n: int, csr: bytes, target_kb: int, big: int = 0) -> bytes:
    company = f"厦门基准测试{n}有限公司"
    msg = EmailMessage()
    msg["From"] = f"经办人{n} <handler{n}@example{n}.cn>"
    msg["To"] = "xmport@189.cn"
    msg["Subject"] = f"{company}+数字证书申办"
    msg["Message-ID"] = f"<bench-{n}-{os.urandom(6).hex()}@example{n}.cn>"
    msg["Date"] = "Wed, 25 Nov 2026 09:00:00 +0800"
    msg.set_content(f"您好：\n附件为{company}服务类密码设备数字证书申请材料，请审核。\n经办人{n}\n")
    # Valid codes, mobiles and the sender as the form's address, as most real applications
    # are: the rules then find nothing to object to, and the case records what it normally would.
    form = make_form_docx(company, _uscc(f"91350200MA{n:07d}"), n)
    # Four scans share what is left of the target (base64 adds a third).
    scan = max(1000, (target_kb * 1024 * 3 // 4 - len(form) - 3000) // 4)
    files = [
        ("中国电子口岸数字证书申请表.docx", form, "application",
         "vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("营业执照副本.pdf", make_pdf(big or scan), "application", "pdf"),
        ("法定代表人身份证.jpg", make_jpeg(scan), "image", "jpeg"),
        ("经办人身份证.jpg", make_jpeg(scan), "image", "jpeg"),
        ("商用密码产品认证证书.pdf", make_pdf(scan), "application", "pdf"),
        ("server.csr", csr, "application", "pkcs10"),
    ]
    for name, data, maintype, subtype in files:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


# -- measuring ------------------------------------------------------------------------------

def cpu_check_ms() -> float:
    """A fixed pure-Python workload, timed: how fast the machine runs right now (the raw
    fetch hardly shows it, mostly Dovecot and socket copies; our run, mostly Python, does)."""
    t0, x = time.perf_counter(), 0
    for i in range(5_000_000):
        x += i
    return (time.perf_counter() - t0) * 1000


def raw_fetch_rate(user, batch: int, uids: list[int] | None = None,
                   folder: str = "INBOX") -> tuple[float, int]:
    """Messages/s of a bare imapclient BODY.PEEK[] fetch in batches of `batch` messages, as
    mailbot fetches (no parsing, no storing); uids=None: every message of the folder."""
    c = IMAPClient(user.host, port=user.port, ssl=False, timeout=60)
    c.login(user.username, user.password)
    c.select_folder(folder, readonly=True)
    if uids is None:
        uids = c.search("ALL")
    total = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(0, len(uids), batch):
        data = c.fetch(uids[i:i + batch], ["BODY.PEEK[]"])
        total += sum(len(d[b"BODY[]"]) for d in data.values())
    elapsed = time.perf_counter() - t0
    if os.environ.get("BENCH_VERBOSE"):
        print(f"  (raw fetch: client CPU {(time.process_time() - cpu0) / len(uids) * 1000:.2f}"
              f" ms/message of {elapsed / len(uids) * 1000:.2f} ms)")
    c.logout()
    return len(uids) / elapsed, total


def _machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat): Dovecot and the database too."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def config_for(root: Path, mailbox_url: str, db_url: str | None, workers: int,
               fetch_batch: int = 0):
    from mailbot.config import Config

    cfg = Config()
    cfg.base_dir = str(root)
    cfg.paths.var_dir = str(root / "var")
    cfg.database.url = db_url or f"sqlite:///{root / 'var' / 'mailbot.sqlite3'}"
    cfg.mailbox.url = mailbox_url
    cfg.intake.workers = workers
    if fetch_batch:
        cfg.intake.fetch_batch = fetch_batch
    return cfg


def fresh_schema(cfg) -> None:
    from mailbot.app.workspace import init_workspace

    init_workspace(cfg)


def _hwm(pid: int) -> int:
    """Peak resident set (VmHWM) of a process, in bytes; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _back_to_inbox(user) -> None:
    """Move every message from the processed folder back to INBOX (new UIDs) for a new round."""
    from mailbot.config import IntakeConfig

    c = IMAPClient(user.host, port=user.port, ssl=False, timeout=60)
    c.login(user.username, user.password)
    c.select_folder(IntakeConfig().processed_folder)
    c.move(c.search("ALL"), "INBOX")
    c.logout()


def answer_rate(cfg, daemon) -> tuple[float, int]:
    """The outbox job on what the ingest queued: (answers/s, answers sent)."""
    from mailbot.app.outbox_job import run_outbox

    t0 = time.perf_counter()
    run = run_outbox(cfg, daemon.sessions, source=None)
    elapsed = time.perf_counter() - t0
    return run.sending.sent / elapsed if elapsed else 0.0, run.sending.sent


def one_round(user, cfg, profile: str | None, replies: bool = False) -> tuple[float, float]:
    """Raw fetch, ingest with `mailbot run --once` work, raw fetch again; (rate, ratio)."""
    from sqlalchemy import func, select

    from mailbot.app.daemon import Daemon
    from mailbot.cases.models import Case
    from mailbot.intake.models import Message

    batch = cfg.intake.fetch_batch
    raw_before, raw_bytes = raw_fetch_rate(user, batch)
    n = len(user.uids("INBOX"))
    print(f"raw imapclient BODY.PEEK[] fetch: {raw_before:.1f} messages/s"
          f" ({raw_bytes / 1e6 / (n / raw_before):.0f} MB/s)")
    fresh_schema(cfg)
    # Start-up is not timed: what `mailbot run` checks before any work (cli/daemon.py: the
    # templates compiled, the notice's font), the mailbox login, the parse workers.
    from mailbot.app.outbox_job import check_outbox

    check_outbox(cfg)
    daemon = Daemon(cfg)
    daemon.source.open()
    daemon.intake.processor.start()
    daemon.started()  # as run_once does before its cycle
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0, cpu0, machine0 = time.perf_counter(), os.times(), _machine_busy()
    try:  # every job of `run --once`, or the mail job alone
        report = daemon.cycle(only=None if replies else ("mail",))
    finally:
        daemon.close()  # closes the pool: the workers' CPU is in os.times() now
    elapsed = time.perf_counter() - t0
    cpu1, machine1 = os.times(), _machine_busy()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    rate = n / elapsed
    answers_rate, answers = (0.0, report.summaries.get("outbox", "")) if replies \
        else answer_rate(cfg, daemon)
    with daemon.sessions() as s:
        cases = s.scalar(select(func.count()).select_from(Case))
        rows = s.scalar(select(func.count()).select_from(Message))
    daemon.engine.dispose()
    print(f"mailbot ingest into cases: {rate:.1f} messages/s ({elapsed:.1f} s;"
          f" {rows} messages, {cases} cases, processed {report.processing.processed},"
          f" failed {report.processing.failed}, workers {daemon.intake.processor.pool.workers})")
    main_ms = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / n * 1000
    work_ms = (cpu1.children_user + cpu1.children_system - cpu0.children_user
               - cpu0.children_system) / n * 1000
    if replies:
        print(f"  (the whole `run --once`, every job: outbox {answers})")
        print("  seconds per job: " + ", ".join(f"{k} {v:.2f}" for k, v in report.seconds.items()))
    else:
        print(f"outbox job alone: {answers} answers rendered and written (file:) at"
              f" {answers_rate:.1f} answers/s")
    print(f"  CPU per message: main process {main_ms:.2f} ms, parse workers {work_ms:.2f} ms,"
          f" whole machine {(machine1 - machine0) / n * 1000:.2f} ms"
          f" (of {os.cpu_count()} x {elapsed / n * 1000:.2f} ms wall)")
    # The same messages again, now in 已处理: this shared machine's speed drifts, so the
    # baseline is the mean of a fetch just before and one just after the ingest.
    raw_after, _ = raw_fetch_rate(user, batch, None, cfg.intake.processed_folder)
    raw_rate = (raw_before + raw_after) / 2
    ratio = rate / raw_rate
    print(f"raw fetch again after the ingest (from {cfg.intake.processed_folder}):"
          f" {raw_after:.1f} messages/s; baseline {raw_rate:.1f} messages/s")
    print(f"ratio to raw fetch: {ratio:.2f} (target >= 0.33) "
          f"{'OK' if ratio >= 1 / 3 else 'BELOW TARGET'}")
    return rate, ratio


def rss_child(args: argparse.Namespace) -> None:
    """Child process: idle RSS, then ingest the one big message; prints JSON."""
    import logging

    import psutil

    logging.disable(logging.INFO)
    from mailbot.app.daemon import Daemon

    root = Path(args.root)
    cfg = config_for(root, args.url, args.db, 1)
    fresh_schema(cfg)
    daemon = Daemon(cfg)
    daemon.source.open()
    daemon.intake.processor.start()  # fork the workers before the sampling thread below exists
    me = psutil.Process()
    # ru_maxrss survives execve on Linux (it would show the bench parent's peak), so the
    # peak is VmHWM of this address space, reset to the current RSS right here.
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    idle = me.memory_info().rss
    worker_peak = {"rss": 0}
    stop = threading.Event()

    def sample() -> None:  # parse workers: their own high-water marks, read until they exit
        while not stop.is_set():
            for child in me.children(recursive=True):
                worker_peak["rss"] = max(worker_peak["rss"], _hwm(child.pid))
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    report = daemon.run_once()
    stop.set()
    t.join()
    peak = _hwm(os.getpid())
    print(json.dumps({"idle": idle, "peak": peak, "worker_peak": worker_peak["rss"],
                      "processed": report.processing.processed,
                      "cases": report.processing.cases_opened}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--kb", type=int, default=300)
    ap.add_argument("--big-mb", type=int, default=30,
                    help="attachment size of the one message whose RSS is measured (0: skip)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--fetch-batch", type=int, default=0,
                    help="messages per fetch/commit (default: the configuration's default)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="ingest the same messages this many times (each into a fresh database,"
                         " the mailbox moved back between rounds); the median ratio counts")
    ap.add_argument("--db", default=None,
                    help="database URL (default: SQLite in the temp dir); PostgreSQL runs in a"
                         " throw-away schema")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    ap.add_argument("--replies", action="store_true",
                    help="time the whole `run --once` (every job: the acknowledgements rendered"
                         " and written to a file: outbox), not the mail job alone")
    ap.add_argument("--profile", metavar="FILE",
                    help="write a cProfile of the ingest run (main process) to FILE")
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args)
        return 0

    import logging

    logging.basicConfig(level=logging.WARNING)


    base_db = args.db
    pg_schemas: list[PgSchema] = []

    def round_db() -> str | None:
        """A database for one run: SQLite in the run's folder (None), or a new PG schema
        (never the tables of whatever database was named)."""
        if not (base_db and base_db.startswith("postgresql")):
            return base_db
        pg_schemas.append(PgSchema(base_db))
        return pg_schemas[-1].url

    root = Path(tempfile.mkdtemp(prefix="mailbot-bench-"))
    os.chmod(root, 0o755)
    uid, gid = ensure_vmail()
    server = DovecotServer(root=root / "dovecot", port=free_port(), uid=uid, gid=gid)
    server.start()
    try:
        user = server.add_user()
        t0 = time.perf_counter()
        csrs = make_csrs(10, root)
        mails = [make_application(i, csrs[i % len(csrs)], args.kb) for i in range(args.messages)]
        c = user.client()
        for raw in mails:
            c.append("INBOX", raw)
        c.logout()
        mean = sum(map(len, mails)) / len(mails)
        print(f"built and APPENDed {len(mails)} applications, mean {mean / 1024:.0f} KB,"
              f" in {time.perf_counter() - t0:.1f} s")
        del mails
        raw_fetch_rate(user, 20)  # warm-up: every run reads from the page cache

        ratios: list[float] = []
        rates: list[float] = []
        for r in range(args.rounds):
            if r:
                _back_to_inbox(user)
            work = root / f"run{r}"
            work.mkdir()
            cfg = config_for(work, user.url, round_db(), args.workers, args.fetch_batch)
            print(f"-- round {r + 1} of {args.rounds}")
            print(f"CPU check: {cpu_check_ms():.0f} ms for 5 M Python additions"
                  " (this shared machine's speed drifts; compare rounds with it)")
            rate, ratio = one_round(user, cfg, args.profile if r == 0 else None, args.replies)
            rates.append(rate)
            ratios.append(ratio)
        if args.rounds > 1:
            med = statistics.median(ratios)
            print(f"== median of {args.rounds} rounds: {statistics.median(rates):.1f} messages/s,"
                  f" ratio {med:.2f} (rounds {', '.join(f'{x:.2f}' for x in ratios)})"
                  f" (target >= 0.33) {'OK' if med >= 1 / 3 else 'BELOW TARGET'}")

        if args.big_mb <= 0:  # a small message's RSS growth is allocator noise, not a figure
            print("memory check skipped (--big-mb 0)")
            return 0
        # One message with a big attachment, ingested in a fresh child process.
        big_user = server.add_user()
        big = make_application(9999, csrs[0], args.kb, big=args.big_mb * 1024 * 1024)
        big_user.append(big)
        size = len(big)
        del big
        big_root = root / "big"
        big_root.mkdir()
        big_db = round_db()
        out = subprocess.run([sys.executable, __file__, "--rss-child", "--root", str(big_root),
                              "--url", big_user.url] + (["--db", big_db] if big_db else []),
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        m = json.loads(out.stdout.strip().splitlines()[-1])
        growth = m["peak"] - m["idle"]
        wgrowth = m["worker_peak"] - m["idle"]  # a worker starts as a fork of the idle process
        print(f"one message of {size / 1e6:.1f} MB ({args.big_mb} MB attachment):"
              f" main process idle {m['idle'] / 1e6:.0f} MB, peak {m['peak'] / 1e6:.0f} MB,"
              f" growth {growth / 1e6:.0f} MB = {growth / size:.2f}x the message"
              f" (target < 4x) {'OK' if growth < 4 * size else 'OVER TARGET'}")
        print(f"  parse worker (forked from the idle process): peak"
              f" {m['worker_peak'] / 1e6:.0f} MB, growth {wgrowth / 1e6:.0f} MB ="
              f" {wgrowth / size:.2f}x; processed {m['processed']}, cases {m['cases']}")
    finally:
        server.stop()
        for pg in pg_schemas:
            pg.drop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
