#!/usr/bin/env python3
"""Envelope benchmark (issue 10 item 3): SM2EnvelopedKey made / opened per second.

    python3 bench/envelope.py [--seconds 2] [--json]

Three routes, each measured in the same run, each with its ratio to mailbot's libcrypto path
(time per op of the route / time per op of libcrypto; lower is better):
  1. mailbot now: mailbot.pki.envelope (SM2 and SM4-ECB through libcrypto's EVP, ctypes);
  2. the old pure-Python path: sm2.reference_encrypt / reference_decrypt (Python point
     arithmetic, variable-time) + the pure-Python `gmssl` SM4, as make_envelope did before;
  3. the OpenSSL CLI, one process per call: `openssl pkeyutl -encrypt|-decrypt` (+ `openssl
     enc -sm4-ecb -nopad` for a whole envelope). Each call pays fork/exec, loading libcrypto and
     its providers, parsing the PEM key file and the pipes; that start-up, not the SM2 work,
     is most of its time. The DER assembly of a whole envelope is done in Python (cheap).
Sections: the SM2 encryption of the 16-byte SM4 key alone; whole envelopes made; opened.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import timing  # noqa: E402  (bench/timing.py)

from mailbot.pki import der, envelope, sm2  # noqa: E402
from mailbot.pki.signer.soft import private_key_pem  # noqa: E402


@dataclass
class Row:
    name: str
    per_second: float
    reference: str = ""          # what the ratio compares against
    ratio: float | None = None   # this route's time per op / the reference's (lower is better)
    note: str = ""


def rate(fn: Callable[[], object], seconds: float, min_ops: int = 10) -> float:
    return timing.rate(fn, seconds, min_ops)


def _gmssl_sm4(key: bytes, data: bytes, decrypting: bool) -> bytes:
    from gmssl import sm4

    c = sm4.CryptSM4(padding_mode=None)  # None: no padding, as the envelope needs
    c.set_key(key, sm4.SM4_DECRYPT if decrypting else sm4.SM4_ENCRYPT)
    return bytes(c.crypt_ecb(data))


def _assemble(wrapped: bytes, enc_pub: bytes, enc_priv: bytes) -> bytes:
    alg = der.tlv(0x30, der.enc_oid(envelope.SM4_ECB) + b"\x05\x00")
    return der.tlv(0x30, alg + wrapped + der.tlv(0x03, b"\x00" + enc_pub)
                   + der.tlv(0x03, b"\x00" + enc_priv))


def old_make_envelope(recipient: bytes, enc_d: int) -> bytes:
    """make_envelope as it was: pure-Python SM2 encryption and pure-Python (gmssl) SM4."""
    sm2.check_public_key(recipient)
    sym = secrets.token_bytes(16)
    return _assemble(sm2.reference_encrypt(recipient, sym), sm2.public_key_of(enc_d),
                     _gmssl_sm4(sym, enc_d.to_bytes(32, "big"), False))


def old_open_envelope(sign_d: int, data: bytes) -> int:
    parts = envelope.parse_envelope(data)
    sym = sm2.reference_decrypt(sign_d, parts.sym_encrypted_key)
    d = int.from_bytes(_gmssl_sm4(sym, parts.encrypted_private_key, True)[-32:], "big")
    assert sm2.public_key_of(d) == parts.public_key
    return d


def _openssl(*args: str, data: bytes) -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True,
                          timeout=60).stdout


def encryption_rates(seconds: float) -> tuple[float, float]:
    """(sm2.encrypt of a 16-byte SM4 key per second, `openssl pkeyutl -encrypt` processes per
    second), to the same fresh key: section 1 of `run`, for other benchmarks (bench/issue.py)."""
    d = sm2.generate_private_key()
    recipient = sm2.public_key_of(d)
    sym = secrets.token_bytes(16)
    with tempfile.TemporaryDirectory(prefix="mailbot-bench-envelope-") as tmp:
        key_pem, pub_pem = Path(tmp) / "sign.pem", Path(tmp) / "sign.pub"
        key_pem.write_bytes(private_key_pem(d))
        subprocess.run(["openssl", "pkey", "-in", str(key_pem), "-pubout", "-out",
                        str(pub_pem)], check=True, capture_output=True)
        ours = rate(lambda: sm2.encrypt(recipient, sym), seconds, 50)
        cli = rate(lambda: _openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", str(pub_pem),
                                    data=sym), seconds)
    return ours, cli


def run(seconds: float) -> list[Row]:
    rows: list[Row] = []
    sign_d, enc_d = sm2.generate_private_key(), sm2.generate_private_key()
    recipient = sm2.public_key_of(sign_d)
    sym = secrets.token_bytes(16)
    with tempfile.TemporaryDirectory(prefix="mailbot-bench-envelope-") as tmp:
        work = Path(tmp)
        key_pem, pub_pem = work / "sign.pem", work / "sign.pub"
        key_pem.write_bytes(private_key_pem(sign_d))
        subprocess.run(["openssl", "pkey", "-in", str(key_pem), "-pubout", "-out",
                        str(pub_pem)], check=True, capture_output=True)
        encrypt_cli = ["pkeyutl", "-encrypt", "-pubin", "-inkey", str(pub_pem)]
        decrypt_cli = ["pkeyutl", "-decrypt", "-inkey", str(key_pem)]

        # 1. the SM2 encryption of the SM4 key alone
        ours = rate(lambda: sm2.encrypt(recipient, sym), seconds, 50)
        ref = "sm2.encrypt [libcrypto]"
        py = rate(lambda: sm2.reference_encrypt(recipient, sym), seconds)
        cli = rate(lambda: _openssl(*encrypt_cli, data=sym), seconds)
        rows += [Row(ref, ours, "itself", 1.0, "EVP_PKEY_encrypt, SM2Cipher checked"),
                 Row("sm2.reference_encrypt [pure Python, old]", py, ref, ours / py),
                 Row("`openssl pkeyutl -encrypt` process", cli, ref, ours / cli,
                     "one process per call: start-up dominates")]

        # 2. whole envelopes made
        ours = rate(lambda: envelope.make_envelope(recipient, enc_d), seconds, 50)
        ref = "make_envelope [libcrypto]"
        py = rate(lambda: old_make_envelope(recipient, enc_d), seconds)
        d_bytes = enc_d.to_bytes(32, "big")
        enc_pub = sm2.public_key_of(enc_d)

        def cli_envelope() -> bytes:
            key = secrets.token_bytes(16)
            wrapped = _openssl(*encrypt_cli, data=key)
            enc_priv = _openssl("enc", "-sm4-ecb", "-nopad", "-K", key.hex(), data=d_bytes)
            return _assemble(wrapped, enc_pub, enc_priv)

        assert envelope.open_envelope(sign_d, cli_envelope()) == enc_d
        assert envelope.open_envelope(sign_d, old_make_envelope(recipient, enc_d)) == enc_d
        cli = rate(cli_envelope, seconds)
        rows += [Row(ref, ours, "itself", 1.0, "SM2 + SM4 + d*G + DER"),
                 Row("old make_envelope [pure Python]", py, ref, ours / py,
                     "reference_encrypt + gmssl SM4"),
                 Row("`pkeyutl -encrypt` + `enc -sm4-ecb`", cli, ref, ours / cli,
                     "2 processes per envelope")]

        # 3. envelopes opened
        data = envelope.make_envelope(recipient, enc_d)
        parts = envelope.parse_envelope(data)
        ours = rate(lambda: envelope.open_envelope(sign_d, data), seconds, 50)
        ref = "open_envelope [libcrypto]"
        py = rate(lambda: old_open_envelope(sign_d, data), seconds)

        def cli_open() -> bytes:
            key = _openssl(*decrypt_cli, data=parts.sym_encrypted_key)
            return _openssl("enc", "-d", "-sm4-ecb", "-nopad", "-K", key.hex(),
                            data=parts.encrypted_private_key)

        assert int.from_bytes(cli_open(), "big") == enc_d
        cli = rate(cli_open, seconds)
        rows += [Row(ref, ours, "itself", 1.0, "SM2 + SM4 + d*G check"),
                 Row("old open_envelope [pure Python]", py, ref, ours / py,
                     "reference_decrypt + gmssl SM4"),
                 Row("`pkeyutl -decrypt` + `enc -d -sm4-ecb`", cli, ref, ours / cli,
                     "2 processes per envelope")]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = run(args.seconds)
    if args.json:
        print(json.dumps({"encryption": sm2.encryption_backend(),
                          "rows": [asdict(r) for r in rows]}, indent=2))
        return 0
    print(f"SM2 encryption / SM4: {sm2.encryption_backend()} (libcrypto EVP); "
          f"sign/verify backend: {sm2.backend_name()}")
    print(f"{'measurement':42} {'ops/s':>9} {'ms/op':>8}  {'ratio':>7}  vs")
    for r in rows:
        ratio = f"{r.ratio:7.2f}" if r.ratio is not None else "      -"
        print(f"{r.name:42} {r.per_second:9.0f} {1000 / r.per_second:8.3f}  {ratio}  "
              f"{r.reference}{'; ' + r.note if r.note else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
