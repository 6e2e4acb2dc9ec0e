"""smtp_anyio: the async SMTP/LMTP server on anyio (asyncio, uvloop, trio)."""

__all__: list[str] = []
