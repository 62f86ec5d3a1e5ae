#!/usr/bin/env python3
"""A TLS front for a plain-HTTP test server: accepts HTTPS on 127.0.0.1 (a free port) with the given
certificate and passes the bytes both ways to BACKEND (host:port). Lets tests put a scripted, hostile
HTTP server behind HTTPS. Prints "listening on 127.0.0.1:PORT". Test use only, loopback only.
usage: tls-front.py CERT KEY BACKEND"""
import socket
import ssl
import sys
import threading

cert, key, backend = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = backend.rsplit(":", 1)
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print("listening on 127.0.0.1:%d" % listener.getsockname()[1], flush=True)


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(conn):
    conn.settimeout(120)
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
        up = socket.create_connection((host, int(port)), timeout=120)
    except (OSError, ssl.SSLError):
        conn.close()
        return
    threading.Thread(target=pipe, args=(tls, up), daemon=True).start()
    pipe(up, tls)


while True:
    c, _ = listener.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
