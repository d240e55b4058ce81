"""Every server the benchmarks start: the origin, the peers hopgate is measured against, and hopgate itself.
Each runs in the foreground with its own config in its own temp dir, on a loopback port picked here, pinned
with taskset, and is stopped by PID. Configs are what an administrator would write for speed: one worker (the
system under test has one core), access logs off, upstream keep-alive, no cache.
PEERS.md (in the project's shared notes) has the facts about starting each one in this sandbox."""

import os
import random
import shutil
import signal
import socket
import subprocess
import time

import measure

SUT_CPU = "0"  # the system under test
LOAD_CPU = "1"  # load generators, origins and this harness

ACCESS_LOG_OFF = "access logs off everywhere"


class Peer:
    """A started server. `mode` says how clients use it: 'origin' (direct), 'reverse' (a gateway in front of the
    origin: origin-form requests) or 'forward' (a forward proxy: absolute-form requests)."""

    def __init__(self, name, mode, port, proc, workdir):
        self.name, self.mode, self.port, self.proc, self.dir = name, mode, port, proc, workdir

    @property
    def pid(self):
        return self.proc.pid

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def pids(self):
        return measure.tree(self.pid)


class Lab:
    """The temp dir, the ports and the processes of one run; stop_all() ends every process it started."""

    def __init__(self, root, hopgate_bin):
        self.root = root
        self.hopgate = hopgate_bin
        self.started = []
        self.used_ports = set()

    def port(self):
        # Below the ephemeral range (32768+), so client sockets in TIME_WAIT never hold it.
        for _ in range(1000):
            p = random.randrange(20000, 32000)
            if p in self.used_ports:
                continue
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    continue
            self.used_ports.add(p)
            return p
        raise RuntimeError("no free port")

    def workdir(self, name):
        d = os.path.join(self.root, f"{name}-{len(self.started)}")
        os.makedirs(d, exist_ok=True)
        return d

    def spawn(self, name, mode, port, argv, workdir, cpu=SUT_CPU):
        log = open(os.path.join(workdir, "stdout-stderr.log"), "wb")
        proc = subprocess.Popen(
            ["taskset", "-c", cpu] + argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir
        )
        peer = Peer(name, mode, port, proc, workdir)
        self.started.append(peer)
        wait_listening(peer)
        return peer

    def stop(self, peer, grace=5.0):
        """SIGTERM to the peer's PID (its master stops its own workers), then SIGKILL to whatever of its tree is
        left, each by PID."""
        if peer.proc.poll() is None:
            family = peer.pids()
            peer.proc.send_signal(signal.SIGTERM)
            try:
                peer.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            for p in family:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                peer.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if peer in self.started:
            self.started.remove(peer)

    def stop_all(self):
        for peer in reversed(list(self.started)):
            self.stop(peer)


def wait_listening(peer, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peer.proc.poll() is not None:
            raise RuntimeError(f"{peer.name} exited with {peer.proc.returncode}: {tail_log(peer)}")
        try:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{peer.name} is not listening on {peer.port} after {timeout}s: {tail_log(peer)}")


def tail_log(peer):
    try:
        with open(os.path.join(peer.dir, "stdout-stderr.log"), errors="replace") as f:
            return f.read()[-2000:]
    except OSError:
        return ""


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


# --- the origin --------------------------------------------------------------------------------------------

NGINX_MAIN = """
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    default_type application/octet-stream;
{body}
}}
"""


def nginx_origin(lab, docroot):
    """nginx serving static files from `docroot`: the fastest origin at hand, pinned beside the load generator."""
    d, port = lab.workdir("origin-nginx"), lab.port()
    body = f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {docroot};
        open_file_cache max=100;
    }}"""
    conf = write(os.path.join(d, "nginx.conf"), NGINX_MAIN.format(d=d, body=body))
    return lab.spawn("origin", "origin", port, ["nginx", "-c", conf, "-p", d], d, cpu=LOAD_CPU)


# --- reverse proxies ---------------------------------------------------------------------------------------


def nginx_reverse(lab, origin):
    d, port = lab.workdir("nginx"), lab.port()
    body = f"""
    upstream origin {{
        server {origin.addr};
        keepalive 128;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # What hopgate's gateway sends too: the client's Host and the client's address and scheme.
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Large bodies stream through memory buffers instead of a temp file.
            proxy_max_temp_file_size 0;
        }}
    }}"""
    conf = write(os.path.join(d, "nginx.conf"), NGINX_MAIN.format(d=d, body=body))
    return lab.spawn("nginx", "reverse", port, ["nginx", "-c", conf, "-p", d], d)


def haproxy_reverse(lab, origin):
    d, port = lab.workdir("haproxy"), lab.port()
    conf = write(
        os.path.join(d, "haproxy.cfg"),
        f"""
