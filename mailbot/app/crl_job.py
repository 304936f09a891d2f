"""The CRL refresh: a new CRL before nextUpdate comes (or after a revocation), written to
[ca] crl_path for publishing; nothing while the current one holds."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailbot.config import Config
from mailbot.faults import crash_point
from mailbot.pki.ca import load_ca
from mailbot.pki.crl import crl_due, current_crl, write_crl
from mailbot.pki.models import CrlState

if TYPE_CHECKING:
    from mailbot.app.daemon import Daemon

log = logging.getLogger(__name__)


def crl_job(daemon: Daemon) -> str | None:
    return refresh_crl(daemon.cfg, daemon.sessions)


def refresh_crl(cfg: Config, sessions: sessionmaker[Session]) -> str | None:
    """Bring the CRL up to date; a one-line summary when a new one was made or written.
    Nothing without a CA yet, and the CA key is opened only when a new CRL may be due."""
    if not cfg.var_path(cfg.ca.cert_path).is_file():
        return None  # no CA made yet (`mailbot run` makes the test CA before any job)
    path = cfg.var_path(cfg.ca.crl_path)
    with sessions() as s:
        due = crl_due(s, next_update_days=cfg.ca.crl_next_update_days)
        made = {bytes(der) for der in s.scalars(select(CrlState.der)) if der}
    # The file must be the CRL the database holds: a kill between a commit that made one (a
    # revocation, a refresh) and the file's write leaves the old file behind.
    if not due and path.is_file() and path.read_bytes() in made:
        return None
    ca = load_ca(cfg)
    try:
        with sessions() as s:
            cur = current_crl(s, ca, next_update_days=cfg.ca.crl_next_update_days)
            s.commit()
    finally:
        ca.signer.close()
    crash_point("crl_before_write")
    written = write_crl(path, cur.der)
    crash_point("crl_after_write")
    if not cur.made and not written:
        return None
    log.info("CRL number %d (%s), next update %s", cur.number, cur.why,
             cur.next_update.isoformat())
    return f"CRL number {cur.number}, next update {cur.next_update:%Y-%m-%d %H:%M} UTC"
