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
# bench/run A2 (multi-core) sets these: the SUT on every CPU, nginx with that many workers, haproxy with that many
# threads (hopgate's default runtime takes a worker per CPU it may run on).
SUT_CPUS = SUT_CPU
WORKERS = 1

ACCESS_LOG_OFF = "access logs off everywhere, except the rows marked \"log on\" (A)"


class Peer:
    """A started server. `mode` says how clients use it: 'origin' (direct), 'reverse' (a gateway in front of the
    origin: origin-form requests) or 'forward' (a forward proxy: absolute-form requests)."""

    def __init__(self, name, mode, port, proc, workdir):
        self.name, self.mode, self.port, self.proc, self.dir = name, mode, port, proc, workdir
        # Other processes that are part of the system under test (nginx's fcgiwrap): their CPU and RSS count.
        self.extra = []
        # How clients speak to it: http, https (TLS termination) or ftp (vsftpd).
        self.scheme = "http"

    @property
    def pid(self):
        return self.proc.pid

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def pids(self):
        return [p for peer in [self] + self.extra for p in measure.tree(peer.pid)]

    def roots(self):
        return [peer.pid for peer in [self] + self.extra]


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

    def spawn(self, name, mode, port, argv, workdir, cpu=None):
        cpu = cpu or SUT_CPUS
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
            family = measure.tree(peer.pid)
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
worker_processes {workers};
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
    conf = write(os.path.join(d, "nginx.conf"), NGINX_MAIN.format(d=d, body=body, workers=1))
    return lab.spawn("origin", "origin", port, ["nginx", "-c", conf, "-p", d], d, cpu=LOAD_CPU)


def blast_sender(lab, binary):
    """bench/blast's sender (scenario C): writes as many bytes as each connection asks for, on the load CPU."""
    d, port = lab.workdir("blast"), lab.port()
    return lab.spawn("blast sender", "origin", port, [binary, "serve", str(port)], d, cpu=LOAD_CPU)


# --- reverse proxies ---------------------------------------------------------------------------------------


def nginx_reverse(lab, origin, log=False):
    """nginx as a gateway; `log`: its access log on, buffered as an operator would (combined, buffer=64k)."""
    d, port = lab.workdir("nginx"), lab.port()
    access_log = f"access_log {d}/access.log combined buffer=64k flush=1s;" if log else ""
    body = f"""
    upstream origin {{
        server {origin.addr};
        keepalive 128;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        {access_log}
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
    conf = write(os.path.join(d, "nginx.conf"), NGINX_MAIN.format(d=d, body=body, workers=WORKERS))
    return lab.spawn("nginx", "reverse", port, ["nginx", "-c", conf, "-p", d], d)


def haproxy_reverse(lab, origin, log=False):
    """haproxy as a gateway; `log`: `option httplog` lines to its stdout (a file here), as in a container."""
    d, port = lab.workdir("haproxy"), lab.port()
    log_global = "log stdout format raw local0 info" if log else ""
    log_defaults = "log global\n    option httplog" if log else ""
    conf = write(
        os.path.join(d, "haproxy.cfg"),
        f"""
global
    nbthread {WORKERS}
    maxconn 8000
    pidfile {d}/haproxy.pid
    {log_global}
defaults
    mode http
    {log_defaults}
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


def hopgate_log(d, log):
    """hopgate's access log: off, or on (the default format) into a file."""
    return ["--access-log", os.path.join(d, "access.log") if log else "off", "-q"]


def hopgate_gateway(lab, origin, binary=None, log=False):
    d, port = lab.workdir("hopgate-gw"), lab.port()
    argv = [binary or lab.hopgate, "gateway", "--listen", f"127.0.0.1:{port}", "--to", f"http://{origin.addr}"]
    return lab.spawn("hopgate gateway", "reverse", port, argv + hopgate_log(d, log), d)


# --- forward proxies ---------------------------------------------------------------------------------------


def hopgate_proxy(lab, origin, binary=None, log=False):
    d, port = lab.workdir("hopgate-proxy"), lab.port()
    argv = [binary or lab.hopgate, "proxy", "--listen", f"127.0.0.1:{port}", "--allow-target", "127.0.0.1/32"]
    argv += ["--connect-port", str(origin.port)]
    return lab.spawn("hopgate proxy", "forward", port, argv + hopgate_log(d, log), d)


def hopgate_tunnel(lab, origin, binary=None):
    """`hopgate tunnel`: each connection to its local port is a CONNECT tunnel through `origin` (which must answer
    CONNECT itself, as bench/blast's sender does) to `origin`. Mode 'forwarder': clients connect to it plainly."""
    d, port = lab.workdir("hopgate-tunnel"), lab.port()
    argv = [binary or lab.hopgate, "tunnel", "--listen", f"127.0.0.1:{port}", "--proxy", f"http://{origin.addr}"]
    argv += ["--to", origin.addr, "--access-log", "off", "-q"]
    return lab.spawn("hopgate tunnel", "forwarder", port, argv, d)


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
acl p port 443 {origin.port}
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
ConnectPort {origin.port}
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


