"""The working folders and the schema, as `mailbot init` and the first `mailbot run` make them;
the CA `run` needs (`prepare_ca`)."""

from __future__ import annotations

import mailbox

from mailbot.config import CaConfig, Config
from mailbot.db import upgrade
from mailbot.mailbox.url import maildir_path
from mailbot.pki.ca import CaError, dn_text, init_ca, load_ca
from mailbot.pki.errors import PkiError
from mailbot.pki.signer import open_signer

# The [ca] keys that say which CA this is. A file that sets none of them away from its default
# (no file, a file naming no [ca] keys, or only the URLs, the CRL timing, validity or the
# passphrase variable's name) leaves mailbot's own soft test CA in place, which the first
# `run` makes; any other CA is the operator's to install, and `run` never makes one up.
CA_IDENTITY_KEYS = ("signer", "key_path", "cert_path", "chain_path", "subject",
                    "sdf_library", "sdf_key_index")


def init_workspace(cfg: Config) -> list[str]:
    """Create var/, the archive, the Maildir and the schema; idempotent. Returns what was done."""
    done = []
    cfg.var_dir.mkdir(parents=True, exist_ok=True)
    cfg.archive_dir.mkdir(parents=True, exist_ok=True)
    md = maildir_path(cfg)
    if md is not None:
        mailbox.Maildir(str(md), create=True)
        done.append(f"maildir {md}")
    upgrade(cfg.database_url)
    done.append("database schema up to date")
    return done


def ca_left_at_defaults(cfg: Config) -> bool:
    """Whether [ca] names mailbot's own soft test CA (see CA_IDENTITY_KEYS)."""
    defaults = CaConfig()
    return all(getattr(cfg.ca, k) == getattr(defaults, k) for k in CA_IDENTITY_KEYS)


def prepare_ca(cfg: Config) -> str | None:
    """Make sure `run` starts with a CA it can sign with; a line saying what was made, or None.

    [ca] at its defaults and no key file yet: the soft test CA is made (as `mailbot ca init`;
    its key encrypted when the passphrase variable is set). Otherwise the CA must be there and
    open: a missing key file, a key that cannot be opened (an encrypted one without its
    passphrase), or an SDF device that cannot be reached raise CaError, one line, and `run`
    refuses to start.
    """
    if cfg.ca.signer == "soft":
        key = cfg.var_path(cfg.ca.key_path)
        cert = cfg.var_path(cfg.ca.cert_path)
        if not key.exists():
            if not ca_left_at_defaults(cfg):
                raise CaError(f"cannot start: no CA key at {key} ([ca] key_path); install the "
                              "CA key there or run `mailbot ca init` / 缺少 CA 私钥, 无法启动")
            if cert.exists():
                raise CaError(f"cannot start: the CA certificate {cert} is there but its key "
                              f"{key} is missing; restore the key, or run `mailbot ca init "
                              "--force` for a new test CA / 缺少 CA 私钥, 无法启动")
            state = init_ca(cfg)
            state.signer.close()
            return f"made the soft test CA {dn_text(state.subject)} ({key})"
    try:
        if cfg.ca.signer != "soft":  # the device first: its absence is the news
            open_signer(cfg).close()
        state = load_ca(cfg)  # soft: the key opens and fits the certificate; sdf: likewise
    except PkiError as exc:
        where = "[ca] signer = sdf: " if cfg.ca.signer == "sdf" else ""
        raise CaError(f"cannot start: {where}{exc}") from None
    state.signer.close()
    return None
