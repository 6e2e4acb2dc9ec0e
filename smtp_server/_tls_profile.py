"""The default TLS profile: Mozilla's "intermediate" configuration.

TLS 1.2 and 1.3 only, forward-secret AEAD suites only (AES-GCM and
ChaCha20-Poly1305; no CBC, so nothing for LUCKY13-style attacks), and the
key-exchange groups X25519, P-256 and P-384. Python's own server default
also offers the AES-CBC-SHA256/384 suites and, through OpenSSL's default
group list, secp521r1 and X448, which the profile leaves out.

Python's ``ssl`` can set the cipher list but not the group list (there is
no ``set1_groups`` binding before the interpreter offers one): on CPython
the list is set through OpenSSL's ``SSL_CTX_ctrl`` on the context's own
``SSL_CTX``, after checking that the pointer found is that context's. Where
that is not possible the groups stay OpenSSL's defaults.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
from functools import cache
from typing import Any

__all__ = ["INTERMEDIATE_CIPHERS", "INTERMEDIATE_GROUPS", "set_groups"]

INTERMEDIATE_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
))
"""TLS 1.2 suites (TLS 1.3's are AEAD only already)."""
INTERMEDIATE_GROUPS = "X25519:P-256:P-384"

_SSL_CTRL_SET_GROUPS_LIST = 92  # OpenSSL's ssl.h


@cache
def _openssl() -> Any | None:
    """libssl's functions, through the ``_ssl`` module that links it."""
    if sys.implementation.name != "cpython":
        return None
    try:
        import _ssl  # noqa: PLC0415 - only to find the library

        lib = ctypes.CDLL(_ssl.__file__)
        get_options = lib.SSL_CTX_get_options
        ctrl = lib.SSL_CTX_ctrl
    except (OSError, AttributeError):
        return None
    get_options.restype = ctypes.c_uint64
    get_options.argtypes = [ctypes.c_void_p]
    ctrl.restype = ctypes.c_long
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    return lib


def _ssl_ctx_pointer(ctx: ssl.SSLContext, lib: Any) -> int | None:
    """The ``SSL_CTX *`` inside ``ctx``: CPython's context object starts with
    it, right after the object header. Checked by reading the context's
    options through OpenSSL and comparing them with ``ctx.options``."""
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer:
        return None
    if int(lib.SSL_CTX_get_options(pointer)) != int(ctx.options):
        return None
    return int(pointer)


def set_groups(ctx: ssl.SSLContext, groups: str) -> bool:
    """Restrict ``ctx``'s key-exchange groups to ``groups`` (OpenSSL names,
    colon-separated). False if that cannot be done here; ValueError if
    OpenSSL refuses the list."""
    setter = getattr(ctx, "set_groups", None)  # a future Python's own binding
    if setter is not None:
        setter(groups.split(":"))
        return True
    lib = _openssl()
    if lib is None:
        return False
    pointer = _ssl_ctx_pointer(ctx, lib)
    if pointer is None:
        return False
    if lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode("ascii")) != 1:
        raise ValueError(f"unknown key-exchange groups {groups!r}")
    return True