# --- TLS termination (scenario D): one ECDSA P-256 certificate for every server, no session resumption -----


def tls_cert(lab):
    d = lab.workdir("tls")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-keyout", key, "-out", cert, "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    with open(os.path.join(d, "both.pem"), "w") as f:
        f.write(open(cert).read() + open(key).read())
    return {"cert": cert, "key": key, "both": os.path.join(d, "both.pem")}


def nginx_tls(lab, origin, tls):
    d, port = lab.workdir("nginx-tls"), lab.port()
    body = f"""
    upstream origin {{
        server {origin.addr};
        keepalive 128;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {tls['cert']};
        ssl_certificate_key {tls['key']};
        ssl_protocols TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}"""
    conf = write(os.path.join(d, "nginx.conf"), NGINX_MAIN.format(d=d, body=body, workers=WORKERS))
    return https(lab.spawn("nginx", "reverse", port, ["nginx", "-c", conf, "-p", d], d))


def https(peer):
    peer.scheme = "https"
    return peer


def haproxy_tls(lab, origin, tls):
    d, port = lab.workdir("haproxy-tls"), lab.port()
    conf = write(
        os.path.join(d, "haproxy.cfg"),
        f"""
global
    nbthread {WORKERS}
    maxconn 8000
    pidfile {d}/haproxy.pid
    tune.ssl.cachesize 0
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    http-reuse always
    option forwardfor
frontend in
    bind 127.0.0.1:{port} ssl crt {tls['both']} ssl-min-ver TLSv1.3 no-tls-tickets
    http-request set-header X-Forwarded-Proto https
    default_backend origin
backend origin
    server o {origin.addr}
""",
    )
    return https(lab.spawn("haproxy", "reverse", port, ["haproxy", "-db", "-f", conf], d))


def hopgate_tls(lab, origin, tls, binary=None):
    d, port = lab.workdir("hopgate-tls"), lab.port()
    argv = [binary or lab.hopgate, "gateway", "--listen", f"https://127.0.0.1:{port}", "--to", f"http://{origin.addr}"]
    argv += ["--tls-cert", tls["cert"], "--tls-key", tls["key"], "--access-log", "off", "-q"]
    return https(lab.spawn("hopgate gateway", "reverse", port, argv, d))


# --- resource and protocol gateways (scenario F) ------------------------------------------------------------


def vsftpd(lab, root):
    """vsftpd serving `root` anonymously (PEERS.md), pinned beside the load generator."""
    d = lab.workdir("vsftpd")
    empty = os.path.join(d, "empty")
    os.makedirs(empty, exist_ok=True)
    port = lab.port()
    pasv = [lab.port() for _ in range(4)]
    # nobody's home does not exist, and vsftpd changes into it before anon_root; Debian's package adds ftp.
    ftp_user = "ftp" if subprocess.run(["id", "ftp"], capture_output=True).returncode == 0 else "nobody"
    conf = write(
        os.path.join(d, "vsftpd.conf"),
        f"""listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
secure_chroot_dir={empty}
anonymous_enable=YES
no_anon_password=YES
anon_root={root}
ftp_username={ftp_user}
local_enable=NO
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port={min(pasv)}
pasv_max_port={max(pasv)}
xferlog_enable=NO
idle_session_timeout=300
data_connection_timeout=120
""",
        0o600,
    )
    peer = lab.spawn("vsftpd", "origin", port, ["vsftpd", conf], d, cpu=LOAD_CPU)
    peer.scheme = "ftp"
    return peer


def hopgate_ftp(lab, ftp):
    d, port = lab.workdir("hopgate-ftp"), lab.port()
    argv = [lab.hopgate, "gateway", "--listen", f"127.0.0.1:{port}", "--to", f"ftp://{ftp.addr}/"]
    return lab.spawn("hopgate gateway", "reverse", port, argv + ["--access-log", "off", "-q"], d)


def php_fpm(lab, www):
    """php-fpm with 4 static workers (PEERS.md), the FastCGI back end every gateway shares, beside the load."""
    d, port = lab.workdir("php-fpm"), lab.port()
    conf = write(
        os.path.join(d, "fpm.conf"),
        f"""[global]
error_log = {d}/fpm.log
daemonize = no
[www]
user = nobody
group = nogroup
listen = 127.0.0.1:{port}
pm = static
pm.max_children = 4
pm.max_requests = 0
""",
    )
    return lab.spawn("php-fpm", "origin", port, ["php-fpm8.2", "-F", "-n", "-y", conf, "-p", d], d, cpu=LOAD_CPU)


def fcgiwrap(lab):
    """fcgiwrap for nginx's CGI: part of the system under test (it forks the scripts), so on the SUT's CPU."""
    d, port = lab.workdir("fcgiwrap"), lab.port()
    return lab.spawn("fcgiwrap", "origin", port, ["fcgiwrap", "-c", "4", "-s", f"tcp:127.0.0.1:{port}"], d)


