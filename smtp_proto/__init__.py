"""smtp_proto: a sans-IO SMTP/LMTP server protocol engine.

Bytes in, events out; decisions in, reply bytes out. Standard library only,
no sockets, threads, clocks or randomness. See the docs' "Use the core
directly" guide for a complete blocking server in a few dozen lines.
"""

import sys

# First: it decides whether the other modules load compiled or from source.
from . import _loader
from ._address import AddressError, decode_xtext, parse_path
from ._config import AUTH_MECHANISMS, ServerConfig
from ._connection import ServerConnection
from ._envelope import Envelope
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    DECISION_EVENTS,
    NEED_DATA,
    PAUSED,
    AuthAttempt,
    ConnectionClosed,
    DataChunk,
    Event,
    Hello,
    MailFrom,
    MessageAborted,
    MessageComplete,
    MessageStart,
    ProxyHeader,
    Quit,
    RcptTo,
    Reset,
    Sentinel,
    StartTLS,
    TLSInfo,
    XClient,
    XForward,
)
from ._proxy import MAX_V1_LENGTH as PROXY_V1_MAX_LENGTH
from ._proxy import V2_SIGNATURE as PROXY_V2_SIGNATURE
from ._proxy import parse_proxy_header
from ._replies import check_enhanced, format_reply
from ._session import Session
from ._state import Reply, State

__version__ = "0.1.0"

COMPILED: bool = _loader.is_compiled(sys.modules[ServerConnection.__module__])
"""True when the protocol core runs the mypyc-compiled modules."""
BUILD: str = _loader.BUILD if COMPILED == _loader.COMPILED_WANTED else (
    "pure Python (the compiled modules did not load)")
"""One line saying which build runs and, when pure Python, why."""

__all__ = [
    "AUTH_MECHANISMS",
    "BUILD",
    "COMPILED",
    "DECISION_EVENTS",
    "NEED_DATA",
    "PAUSED",
    "PROXY_V1_MAX_LENGTH",
    "PROXY_V2_SIGNATURE",
    "AddressError",
    "AuthAttempt",
    "ConnectionClosed",
    "DataChunk",
    "Envelope",
    "Event",
    "Hello",
    "LocalProtocolError",
    "MailFrom",
    "MessageAborted",
    "MessageComplete",
    "MessageStart",
    "ProtocolError",
    "ProxyHeader",
    "Quit",
    "RcptTo",
    "RemoteProtocolError",
    "Reply",
    "Reset",
    "ServerConfig",
    "ServerConnection",
    "Session",
    "Sentinel",
    "StartTLS",
    "State",
    "TLSInfo",
    "XClient",
    "XForward",
    "__version__",
    "check_enhanced",
    "decode_xtext",
    "format_reply",
    "parse_path",
    "parse_proxy_header",
]
