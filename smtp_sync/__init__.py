"""smtp_sync: the threaded SMTP/LMTP server on blocking sockets."""

__all__: list[str] = []
