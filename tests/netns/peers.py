#!/usr/bin/env python3
"""The far end of the latency rig, run inside namespace B (the kernel answers ICMP).

- TCP: accepts on --tcp-port and closes at once.
- HTTP: on --http-port, GET / -> 200, /fail -> 503, /redirect -> 302 (to /).
- HTTPS: the same on --https-port with --cert/--key (when given).
- DNS: UDP on --dns-port; A query for --dns-name -> one A record (--dns-answer);
  any other type for that name -> no answer (NOERROR); any other name -> NXDOMAIN.

Everything binds --addr only. Prints "ready" once all are listening; exits when
stdin closes. python3 standard library only.
"""

import argparse
import http.server
import socket
import ssl
import struct
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    routes = {"/": (200, b"ok\n"), "/fail": (503, b"down for maintenance\n")}

    def do_GET(self):  # noqa: N802 (stdlib naming)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, body = self.routes.get(self.path, (404, b"not found\n"))
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # e.g. a client that rejects our certificate: expected in the tests


def serve_http(addr, port, tls_context=None):
    server = QuietServer((addr, port), Handler)
    if tls_context is not None:
        # Handshake in the handler thread, not in the accept loop.
        server.socket = tls_context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def serve_tcp(addr, port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((addr, port))
    listener.listen(128)

    def accept():
        while True:
            connection, _ = listener.accept()
            connection.close()

    threading.Thread(target=accept, daemon=True).start()


def read_name(packet, offset):
    labels = []
    while True:
        length = packet[offset]
        offset += 1
        if length == 0:
            return ".".join(labels), offset
        labels.append(packet[offset : offset + length].decode("ascii", "replace"))
        offset += length


def dns_answer(query, name, answer):
    query_id, flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1:
        return None
    qname, offset = read_name(query, 12)
    qtype, qclass = struct.unpack("!HH", query[offset : offset + 4])
    question = query[12 : offset + 4]
    recursion_desired = flags & 0x0100
    if qname.lower().rstrip(".") != name.lower().rstrip("."):
        header = struct.pack("!HHHHHH", query_id, 0x8080 | recursion_desired | 3, 1, 0, 0, 0)
        return header + question
    if qtype != 1 or qclass != 1:
        header = struct.pack("!HHHHHH", query_id, 0x8480 | recursion_desired, 1, 0, 0, 0)
        return header + question
    header = struct.pack("!HHHHHH", query_id, 0x8480 | recursion_desired, 1, 1, 0, 0)
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(answer)
    return header + question + record


def serve_dns(addr, port, name, answer):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))

    def loop():
        while True:
            query, peer = sock.recvfrom(4096)
            try:
                response = dns_answer(query, name, answer)
            except (IndexError, struct.error):
                continue
            if response is not None:
                sock.sendto(response, peer)

    threading.Thread(target=loop, daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True)
    parser.add_argument("--tcp-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--https-port", type=int)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--dns-port", type=int, required=True)
    parser.add_argument("--dns-name", required=True)
    parser.add_argument("--dns-answer", required=True)
    args = parser.parse_args()

    serve_tcp(args.addr, args.tcp_port)
    serve_http(args.addr, args.http_port)
    if args.https_port and args.cert and args.key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        serve_http(args.addr, args.https_port, context)
    serve_dns(args.addr, args.dns_port, args.dns_name, args.dns_answer)
    print("ready", flush=True)
    while sys.stdin.buffer.read(4096):
        pass


if __name__ == "__main__":
    main()
