"""`mailbot ca init|show|crl|revoke` and `mailbot envelope open`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from asn1crypto import pem
from sqlalchemy.orm import Session

from mailbot.app.revocation import revoke_certificate
from mailbot.cli.errors import OperationFailed, UsageError
from mailbot.config import Config
from mailbot.db import make_engine, session_factory, upgrade
from mailbot.pki import envelope
from mailbot.pki.ca import CaState, ca_certificate, dn_text, init_ca, key_status, load_ca
from mailbot.pki.crl import current_crl, serial_of_cert, verify_crl
from mailbot.pki.errors import PkiError
from mailbot.pki.models import REVOKE_REASONS
from mailbot.pki.signer.soft import load_private_key, private_key_pem


@contextmanager
def _refused() -> Iterator[None]:
    """The PKI's refusals and unreadable files, as one line from the CLI's one handler."""
    try:
        yield
    except (PkiError, OSError, ValueError) as exc:
        raise OperationFailed(str(exc)) from exc


def _session(cfg: Config) -> Session:
    engine = make_engine(cfg.database_url)
    upgrade(engine=engine)  # the PKI tables must exist before the first CRL or revocation
    return session_factory(engine)()


def _load(cfg: Config) -> CaState:
    return load_ca(cfg)


def _cmd_init(args: argparse.Namespace) -> int:
    cfg: Config = args.config
    with _refused():
        state = init_ca(cfg, import_key=Path(args.key) if args.key else None,
                        import_chain=Path(args.chain) if args.chain else None, force=args.force)
    print(f"CA ready: {dn_text(state.subject)}")
    print(f"  certificate: {cfg.var_path(cfg.ca.cert_path)}")
    ks = key_status(cfg)
    if cfg.ca.signer == "soft":
        print(f"  key:         {cfg.var_path(cfg.ca.key_path)} (mode 0600, "
              f"{ks.protection or 'NOT encrypted'})")
    print(f"  key id:      {state.key_id_hex}")
    if ks.warning:
        print(f"mailbot: warning: {ks.warning}", file=sys.stderr)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    with _refused():
        state = _load(args.config)
    ks = key_status(args.config)
    if ks.warning:  # stderr, also with --pem: stdout stays the chain alone
        print(f"mailbot: warning: {ks.warning}", file=sys.stderr)
    if args.pem:
        sys.stdout.write(state.chain_pem())  # nothing else: scripts pipe this to openssl
        return 0
    tbs = state.cert["tbs_certificate"]
    print(f"subject:    {dn_text(state.subject)}")
    print(f"issuer:     {dn_text(state.cert.issuer)}")
    print(f"serial:     {state.cert.serial_number:x}")
    print(f"valid:      {tbs['validity']['not_before'].native:%Y-%m-%d} .. "
          f"{state.not_after:%Y-%m-%d}")
    print(f"key id:     {state.key_id_hex}")
    print(f"signer:     {args.config.ca.signer} ({state.signer!r})")
    if ks.signer == "soft":
        print(f"key:        {ks.key_path} ({ks.protection or 'NOT encrypted'})")
    print(f"chain:      {len(state.chain)} certificate(s)")
    return 0


def _cmd_crl(args: argparse.Namespace) -> int:
    cfg: Config = args.config
    if args.verify:
        with _refused():
            check = verify_crl(Path(args.verify).read_bytes(), ca_certificate(cfg))
        if check.ok:
            print(f"{args.verify}: CRL OK (number {check.number}, {len(check.revoked)} revoked, "
                  f"next update {check.next_update:%Y-%m-%d %H:%M} UTC)")
            return 0
        for p in check.problems:
            print(f"{args.verify}: {p}", file=sys.stderr)
        return 1
    with _refused():
        state = _load(cfg)
        with _session(cfg) as s:
            # a new CRL only when a revocation changed or nextUpdate is near (pki/crl.py)
            cur = current_crl(s, state, next_update_days=cfg.ca.crl_next_update_days,
                              force=args.force)
            der = cur.der
            path = cfg.var_path(cfg.ca.crl_path)
            if cur.made or not path.is_file() or path.read_bytes() != der:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(path.suffix + ".tmp")
                tmp.write_bytes(der)
                os.replace(tmp, path)  # readers never see half a CRL
            s.commit()
    if args.der:
        sys.stdout.buffer.write(der)
    else:
        sys.stdout.write(pem.armor("X509 CRL", der).decode())
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    cfg: Config = args.config
    if bool(args.serial) == bool(args.cert):
        raise UsageError("give a SERIAL or --cert FILE (one of them)", zh="请给出序列号或证书文件之一")
    with _refused():
        state = _load(cfg)
        issuer = None
        serial = args.serial
        if args.cert:
            serial, issuer = serial_of_cert(Path(args.cert).read_bytes())
        with _session(cfg) as s:
            row = revoke_certificate(s, state, serial, reason=args.reason, by=args.by,
                                     issuer_key_id=issuer or None)
            s.commit()
            print(f"revoked {row.kind} certificate {row.serial} ({row.subject}) "
                  f"case {row.case_ref or '-'}: {row.revocation_reason}")
    print("run `mailbot ca crl` to publish the new CRL")
    return 0


def _cmd_envelope_open(args: argparse.Namespace) -> int:
    out_path = Path(args.out)
    if os.path.lexists(out_path):  # early and friendly; O_EXCL below is the real guard
        raise OperationFailed(f"{out_path} exists; not overwriting a key file",
                              zh="文件已存在, 不覆盖密钥文件")
    passphrase = os.environ.get(args.passphrase_env, "").encode() or None
    with _refused():
        sign_d = load_private_key(Path(args.key).read_bytes(), passphrase)
        cert = Path(args.cert).read_bytes() if args.cert else None
        enc_d = envelope.open_envelope(sign_d, _envelope_bytes(Path(args.file).read_bytes()),
                                       certificate=cert)
    out = private_key_pem(enc_d, fmt=args.format)
    del enc_d, sign_d
    _write_new_key_file(out_path, out)
    checked = " and matches the certificate" if args.cert else ""
    # stderr, and never the key: stdout and logs stay free of key material
    print(f"encryption private key{checked} written to {out_path} (mode 0600)",
          file=sys.stderr)
    return 0


def _write_new_key_file(path: Path, data: bytes) -> None:
    """Create path with mode 0600 and write data; never overwrite, never leave half a key."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise OperationFailed(f"{path} exists; not overwriting a key file",
                              zh="文件已存在, 不覆盖密钥文件") from None
    except OSError as exc:
        raise OperationFailed(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        path.unlink(missing_ok=True)  # we created it: no truncated key file stays behind
        raise OperationFailed(f"cannot write {path}: {exc.strerror}") from None


def _envelope_bytes(data: bytes) -> bytes:
    # the attachment is DER; accept PEM or bare base64 as some mail clients re-encode it
    if pem.detect(data):
        return pem.unarmor(data)[2]
    stripped = data.strip()
    if stripped[:1] != b"\x30":
        import base64
        import binascii

        try:
            return base64.b64decode(b"".join(stripped.split()), validate=True)
        except (binascii.Error, ValueError):
            return data
    return data


def register(sub: argparse._SubParsersAction) -> None:
    ca = sub.add_parser("ca", help="the certificate authority / 证书签发")
    casub = ca.add_subparsers(dest="ca_command", metavar="ACTION")
    p = casub.add_parser("init", help="make the soft CA (self-signed SM2 root) or import one")
    p.add_argument("--key", help="import this SM2 CA key (PEM) instead of making one")
    p.add_argument("--chain", help="import this CA certificate chain (PEM, CA first) instead of "
                                   "a self-signed root")
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    p.set_defaults(func=_cmd_init)
    p = casub.add_parser("show", help="show the CA; --pem prints only the chain as PEM")
    p.add_argument("--pem", action="store_true")
    p.set_defaults(func=_cmd_show)
    p = casub.add_parser("crl", help="bring the CRL up to date, write it, print it (PEM); a "
                                      "new CRL only after a revocation or near nextUpdate")
    p.add_argument("--der", action="store_true", help="print DER instead of PEM")
    p.add_argument("--force", action="store_true",
                   help="make a new CRL (next number) even when the current one holds")
    p.add_argument("--verify", metavar="FILE",
                   help="check a CRL file against the CA (SM2, standard ID) instead")
    p.set_defaults(func=_cmd_crl)
    p = casub.add_parser("revoke", help="revoke a certificate issued here")
    p.add_argument("serial", nargs="?", help="serial number (hex)")
    p.add_argument("--cert", metavar="FILE", help="the certificate file (.cer, PEM or DER)")
    # removeFromCRL is not offered: it belongs to delta CRLs only (RFC 5280 5.3.1)
    p.add_argument("--reason", required=True, choices=list(REVOKE_REASONS))
    p.add_argument("--by", required=True, metavar="NAME", help="staff member / 经办人")
    p.set_defaults(func=_cmd_revoke)

    env = sub.add_parser("envelope", help="open an envprivatekey / 打开加密私钥信封")
    envsub = env.add_subparsers(dest="envelope_command", metavar="ACTION")
    p = envsub.add_parser("open", help="decrypt the encryption private key with the signing key")
    p.add_argument("--key", required=True, metavar="KEY.pem",
                   help="the applicant's SIGNING private key (PKCS#8 or SEC1 PEM)")
    p.add_argument("--passphrase-env", default="MAILBOT_KEY_PASSPHRASE", metavar="VAR",
                   help="environment variable holding the key passphrase, if encrypted")
    p.add_argument("--cert", metavar="env.cer",
                   help="the encryption certificate (DER or PEM): refuse unless the opened key "
                        "is its key")
    # the key goes only to a new file: never the terminal, never over an existing file
    p.add_argument("--out", required=True, metavar="FILE",
                   help="write the key to this new file (mode 0600; never overwritten)")
    p.add_argument("--format", choices=["pkcs8", "sec1"], default="pkcs8")
    p.add_argument("file", metavar="ENVELOPE", help="the envprivatekey attachment")
    p.set_defaults(func=_cmd_envelope_open)
