"""Which build of the protocol core runs, and proof that it does not matter.

Prints the build, then drives one conversation through the core and prints
every reply and event. Run it twice and compare::

    python docs/examples/core_build.py > compiled.txt
    SMTP_PROTO_PURE=1 python docs/examples/core_build.py > pure.txt
    diff compiled.txt pure.txt    # only the first line differs
"""

from __future__ import annotations

import smtp_proto
from smtp_proto import NEED_DATA, DataChunk, ServerConfig, ServerConnection

CONVERSATION = [
    b"EHLO client.example.org\r\n",
    b"MAIL FROM:<alice@example.org> SIZE=120 BODY=8BITMIME\r\n",
    b"RCPT TO:<bob@example.net>\r\nRCPT TO:<not an address>\r\n",
    b"DATA\r\n",
    b"Subject: hello\r\n\r\n..a stuffed dot\r\n.\r\n",
    b"BDAT 6\r\nQUIT\r\n",  # BDAT without MAIL: refused, its 6 octets skipped
    b"QUIT\r\n",
]


def main() -> None:
    print(f"core: {smtp_proto.BUILD} (COMPILED={smtp_proto.COMPILED})")
    conn = ServerConnection(ServerConfig(name="mx.example.com", auth_optional=True),
                            remote_address="192.0.2.7")
    conn.send_greeting()
    print("S:", conn.data_to_send())
    for data in CONVERSATION:
        print("C:", data)
        conn.receive_data(data)
        while (event := conn.next_event()) is not NEED_DATA:
            print("   event:", type(event).__name__,
                  event.data if isinstance(event, DataChunk) else "")
            if conn.pending is not None:
                conn.accept()
            if type(event).__name__ == "ConnectionClosed":
                break
        print("S:", conn.data_to_send())


if __name__ == "__main__":
    main()
