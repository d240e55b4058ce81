#!/usr/bin/python3
"""Makes the seed corpora in fuzz/corpus/ from real peers and clients (docs/fuzzing.md):

- ftp_reply, ftp_listing: the control-connection bytes and LIST/MLSD listings of real vsftpd and pyftpdlib servers;
- fastcgi_record, cgi_head: the records hopgate and php-fpm exchange (recorded by a relay between them), and the
  CGI heads php-fpm and real CGI scripts write;
- scgi_netstring: the SCGI request heads hopgate sends (recorded by an SCGI application here);
- htpasswd: lines the real `htpasswd` writes (bcrypt, {SHA}, apr1, and the refused plain/crypt forms);
- http_fields, range, host, url_paths: request heads curl sends (recorded by a listener here);
- config_load, config_values: examples/*.toml and the values in them;
- proxy_protocol: the PROXY headers HAProxy sends (send-proxy, send-proxy-v2 with its TLVs: TLS details, unique
  ID, CRC32C; the LOCAL header of its health checks), over IPv4 and IPv6, each followed by the request it relayed.
- client_hello: the ClientHellos curl, openssl s_client (TLS 1.2, 1.3, no SNI) and Python's ssl send (recorded
  by a listener here), and each of them cut into several records;
- htpasswd also gets an Apache groups file (the target reads both formats).

Run from the repository root with Debian's python3 (it has pyftpdlib): `/usr/bin/python3 fuzz/seeds.py`. Needs the
packages .ci/run installs and a built target/release/hopgate. Existing seed files of the same name are replaced;
regress-* files (findings) are left alone. Every peer is started on loopback and stopped by its PID.
"""

import base64
import email.utils
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
HOPGATE = os.path.join(ROOT, "target", "release", "hopgate")
started = []


def save(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def spawn(args, **kw):
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, **kw)
    started.append(p)
    return p


def stop(p):
    if p.poll() is None:
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


def free_port(low=False):
    if low:
        # below the ephemeral range, for vsftpd's passive ports (shared/PEERS.md)
        for base in range(21000, 31000, 17):
            socks = []
            try:
                for p in range(base, base + 12):
                    s = socket.socket()
                    s.bind(("127.0.0.1", p))
                    socks.append(s)
                return base
            except OSError:
                continue
            finally:
                for s in socks:
                    s.close()
        raise SystemExit("no free low ports")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, what, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port}")


# ---------------------------------------------------------------- FTP


def fill_tree(root):
    os.makedirs(os.path.join(root, "sub dir"))
    with open(os.path.join(root, "file.txt"), "wb") as f:
        f.write(b"x" * 1234)
    with open(os.path.join(root, "name with  spaces.txt"), "wb") as f:
        f.write(b"hello\n")
    with open(os.path.join(root, "\u00fcber \u2603.bin"), "wb") as f:
        f.write(b"\0" * 7)
    open(os.path.join(root, "empty"), "wb").close()
    with open(os.path.join(root, "sub dir", "inner.txt"), "wb") as f:
        f.write(b"inner\n")
    os.symlink("file.txt", os.path.join(root, "link"))
    os.utime(os.path.join(root, "file.txt"), (1675166405, 1675166405))
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for n in filenames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.chmod(p, 0o644)


class FtpClient:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), 10)
        self.buf = b""
        self.transcript = b""

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                raise SystemExit("ftp server closed")
            self.buf += chunk
        i = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def reply(self):
        first = self.line()
        raw = first
        if first[3:4] == b"-":
            code = first[:3]
            while True:
                line = self.line()
                raw += line
                if line[:3] == code and line[3:4] in (b" ", b"\r", b"\n"):
                    break
        self.transcript += raw
        return raw

    def cmd(self, text):
        self.s.sendall(text.encode() + b"\r\n")
        return self.reply()

    def data(self, verb):
        r = self.cmd("EPSV")
        m = re.search(rb"\(\|\|\|(\d+)\|\)", r)
        if m:
            port = int(m.group(1))
        else:
            r = self.cmd("PASV")
            nums = [int(x) for x in re.search(rb"(\d+,\d+,\d+,\d+,\d+,\d+)", r).group(1).split(b",")]
            port = nums[4] * 256 + nums[5]
        d = socket.create_connection(("127.0.0.1", port), 10)
        first = self.cmd(verb)
        body = b""
        if first[:1] == b"1":
            while True:
                chunk = d.recv(65536)
                if not chunk:
                    break
                body += chunk
            d.close()
            self.reply()
        else:
            d.close()
        return body


