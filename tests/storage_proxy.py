"""A loopback proxy in front of the real Azurite that enforces what Azurite does
not: Blob Storage's limit of 1,024 characters on a blob's name; and that shows a copy
in progress (``pending_copy``), which Azurite's instant copies never do.

Azure answers a longer name with ``400 OutOfRangeInput`` ("One of the request
inputs is out of range.", as reported in Azure/azure-powershell#16628); Azurite
accepts it. It can also show a copy into a blob as pending for its first few reads
(``slow_copy``), as Blob Storage does with a copy it has not finished when it
answers. Every other request goes to Azurite unchanged, so the job under test talks
to real storage through it; ``seen`` lists each request (method, blob path, query)
in order, ``answers`` the status each got, and ``before`` may hold any of them
(fault injection: a job paused at that request). Shared Key signatures cover the account and path, not the host, so a
connection string that points at the proxy's port works as it is.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import time
from urllib.parse import unquote, urlsplit

from scorer.storage import MAX_BLOB_NAME, name_length

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class StorageProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.refused: list[str] = []  # blob names refused for length
        self.pending_copy: set[str] = set()  # blobs listed with <CopyStatus>pending</CopyStatus>
        self.slow_copy: dict[str, int] = {}  # "container/blob" -> reads left that show its copy pending
        self.seen: list[tuple[str, str, str]] = []
        self.answers: dict[int, int] = {}  # request's index in seen -> the status it was answered with
        self.forwarded: dict[int, float] = {}  # request's index in seen -> when it went to storage (monotonic)
        # called with (index, method, blob, query) before a request is forwarded; it may block,
        # which holds the request (and the job that sent it) as long as it likes, and may
        # return "drop": the request then never reaches storage
        self.before = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = urlsplit(self.path)
                parts = unquote(url.path).split("/", 3)  # '', account, container, blob
                blob = "/".join(parts[2:])
                with proxy._lock:
                    index = len(proxy.seen)
                    proxy.seen.append((self.command, blob, url.query))
                if proxy.before is not None and proxy.before(index, self.command, blob, url.query) == "drop":
                    self.close_connection = True  # never reaches storage, never answered: the sender died
                    return
                if len(parts) == 4 and name_length(parts[3]) > MAX_BLOB_NAME:
                    proxy.refused.append(parts[3])
                    payload = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>OutOfRangeInput</Code>'
                               b"<Message>One of the request inputs is out of range.</Message></Error>")
                    self.send_response(400, "One of the request inputs is out of range.")
                    self.send_header("x-ms-error-code", "OutOfRangeInput")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                proxy.forwarded[index] = time.monotonic()
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if "comp=list" in self.path:
                    for name in proxy.pending_copy:  # a copy into this blob is still under way
                        tag = f"<Name>{name}</Name><Properties>".encode()
                        data = data.replace(tag, tag + b"<CopyStatus>pending</CopyStatus>")
                # the copy's answer, and each read of its destination while it lasts
                pending = proxy.slow_copy.get(blob, 0) > 0 and resp.getheader("x-ms-copy-status") is not None
                if pending and self.command == "HEAD":
                    proxy.slow_copy[blob] -= 1
                proxy.answers[index] = resp.status
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, "pending" if pending and k.lower() == "x-ms-copy-status" else v)
                # a HEAD's answer has no body, and its Content-Length is the blob's size
                self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True, name="storage-proxy").start()

    def connection_string(self, azurite_connection_string: str) -> str:
        return azurite_connection_string.replace(f"127.0.0.1:{self.upstream_port}", f"127.0.0.1:{self.port}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