global
    nbthread 1
    maxconn 8000
    pidfile {d}/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    http-reuse always
    # What hopgate's gateway sends too: the client's address and scheme.
    option forwardfor
frontend in
    bind 127.0.0.1:{port}
    http-request set-header X-Forwarded-Proto http
    default_backend origin
backend origin
    server o {origin.addr}
""",
    )
    return lab.spawn("haproxy", "reverse", port, ["haproxy", "-db", "-f", conf], d)


def hopgate_gateway(lab, origin, binary=None):
    d, port = lab.workdir("hopgate-gw"), lab.port()
    argv = [binary or lab.hopgate, "gateway", "--listen", f"127.0.0.1:{port}", "--to", f"http://{origin.addr}"]
    return lab.spawn("hopgate gateway", "reverse", port, argv + ["--access-log", "off", "-q"], d)


# --- forward proxies ---------------------------------------------------------------------------------------


def hopgate_proxy(lab, origin, binary=None):
    d, port = lab.workdir("hopgate-proxy"), lab.port()
    argv = [binary or lab.hopgate, "proxy", "--listen", f"127.0.0.1:{port}", "--allow-target", "127.0.0.1/32"]
    return lab.spawn("hopgate proxy", "forward", port, argv + ["--access-log", "off", "-q"], d)


def squid_forward(lab, origin):
    d, port = lab.workdir("squid"), lab.port()
    shutil.chown(d, "nobody", "nogroup")
    conf = write(
        os.path.join(d, "squid.conf"),
        f"""
http_port 127.0.0.1:{port}
pid_filename {d}/squid.pid
cache_log {d}/cache.log
access_log none
cache_store_log none
cache deny all
cache_mem 0 MB
pinger_enable off
shutdown_lifetime 0 seconds
cache_effective_user nobody
visible_hostname hopgate-bench
coredump_dir {d}
max_filedescriptors 16384
workers 1
http_access allow localhost
http_access deny all
acl p port 443
http_access deny CONNECT !p
""",
    )
    return lab.spawn("squid", "forward", port, ["squid", "-N", "-f", conf], d)


def tinyproxy_forward(lab, origin):
    d, port = lab.workdir("tinyproxy"), lab.port()
    shutil.chown(d, "nobody", "nogroup")
    conf = write(
        os.path.join(d, "tinyproxy.conf"),
        f"""
Port {port}
Listen 127.0.0.1
Allow 127.0.0.1
PidFile "{d}/tinyproxy.pid"
LogFile "{d}/tinyproxy.log"
LogLevel Critical
User nobody
Group nogroup
MaxClients 1024
Timeout 120
ConnectPort 443
""",
    )
    return lab.spawn("tinyproxy", "forward", port, ["tinyproxy", "-d", "-c", conf], d)


def apache_forward(lab, origin):
    d, port = lab.workdir("apache"), lab.port()
    mods = "/usr/lib/apache2/modules"
    conf = write(
        os.path.join(d, "httpd.conf"),
        f"""
ServerRoot {d}
ServerName hopgate-bench
Listen 127.0.0.1:{port}
PidFile {d}/httpd.pid
ErrorLog {d}/error.log
LogLevel warn
DefaultRuntimeDir {d}
Mutex file:{d} default
User nobody
Group nogroup
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule authz_host_module {mods}/mod_authz_host.so
LoadModule proxy_module {mods}/mod_proxy.so
LoadModule proxy_http_module {mods}/mod_proxy_http.so
# One server process (the system under test has one core) with threads enough for every client connection.
StartServers 1
ServerLimit 1
ThreadLimit 256
ThreadsPerChild 256
MaxRequestWorkers 256
MinSpareThreads 1
MaxSpareThreads 256
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 120
ProxyRequests On
ProxyVia On
<Proxy "*">
    Require ip 127.0.0.1
</Proxy>
""",
    )
    return lab.spawn("apache", "forward", port, ["apache2", "-f", conf, "-DFOREGROUND"], d)