def ftp_session(name, port):
    c = FtpClient(port)
    replies = {"greeting": c.reply()}
    for key, command in [
        ("user", "USER anonymous"),
        ("pass", "PASS hopgate@"),
        ("syst", "SYST"),
        ("feat", "FEAT"),
        ("opts", "OPTS UTF8 ON"),
        ("pwd", "PWD"),
        ("type", "TYPE I"),
        ("size", "SIZE file.txt"),
        ("mdtm", "MDTM file.txt"),
        ("mlst-file", "MLST file.txt"),
        ("mlst-dir", "MLST sub dir"),
        ("size-missing", "SIZE nope.txt"),
        ("cwd", "CWD sub dir"),
        ("cwd-back", "CWD /"),
        ("help", "HELP"),
        ("stat", "STAT"),
        ("rest", "REST 5"),
        ("rest-0", "REST 0"),
        ("retr-missing", "RETR nope.txt"),
    ]:
        replies[key] = c.cmd(command)
    listing = c.data("LIST")
    mlsd = c.data("MLSD") if b"MLST" in replies["feat"] else None
    list_a = c.data("LIST -a")
    replies["epsv"] = c.cmd("EPSV")
    replies["pasv"] = c.cmd("PASV")
    replies["quit"] = c.cmd("QUIT")
    save("ftp_reply", f"{name}-session", c.transcript)
    for key in ["greeting", "feat", "pwd", "mdtm", "size", "mlst-file", "mlst-dir", "help", "stat", "epsv", "pasv",
                "retr-missing"]:
        save("ftp_reply", f"{name}-{key}", replies[key])
    save("ftp_listing", f"{name}-list", listing)
    save("ftp_listing", f"{name}-list-a", list_a)
    if mlsd is not None:
        save("ftp_listing", f"{name}-mlsd", mlsd)
    for key in ["mlst-file", "mlst-dir"]:
        if replies[key].startswith(b"250"):
            save("ftp_listing", f"{name}-{key}", replies[key])


