"""SM2 point arithmetic written out from GB/T 32918 for the tests: an independent check.

Affine coordinates, Python's big integers, no tricks: slow (milliseconds a multiplication)
and obviously right, unlike the pure-Python gmssl package, whose Jacobian formatting breaks
now and then (a point string loses a leading zero and `_double_point` returns None).
"""

from __future__ import annotations

P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = P - 3
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
G = (0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7,
     0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0)

Point = tuple[int, int] | None  # None: the point at infinity


def add(p1: Point, p2: Point) -> Point:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p1 == p2:
        lam = (3 * x1 * x1 + A) * pow(2 * y1, -1, P) % P
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (lam * lam - x1 - x2) % P
    return x3, (lam * (x1 - x3) - y1) % P


def multiply(k: int, point: Point = G) -> Point:
    result: Point = None
    addend = point
    while k:
        if k & 1:
            result = add(result, addend)
        addend = add(addend, addend)
        k >>= 1
    return result


def public_key(d: int) -> bytes:
    """d·G as 04||X||Y."""
    pt = multiply(d)
    assert pt is not None
    return b"\x04" + pt[0].to_bytes(32, "big") + pt[1].to_bytes(32, "big")


def verify_digest(pub65: bytes, e: bytes, r: int, s: int) -> bool:
    """SM2 verification of (r, s) over e = SM3(Z||M) (GB/T 32918.2 §7.1)."""
    if not (1 <= r < N and 1 <= s < N):
        return False
    t = (r + s) % N
    if t == 0:
        return False
    q = (int.from_bytes(pub65[1:33], "big"), int.from_bytes(pub65[33:65], "big"))
    pt = add(multiply(s), multiply(t, q))
    if pt is None:
        return False
    return (int.from_bytes(e, "big") + pt[0]) % N == r
