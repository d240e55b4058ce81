#!/usr/bin/env python3
"""`hopgate tunnel --h2` against one connection per tunnel, in one run: `bench/tunnel_h2.py [--conns N] [--reps N]`.

An https:// hopgate proxy (TLS 1.3, ECDSA P-256) on loopback, an echo target, and `hopgate tunnel --listen` in
front, once with `--h2` (every tunnel a CONNECT stream on one TLS connection) and once without (a TCP connect, a
TLS handshake and an HTTP/1.1 CONNECT per tunnel). Through each, N short local connections in a row (default
1,000): connect, 16 bytes each way, close. Measured per repetition (the two modes interleaved): wall time, and
the CPU seconds of the tunnel client and of the proxy (utime+stime from /proc/PID/stat over the run). The proxy
runs on CPU 0, the tunnel client on CPU 1, this harness and the echo target on CPU 1 too. Prints a markdown
table (median and min-max). Everything it starts is stopped by PID; every run is bounded by the count.

`--idle N` (default 2,000; 0 skips it) also measures memory: N tunnels opened through each mode, each moving 16
bytes and then left idle, and the RSS the proxy and the tunnel client grew by, per tunnel (HTTP/2: one stream
each, over N / 100 connections with the default `--max-streams`).
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True

import measure  # noqa: E402
from measure import fmt_range, markdown_table  # noqa: E402

BIN = os.path.join(REPO, "target", "release", "hopgate")


def echo_server():
    """A threaded TCP echo server on loopback; returns its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1024)

    def serve(c):
        with c:
            try:
                while True:
                    data = c.recv(65536)
                    if not data:
                        return
                    c.sendall(data)
            except OSError:
                return  # a tunnel reset as it closed

    def accept():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv.getsockname()[1]


def start(args, cpu):
    """Starts hopgate pinned to `cpu`; returns (process, the address of its `listening on` line)."""
    p = subprocess.Popen(["taskset", "-c", str(cpu), BIN] + args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        m = re.search(r"listening on \w+://([\d.]+):(\d+)", line)
        if m:
            threading.Thread(target=p.stderr.read, daemon=True).start()
            return p, (m.group(1), int(m.group(2)))
        if not line and p.poll() is not None:
            break
    p.kill()
    sys.exit(f"{args} did not start")


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def ticks(p):
    return sum(measure.cpu_ticks(measure.tree(p.pid)).values())


def one_run(addr, conns):
    payload = b"0123456789abcdef"
    for i in range(conns):
        with socket.create_connection(addr, timeout=20) as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(64)
                if not chunk:
                    sys.exit(f"connection {i} closed after {len(got)} bytes")
                got += chunk
            assert got == payload


def idle_tunnels(addr, n, procs):
    """Opens n tunnels through `addr`, each moving 16 bytes, and returns the KiB per tunnel each of `procs` grew
    by while they sit idle; then closes them."""
    before = [measure.rss_kib(measure.tree(p.pid)) for p in procs]
    held = []
    try:
        for i in range(n):
            s = socket.create_connection(addr, timeout=20)
            held.append(s)
            s.sendall(b"0123456789abcdef")
            got = b""
            while len(got) < 16:
                chunk = s.recv(64)
                if not chunk:
                    sys.exit(f"idle tunnel {i} closed")
                got += chunk
        time.sleep(1)  # let freed handshake state settle before reading RSS
        after = [measure.rss_kib(measure.tree(p.pid)) for p in procs]
    finally:
        for s in held:
            s.close()
    return [(a - b) / n for a, b in zip(after, before)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--idle", type=int, default=2000)
    a = ap.parse_args()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
    tmp = tempfile.TemporaryDirectory()
    cert, key = os.path.join(tmp.name, "proxy.pem"), os.path.join(tmp.name, "proxy.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=proxy.test",
                    "-addext", "subjectAltName=DNS:proxy.test,IP:127.0.0.1"], check=True, capture_output=True)
    echo = echo_server()
    conf = os.path.join(tmp.name, "hopgate.toml")
    with open(conf, "w") as f:
        f.write(f'access_log = "off"\n[[listener]]\nlisten = "https://127.0.0.1:0"\n[[listener.tls]]\n'
                f'cert = "{cert}"\nkey = "{key}"\n[listener.proxy]\nallow_targets = ["127.0.0.1"]\n'
                f'connect_ports = [{echo}]\n[limits]\nmax_connections = 100000\n')
    proxy, paddr = start(["run", conf], 0)
    results = {"h2": [], "h1": []}
    idle = {}
    try:
        for _ in range(a.reps):
            for mode in ("h2", "h1"):
                extra = ["--h2"] if mode == "h2" else []
                client, laddr = start(["tunnel", "--proxy", f"https://127.0.0.1:{paddr[1]}", "--ca", cert,
                                       "--to", f"127.0.0.1:{echo}", "--listen", "127.0.0.1:0"] + extra, 1)
                try:
                    p0, c0, t0 = ticks(proxy), ticks(client), time.monotonic()
                    one_run(laddr, a.conns)
                    wall = time.monotonic() - t0
                    results[mode].append((wall, (ticks(client) - c0) / measure.CLK_TCK,
                                          (ticks(proxy) - p0) / measure.CLK_TCK))
                finally:
                    stop(client)
        for mode in ("h2", "h1") if a.idle else ():
            extra = ["--h2"] if mode == "h2" else []
            client, laddr = start(["tunnel", "--proxy", f"https://127.0.0.1:{paddr[1]}", "--ca", cert,
                                   "--to", f"127.0.0.1:{echo}", "--listen", "127.0.0.1:0"] + extra, 1)
            try:
                idle[mode] = idle_tunnels(laddr, a.idle, [proxy, client])
            finally:
                stop(client)
    finally:
        stop(proxy)
    rows = []
    for mode, label in (("h1", "one TLS connection per tunnel (HTTP/1.1 CONNECT)"),
                        ("h2", "`--h2`: streams of one HTTP/2 connection")):
        r = results[mode]
        rows.append([label, fmt_range([x[0] for x in r], 2, " s"), fmt_range([x[1] for x in r], 2, " s"),
                     fmt_range([x[2] for x in r], 2, " s"),
                     fmt_range([a.conns / (x[1] + x[2]) if x[1] + x[2] else None for x in r], 0)])
    print(f"{a.conns} short connections in a row through `hopgate tunnel` ({a.reps} repetitions, load "
          f"{measure.loadavg()}):\n")
    print(markdown_table(["mode", "wall time", "tunnel client CPU", "proxy CPU",
                          "tunnels per CPU-second (both sides)"], rows))
    if idle:
        print(f"\n{a.idle} idle tunnels (RSS growth per tunnel):\n")
        print(markdown_table(["mode", "proxy KiB per tunnel", "tunnel client KiB per tunnel"],
                             [[m, f"{idle[m][0]:.2f}", f"{idle[m][1]:.2f}"] for m in ("h1", "h2") if m in idle]))


if __name__ == "__main__":
    main()