def nginx_fastcgi(lab, backend, root, site=False):
    """nginx in front of a FastCGI back end: php-fpm (root = document root) or fcgiwrap (CGI scripts). With `site`,
    a PHP application's root the usual way: static files served, `.php` (or nothing: the front controller
    index.php) to php-fpm (`try_files $uri $uri/ /index.php`)."""
    d, port = lab.workdir("nginx-fcgi"), lab.port()
    to_app = """
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass app;
            fastcgi_keep_conn on;"""
    if site:
        locations = f"""
        index index.php;
        location / {{
            try_files $uri $uri/ /index.php$is_args$args;
        }}
        location ~ \\.php$ {{
            try_files $uri =404;{to_app}
        }}"""
    else:
        locations = f"""
        location / {{{to_app}
        }}"""
    body = f"""
    upstream app {{
        server {backend.addr};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};{locations}
    }}"""
    conf = write(os.path.join(d, "nginx.conf"), NGINX_MAIN.format(d=d, body=body, workers=WORKERS))
    return lab.spawn("nginx", "reverse", port, ["nginx", "-c", conf, "-p", d], d)


def apache_app(lab, root, fpm=None):
    """apache as the gateway: mod_cgid for CGI scripts under `root`, or mod_proxy_fcgi to php-fpm."""
    d, port = lab.workdir("apache-app"), lab.port()
    mods = "/usr/lib/apache2/modules"
    if fpm:
        app = f"""LoadModule proxy_module {mods}/mod_proxy.so
LoadModule proxy_fcgi_module {mods}/mod_proxy_fcgi.so
DocumentRoot {root}
ProxyPassMatch "^/(.*\\.php)$" "fcgi://{fpm.addr}{root}/$1" enablereuse=on
"""
    else:
        app = f"""LoadModule cgid_module {mods}/mod_cgid.so
LoadModule alias_module {mods}/mod_alias.so
ScriptSock {d}/cgid.sock
ScriptAlias / {root}/
<Directory "{root}">
    Require all granted
</Directory>
"""
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
StartServers 1
ServerLimit 1
ThreadLimit 64
ThreadsPerChild 64
MaxRequestWorkers 64
MinSpareThreads 1
MaxSpareThreads 64
KeepAlive On
MaxKeepAliveRequests 0
{app}""",
    )
    return lab.spawn("apache", "reverse", port, ["apache2", "-f", conf, "-DFOREGROUND"], d)


def nginx_static(lab, docroot, cache=False):
    """nginx serving static files as the system under test (`sendfile on`, from NGINX_MAIN); by default without an
    open-file cache (nginx's default, the comparison issue 15 names). With `cache`, an open-file cache sized like
    the descriptors hopgate's directory notes keep (1,024, closed after 10 s unused), rechecked every second
    (hopgate rechecks on every request: one statx of the directory, one fstat of the descriptor)."""
    d, port = lab.workdir("nginx-static-cache" if cache else "nginx-static"), lab.port()
    cached = "open_file_cache max=1024 inactive=10s; open_file_cache_valid 1s;" if cache else ""
    body = f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {docroot};
        {cached}
    }}"""
    conf = write(os.path.join(d, "nginx.conf"), NGINX_MAIN.format(d=d, body=body, workers=WORKERS))
    return lab.spawn("nginx", "reverse", port, ["nginx", "-c", conf, "-p", d], d)


def hopgate_files(lab, docroot, binary=None):
    """hopgate's static-file room: `gateway --to file:DIR`."""
    d, port = lab.workdir("hopgate-files"), lab.port()
    argv = [binary or lab.hopgate, "gateway", "--listen", f"127.0.0.1:{port}", "--to", f"file:{docroot}"]
    return lab.spawn("hopgate gateway", "reverse", port, argv + ["--access-log", "off", "-q"], d)


def hopgate_php_site(lab, backend, root):
    """hopgate's combined route: fastcgi with a root (static files beside the scripts) and a front controller."""
    d, port = lab.workdir("hopgate-php"), lab.port()
    conf = write(
        os.path.join(d, "hopgate.toml"),
        f"""access_log = "off"
[[listener]]
listen = "127.0.0.1:{port}"
[[listener.route]]
to = "fastcgi://{backend.addr}"
root = "{root}"
front_controller = "index.php"
# php-fpm's pm.max_children, as docs/cgi.md advises: every connection is kept.
max_connections = 4
""",
    )
    return lab.spawn("hopgate gateway", "reverse", port, [lab.hopgate, "-q", "run", conf], d)


def hopgate_app(lab, to, root=None):
    """hopgate's resource gateway: `to` is cgi:DIR or fastcgi://HOST:PORT."""
    d, port = lab.workdir("hopgate-app"), lab.port()
    argv = [lab.hopgate, "gateway", "--listen", f"127.0.0.1:{port}", "--to", to]
    if root:
        argv += ["--root", root]
    return lab.spawn("hopgate gateway", "reverse", port, argv + ["--access-log", "off", "-q"], d)
