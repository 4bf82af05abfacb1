"""The kit's captive portal: every HTTP request on port 80 is redirected to the customers' shop.

A phone that joins a Wi-Fi network fetches a well-known URL to see whether it is online. On the
kit's Wi-Fi every name resolves to the kit (dnsmasq), so that probe lands here, gets a redirect
instead of the answer it expects, and the phone opens the shop in its sign-in window.

Run by dropkit-portal.service with the listening socket that dropkit-portal.socket passes as
file descriptor 3; the target URL is the one argument.
"""

from __future__ import annotations

import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SYSTEMD_FIRST_SOCKET_FD = 3


class Redirect(BaseHTTPRequestHandler):
    target = ""
    timeout = 10  # an idle client is dropped, not waited on

    def redirect(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = redirect

    def log_message(self, format: str, *args: object) -> None:
        """One line per probe would fill the journal for nothing."""


def main() -> None:
    Redirect.target = sys.argv[1]
    server = ThreadingHTTPServer(("", 0), Redirect, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=SYSTEMD_FIRST_SOCKET_FD)
    server.serve_forever()


if __name__ == "__main__":
    main()