def vsftpd():
    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, "root")
    empty = os.path.join(tmp, "empty")
    os.makedirs(root)
    os.makedirs(empty)
    fill_tree(root)
    os.chmod(tmp, 0o755)
    os.chmod(root, 0o555)
    base = free_port(low=True)
    user = "ftp" if subprocess.run(["id", "ftp"], capture_output=True).returncode == 0 else "nobody"
    conf = os.path.join(tmp, "vsftpd.conf")
    with open(conf, "w") as f:
        f.write(
            f"listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={base}\nbackground=NO\n"
            f"seccomp_sandbox=NO\nisolate=NO\nisolate_network=NO\nsecure_chroot_dir={empty}\n"
            f"anonymous_enable=YES\nno_anon_password=YES\nanon_root={root}\nftp_username={user}\nlocal_enable=NO\n"
            f"pasv_enable=YES\npasv_address=127.0.0.1\npasv_min_port={base + 1}\npasv_max_port={base + 11}\n"
            f"utf8_filesystem=YES\nuse_localtime=NO\n"
        )
    os.chmod(conf, 0o600)
    p = spawn(["/usr/sbin/vsftpd", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(base, "vsftpd")
        ftp_session("vsftpd", base)
    finally:
        stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


PYFTPD = r"""
import logging, sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
auth = DummyAuthorizer()
auth.add_anonymous(sys.argv[1])
FTPHandler.authorizer = auth
FTPHandler.banner = "pyftpdlib ready"
logging.basicConfig(level=logging.WARNING)
server = FTPServer(("127.0.0.1", int(sys.argv[2])), FTPHandler)
server.serve_forever()
"""


def pyftpdlib():
    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, "root")
    os.makedirs(root)
    fill_tree(root)
    script = os.path.join(tmp, "server.py")
    with open(script, "w") as f:
        f.write(PYFTPD)
    port = free_port()
    p = spawn(["/usr/bin/python3", script, root, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, "pyftpdlib")
        ftp_session("pyftpdlib", port)
    finally:
        stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- recorders, hopgate, curl


class Relay:
    """Relays each connection to `upstream` and records the bytes of both directions."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(self.upstream)
            rec = {"up": bytearray(), "down": bytearray()}
            self.conns.append(rec)
            threading.Thread(target=self.pump, args=(c, u, rec["up"]), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c, rec["down"]), daemon=True).start()

    @staticmethod
    def pump(a, b, into):
        try:
            while True:
                chunk = a.recv(65536)
                if not chunk:
                    break
                into.extend(chunk)
                b.sendall(chunk)
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Recorder:
    """Reads whatever arrives on each connection until the peer stops sending for a moment, then answers."""

    def __init__(self, answer, settle=0.3):
        self.answer = answer
        self.settle = settle
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.got = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        data = bytearray()
        c.settimeout(self.settle)
        while True:
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data.extend(chunk)
        self.got.append(bytes(data))
        try:
            c.sendall(self.answer(bytes(data)))
        except OSError:
            pass
        c.close()


def hopgate_gateway(to, *extra):
    port = free_port()
    p = spawn([HOPGATE, "-q", "--access-log", "off", "gateway", "--listen", f"127.0.0.1:{port}", "--to", to, *extra],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, "hopgate")
    return p, port


def curl(*args, data=None):
    subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "10", *args], input=data,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fcgi_records(data):
    """(type, content, raw bytes of the record) for each record."""
    out = []
    while len(data) >= 8:
        _, kind, rid, length, pad, _ = struct.unpack(">BBHHBB", data[:8])
        out.append((kind, data[8:8 + length], data[:8 + length + pad]))
        data = data[8 + length + pad:]
    return out


def fcgi_exchanges(data, first):
    """The records of a kept connection cut into requests: each starts at a record of type `first` (hopgate's
    BEGIN_REQUEST), or ends at one (php-fpm's END_REQUEST) when `first` is negative."""
    exchanges, current = [], []
    for kind, content, raw in fcgi_records(data):
        if first > 0 and kind == first and current:
            exchanges.append(current)
            current = []
        current.append((kind, content, raw))
        if first < 0 and kind == -first:
            exchanges.append(current)
            current = []
    if current:
        exchanges.append(current)
    return exchanges


PHP = {
    "index.php": "<?php header('X-App: hopgate-seed'); setcookie('a', 'b'); echo 'hello ', $_SERVER['REQUEST_URI'];",
    "redirect.php": "<?php header('Location: http://example.com/elsewhere'); echo 'moved';",
    "local.php": "<?php header('Location: /index.php?from=local');",
    "status.php": "<?php http_response_code(404); header('Content-Type: text/plain'); echo 'not here';",
    "post.php": "<?php echo file_get_contents('php://input');",
}


def php_fpm():
    tmp = tempfile.mkdtemp()
    os.chmod(tmp, 0o755)
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    os.chmod(www, 0o755)
    for name, text in PHP.items():
        with open(os.path.join(www, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(www, name), 0o644)
    port = free_port()
    log = os.path.join(tmp, "fpm.log")
    conf = os.path.join(tmp, "fpm.conf")
    with open(conf, "w") as f:
        f.write(f"[global]\nerror_log = {log}\ndaemonize = no\n[www]\nuser = nobody\ngroup = nogroup\n"
                f"listen = 127.0.0.1:{port}\npm = static\npm.max_children = 2\n")
    fpm = spawn(["/usr/sbin/php-fpm8.2", "-F", "-n", "-y", conf, "-p", tmp], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
    relay = Relay(("127.0.0.1", port))
    hop = None
    try:
        wait_port(port, "php-fpm")
        hop, hport = hopgate_gateway(f"fastcgi://127.0.0.1:{relay.port}", "--root", www)
        base = f"http://127.0.0.1:{hport}"
        curl(f"{base}/index.php/extra?x=1&y=%20")
        curl(f"{base}/redirect.php")
        curl(f"{base}/local.php")
        curl(f"{base}/status.php")
        curl("--data-binary", "@-", f"{base}/post.php", data=b"a=1&b=" + b"z" * 3000)
        time.sleep(0.5)
        names = ["index", "redirect", "local", "status", "post"]
        requests = [x for rec in relay.conns for x in fcgi_exchanges(bytes(rec["up"]), 1)]
        responses = [x for rec in relay.conns for x in fcgi_exchanges(bytes(rec["down"]), -3)]
        for name, req in zip(names, requests):
            save("fastcgi_record", f"hopgate-request-{name}", b"".join(raw for _, _, raw in req))
            save("fastcgi_record", f"hopgate-params-{name}", b"".join(c for k, c, _ in req if k == 4))
        for name, resp in zip(names, responses):
            save("fastcgi_record", f"php-fpm-response-{name}", b"".join(raw for _, _, raw in resp))
            save("cgi_head", f"php-fpm-{name}", b"".join(c for k, c, _ in resp if k == 6))
    finally:
        if hop:
            stop(hop)
        stop(fpm)
        shutil.rmtree(tmp, ignore_errors=True)


def scgi():
    rec = Recorder(lambda _: b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok\n")
    hop, hport = hopgate_gateway(f"scgi://127.0.0.1:{rec.port}")
    try:
        base = f"http://127.0.0.1:{hport}"
        curl(f"{base}/app/path?q=1", "-H", "X-Custom: value")
        curl("--data-binary", "@-", f"{base}/submit", data=b"field=value")
        curl("-H", "Cookie: a=b", "-H", "Accept: application/json", f"{base}/")
        time.sleep(0.5)
        for i, got in enumerate(rec.got):
            save("scgi_netstring", f"hopgate-request-{i}", got)
    finally:
        stop(hop)
    # The example of the SCGI protocol's own description.
    save("scgi_netstring", "spec-example",
         b"70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00REQUEST_URI\x00/deepthought\x00,"
         b"What is the answer to life?")


CGI_SCRIPTS = {
    "hello.sh": None,  # examples/cgi-bin/hello.sh
    "status.sh": "#!/bin/sh\nprintf 'Status: 404 Not Found\\nContent-Type: text/plain\\n\\nnope\\n'\n",
    "local.sh": "#!/bin/sh\nprintf 'Location: /cgi-bin/hello.sh?from=local\\n\\n'\n",
    "client.sh": "#!/bin/sh\nprintf 'Location: https://example.com/x\\r\\nStatus: 301 Moved\\r\\n\\r\\nmoved\\n'\n",
    "nph-raw.sh": "#!/bin/sh\nprintf 'HTTP/1.1 200 Fine Thanks\\r\\nContent-Type: text/plain\\r\\nX-Nph: 1\\r\\n\\r\\nraw\\n'\n",
    "env.py": "#!/usr/bin/python3\nimport os\nprint('Content-Type: text/plain; charset=utf-8')\n"
              "print('Content-Length: 5')\nprint('Set-Cookie: s=1; Path=/')\nprint()\nprint('env!', end='')\n",
}


def cgi():
    tmp = tempfile.mkdtemp()
    env = dict(os.environ, GATEWAY_INTERFACE="CGI/1.1", REQUEST_METHOD="GET", SCRIPT_NAME="/cgi-bin/x",
               PATH_INFO="/a/b", QUERY_STRING="q=1", SERVER_PROTOCOL="HTTP/1.1", SERVER_NAME="localhost",
               SERVER_PORT="8080", REMOTE_ADDR="127.0.0.1")
    try:
        for name, text in CGI_SCRIPTS.items():
            path = os.path.join(ROOT, "examples", "cgi-bin", name)
            if text is not None:
                path = os.path.join(tmp, name)
                with open(path, "w") as f:
                    f.write(text)
                os.chmod(path, 0o755)
            out = subprocess.run([path], env=env, capture_output=True, timeout=10).stdout
            save("cgi_head", f"cgi-{name}", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def curl_heads():
    rec = Recorder(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    base = f"http://127.0.0.1:{rec.port}"
    proxy = ["-x", base]
    runs = [
        ("get", [f"{base}/index.html", "-H", "Host: Example.COM:8080"]),
        ("proxy", proxy + ["http://example.com/a/b?c=d"]),
        ("proxy-auth", proxy + ["-U", "ann:s3cret", "http://example.com/"]),
        ("proxy-ftp", proxy + ["ftp://bob:pw@ftp.example.org/pub/a%20b.txt"]),
        ("range", [f"{base}/file.bin", "-r", "100-"]),
        ("range-if-range", [f"{base}/file.bin", "-r", "5-", "-H",
                            "If-Range: " + email.utils.formatdate(1700000000, usegmt=True)]),
        ("trace", ["-X", "TRACE", "-H", "Max-Forwards: 3", f"{base}/"]),
        ("options", ["-X", "OPTIONS", "-H", "Max-Forwards: 0", f"{base}/"]),
        ("forwarded", [f"{base}/", "-H", "Via: 1.0 fred, 1.1 p.example.net", "-H", "Forwarded: for=192.0.2.60;proto=http",
                       "-H", "X-Forwarded-For: 6.6.6.6"]),
        ("post", ["--data-binary", "@-", f"{base}/form"]),
        ("chunked", ["-T", "-", "-H", "Transfer-Encoding: chunked", f"{base}/upload"]),
        ("basic", ["-u", "bob:p:w", f"{base}/pub/"]),
        ("json", ["-H", "Accept: text/html;q=0.5, application/json", f"{base}/pub/"]),
        ("since", ["-z", "Tue, 14 Nov 2023 22:13:20 GMT", f"{base}/pub/file"]),
        ("http10", ["--http1.0", f"{base}/"]),
        ("connection", [f"{base}/", "-H", "Connection: keep-alive, X-Secret", "-H", "X-Secret: 1",
                        "-H", "Keep-Alive: timeout=5"]),
        ("ipv6-host", [f"{base}/", "-H", "Host: [::1]:8080"]),
    ]
    for name, args in runs:
        before = len(rec.got)
        curl(*args, data=b"a=1&b=2")
        deadline = time.time() + 5
        while len(rec.got) == before and time.time() < deadline:
            time.sleep(0.05)
        head = rec.got[-1] if len(rec.got) > before else b""
        for target in ["http_fields", "range"]:
            save(target, f"curl-{name}", head)
        lines = head.split(b"\r\n")
        target = lines[0].split(b" ")[1] if b" " in lines[0] else b"/"
        hosts = [l.split(b":", 1)[1].strip() for l in lines[1:] if l.lower().startswith(b"host:")]
        save("host", f"curl-{name}", b"\n".join([target] + hosts))
        save("url_paths", f"curl-{name}", target.split(b"?")[0])


def htpasswd():
    entries = []
    for flag, user in [("-nbB", "ann"), ("-nbs", "bob"), ("-nbm", "carol"), ("-nbp", "dave"), ("-nbd", "eve")]:
        extra = ["-C", "4"] if flag == "-nbB" else []
        out = subprocess.run(["htpasswd", flag, *extra, user, "pa:ss w\u00f6rd"], capture_output=True).stdout
        line = out.strip().decode()
        entries.append(line)
        save("htpasswd", f"htpasswd{flag}", line + "\n")
    save("htpasswd", "file", "# users for hopgate\n\n" + "\r\n".join(entries[:3]) + "\n")
    token = base64.b64encode("ann:pa:ss w\u00f6rd".encode()).decode()
    save("htpasswd", "proxy-authorization", f"Basic {token}")


def configs():
    for name in sorted(os.listdir(os.path.join(ROOT, "examples"))):
        if name.endswith(".toml"):
            with open(os.path.join(ROOT, "examples", name), "rb") as f:
                text = f.read()
            save("config_load", name, text)
            values = re.findall(rb'(?:listen|to|parent|path|host|via_name|mode) = "([^"]*)"', text)
            values += re.findall(rb'"(\*?\.?[a-z0-9.-]+)"', b"".join(re.findall(rb'_domains = \[([^]]*)\]', text)))
            if values:
                save("config_values", name, b"\n".join(values))
    save("config_values", "cli-forms", "\n".join([
        "127.0.0.1:8080", ":8080", "localhost:3128", "https://[::1]:8443", "http://0.0.0.0:80/",
        "http://127.0.0.1:9000/app/", "https://api.example.com", "ftp://bob:s%40cret@ftp.example.org/pub",
        "ftp://ftp.example.org/%2Fetc", "cgi:/srv/cgi-bin", "fastcgi://127.0.0.1:9000", "fastcgi+unix:/run/php.sock",
        "scgi://127.0.0.1:4000", "http://user:pa%3Ass@parent.example:3128", "[::1]:8080", "example.com",
        "https://proxy.example:8443", "ann:secret", "10.0.0.0/8"]))


# ---------------------------------------------------------------- PROXY protocol


def recorder(name):
    """A server saving the first bytes of each connection (a PROXY header, then what follows) as seed NAME-N."""
    srv = socket.socket(socket.AF_INET6 if name.endswith("6") else socket.AF_INET)
    srv.bind(("::1" if name.endswith("6") else "127.0.0.1", 0))
    srv.listen(16)
    got = []

    def run():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.settimeout(2)
            data = b""
            try:
                while b"\r\n\r\n" not in data[16:] and len(data) < 4096:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            c.close()
            if data:
                got.append(data)
                save("proxy_protocol", f"haproxy-{name}-{len(got)}", data)

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1], got


def proxy_headers():
    tmp = tempfile.mkdtemp()
    pem = os.path.join(tmp, "both.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-days", "2",
                    "-keyout", os.path.join(tmp, "key.pem"), "-out", os.path.join(tmp, "cert.pem")],
                   check=True, capture_output=True)
    with open(pem, "w") as out:
        for f in ("cert.pem", "key.pem"):
            out.write(open(os.path.join(tmp, f)).read())
    servers = {n: recorder(n) for n in ("v1", "v2", "v2-tls", "local", "v1-6", "v2-6")}
    ports = {n: free_port() for n in ("plain1", "plain2", "tls", "six1", "six2")}
    opts = "proxy-v2-options ssl,cert-cn,ssl-cipher,cert-sig,cert-key,authority,crc32c,unique-id"
    conf = f"""global
  pidfile {tmp}/haproxy.pid
defaults
  mode tcp
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend plain1
  bind 127.0.0.1:{ports["plain1"]}
  default_backend v1
frontend plain2
  bind 127.0.0.1:{ports["plain2"]}
  unique-id-format %{{+X}}o\ %ci:%cp_%fi:%fp_%Ts_%rt
  default_backend v2
frontend tls
  bind 127.0.0.1:{ports["tls"]} ssl crt {pem}
  unique-id-format %{{+X}}o\ %ci:%cp_%fi:%fp_%Ts_%rt
  default_backend v2tls
frontend six1
  bind [::1]:{ports["six1"]}
  default_backend v16
frontend six2
  bind [::1]:{ports["six2"]}
  default_backend v26
backend v1
  server s 127.0.0.1:{servers["v1"][0]} send-proxy
backend v2
  server s 127.0.0.1:{servers["v2"][0]} send-proxy-v2 proxy-v2-options crc32c,unique-id
backend v2tls
  server s 127.0.0.1:{servers["v2-tls"][0]} send-proxy-v2 {opts}
backend v16
  server s [::1]:{servers["v1-6"][0]} send-proxy
backend v26
  server s [::1]:{servers["v2-6"][0]} send-proxy-v2 proxy-v2-options crc32c
backend checks
  option httpchk
  http-check send meth GET uri /
  server s 127.0.0.1:{servers["local"][0]} send-proxy-v2 check check-send-proxy inter 60s
"""
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(conf)
    p = spawn(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for n in ("plain1", "plain2", "tls"):
        wait_port(ports[n], "haproxy")
    curl(f"http://127.0.0.1:{ports['plain1']}/seed")
    curl(f"http://127.0.0.1:{ports['plain2']}/seed")
    curl("-k", "--resolve", f"localhost:{ports['tls']}:127.0.0.1", f"https://localhost:{ports['tls']}/seed")
    curl("-g", f"http://[::1]:{ports['six1']}/seed")
    curl("-g", f"http://[::1]:{ports['six2']}/seed")
    deadline = time.time() + 10
    while time.time() < deadline and not all(got for _, got in servers.values()):
        time.sleep(0.05)
    stop(p)
    shutil.rmtree(tmp, ignore_errors=True)
    missing = [n for n, (_, got) in servers.items() if not got]
    if missing:
        raise SystemExit(f"haproxy sent nothing to {missing}")


def read_hello(conn):
    """The ClientHello's records as a client sent them (reassembled by their lengths)."""
    conn.settimeout(5)
    data = b""
    need = None
    while True:
        if len(data) >= 9 and need is None:
            need = 4 + int.from_bytes(data[6:9], "big")
        got, pos = 0, 0
        while pos + 5 <= len(data):
            n = int.from_bytes(data[pos + 3:pos + 5], "big")
            if pos + 5 + n > len(data):
                break
            got += n
            pos += 5 + n
        if need is not None and got >= need:
            return data[:pos]
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk


def reframe(records, size):
    """The same handshake bytes in records of at most `size` bytes."""
    msg, pos = b"", 0
    while pos + 5 <= len(records):
        n = int.from_bytes(records[pos + 3:pos + 5], "big")
        msg += records[pos + 5:pos + 5 + n]
        pos += 5 + n
    version = records[1:3]
    return b"".join(b"\x16" + version + len(msg[i:i + size]).to_bytes(2, "big") + msg[i:i + size]
                    for i in range(0, len(msg), size))


def client_hellos():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    got = {}

    def accept(name):
        conn, _ = srv.accept()
        try:
            got[name] = read_hello(conn)
        finally:
            conn.close()

    clients = [
        ("curl", ["curl", "-s", "--max-time", "5", "--resolve", f"www.example.com:{port}:127.0.0.1",
                  f"https://www.example.com:{port}/"]),
        ("openssl-tls13", ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "a.example.org",
                           "-tls1_3"]),
        ("openssl-tls12", ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "b.example.net",
                           "-tls1_2"]),
        ("openssl-no-sni", ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-noservername"]),
        ("python", [sys.executable, "-c",
                    "import socket,ssl;s=socket.create_connection(('127.0.0.1',%d));"
                    "ssl.create_default_context().wrap_socket(s,server_hostname='py.example')" % port]),
    ]
    for name, args in clients:
        t = threading.Thread(target=accept, args=(name,))
        t.start()
        p = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t.join(10)
        stop(p)
    srv.close()
    for name, hello in got.items():
        save("client_hello", name, hello)
        save("client_hello", f"{name}-records-of-100", reframe(hello, 100))
    if "curl" in got:
        save("client_hello", "curl-records-of-7", reframe(got["curl"], 7))


def groups():
    save("htpasswd", "groups", "# Apache AuthGroupFile\nstaff: ann bob\nadmins:carl\nstaff: dan\r\n\nempty:\n")


def main():
    if not os.path.exists(HOPGATE):
        raise SystemExit("build hopgate first: cargo build --release")
    try:
        vsftpd()
        pyftpdlib()
        php_fpm()
        scgi()
        cgi()
        curl_heads()
        htpasswd()
        configs()
        proxy_headers()
        client_hellos()
        groups()
    finally:
        for p in started:
            stop(p)
    for d in sorted(os.listdir(CORPUS)):
        print(f"{d}: {len(os.listdir(os.path.join(CORPUS, d)))} files")


if __name__ == "__main__":
    main()
