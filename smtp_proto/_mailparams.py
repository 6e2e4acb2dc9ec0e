"""MAIL and RCPT: turning a command's argument into a ``MailFrom``/``RcptTo``.

A parameter of an extension we do not advertise is refused with 555 5.5.4
(RFC 5321 section 4.1.1.11), a malformed value with 501 5.5.4.
"""

from __future__ import annotations

from typing import Literal

from ._address import AddressError, decode_xtext, parse_params, parse_path, split_path
from ._config import ServerConfig
from ._events import MailFrom, RcptTo

__all__ = ["parse_mail", "parse_rcpt"]

_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_MAX_ENVID = 100  # RFC 3461 section 4.4
_MAX_SIZE_DIGITS = 20


def _unsupported(key: str) -> AddressError:
    return AddressError(555, "5.5.4", f"Error: unsupported parameter {key}")


def _flag(params: dict[str, str | None], key: str) -> None:
    if params[key] is not None:
        raise AddressError(501, "5.5.4", f"Error: {key} takes no value")


def _value(params: dict[str, str | None], key: str) -> str:
    value = params[key]
    if value is None:
        raise AddressError(501, "5.5.4", f"Error: {key} needs a value")
    return value


def _split_command_arg(arg: str, keyword: str, sender: bool) -> tuple[str, str]:
    head = arg[: len(keyword)]
    if head.upper() != keyword:
        example = "MAIL FROM:<address>" if sender else "RCPT TO:<address>"
        raise AddressError(501, "5.5.4", f"Error: syntax: {example}")
    return split_path(arg[len(keyword) :])


def parse_mail(arg: str, cfg: ServerConfig, *, secure: bool) -> MailFrom:
    """``FROM:<path> [params]`` (the text after ``MAIL ``)."""
    path, rest = _split_command_arg(arg, "FROM:", sender=True)
    params = parse_params(rest, utf8=cfg.smtputf8)
    size: int | None = None
    body: Literal["7BIT", "8BITMIME", "BINARYMIME"] | None = None
    ret: Literal["FULL", "HDRS"] | None = None
    envid = auth = None
    smtputf8 = requiretls = False
    for key in params:
        if key == "SIZE":
            value = _value(params, key)
            if not value.isdigit() or not value.isascii() or len(value) > _MAX_SIZE_DIGITS:
                raise AddressError(501, "5.5.4", "Error: bad SIZE value")
            size = int(value)
            if cfg.size is not None and size > cfg.size:
                raise AddressError(
                    552, "5.3.4",
                    f"Error: message exceeds fixed maximum message size {cfg.size}",
                )
        elif key == "BODY":
            kind = _value(params, key).upper()
            if kind == "7BIT":
                body = "7BIT"
            elif kind == "8BITMIME" and not cfg.hide_8bitmime:
                body = "8BITMIME"
            elif kind == "BINARYMIME" and cfg.chunking:
                body = "BINARYMIME"
            elif kind in ("8BITMIME", "BINARYMIME"):
                raise _unsupported(f"BODY={kind}")
            else:
                raise AddressError(501, "5.5.4", "Error: BODY must be 7BIT or 8BITMIME")
        elif key == "SMTPUTF8" and cfg.smtputf8:
            _flag(params, key)
            smtputf8 = True
        elif key == "REQUIRETLS" and not cfg.hide_requiretls:
            _flag(params, key)
            if not secure:
                # RFC 8689 section 2: only ever offered over TLS.
                raise AddressError(530, "5.7.10", "Error: REQUIRETLS needs a TLS connection")
            requiretls = True
        elif key == "RET" and not cfg.hide_dsn:
            value = _value(params, key).upper()
            if value == "FULL":
                ret = "FULL"
            elif value == "HDRS":
                ret = "HDRS"
            else:
                raise AddressError(501, "5.5.4", "Error: RET must be FULL or HDRS")
        elif key == "ENVID" and not cfg.hide_dsn:
            envid = decode_xtext(_value(params, key))
            if len(envid) > _MAX_ENVID or not envid.isascii():
                raise AddressError(501, "5.5.4", "Error: bad ENVID value")
        elif key == "AUTH" and cfg.auth_enabled:
            # RFC 4954 section 5: the identity that submitted the message.
            auth = decode_xtext(_value(params, key))
        else:
            raise _unsupported(key)
    address = parse_path(path, utf8=smtputf8, allow_null=True, sender=True)
    return MailFrom(
        address=address, params=params, size=size, body=body, smtputf8=smtputf8,
        requiretls=requiretls, ret=ret, envid=envid, auth=auth,
    )


def parse_rcpt(arg: str, cfg: ServerConfig, *, smtputf8: bool) -> RcptTo:
    """``TO:<path> [params]`` (the text after ``RCPT ``)."""
    path, rest = _split_command_arg(arg, "TO:", sender=False)
    params = parse_params(rest, utf8=smtputf8)
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    for key in params:
        if key == "NOTIFY" and not cfg.hide_dsn:
            values = tuple(v.upper() for v in _value(params, key).split(","))
            if values != ("NEVER",) and not (
                values and set(values) <= _NOTIFY_VALUES and len(set(values)) == len(values)
            ):
                raise AddressError(
                    501, "5.5.4",
                    "Error: NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
                )
            notify = values
        elif key == "ORCPT" and not cfg.hide_dsn:
            addr_type, semi, xtext = _value(params, key).partition(";")
            if not semi or not addr_type or not xtext:
                raise AddressError(501, "5.5.4", "Error: ORCPT must be addr-type;address")
            orcpt = f"{addr_type};{decode_xtext(xtext)}"
        else:
            raise _unsupported(key)
    address = parse_path(path, utf8=smtputf8, allow_postmaster=True, sender=False)
    return RcptTo(address=address, params=params, notify=notify, orcpt=orcpt)
