#!/usr/bin/env bash
# Requests per second through the resource gateways, release build, loopback only:
#   PHP hello world through hopgate + php-fpm (FastCGI over TCP, kept connections), and a /bin/sh CGI hello world.
# Usage: bench/cgi.sh [SECONDS] [CONNECTIONS]     (needs wrk and php-fpm: apt-get install -y wrk php-fpm)
# Every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-8}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
fpm=/usr/sbin/php-fpm8.2
[ -x "$fpm" ] || { echo "$fpm is missing: apt-get install -y php-fpm" >&2; exit 1; }
cargo build --release -q
bin=target/release/hopgate

tmp=$(mktemp -d)
chmod 755 "$tmp"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# Waits (at most 10 s) for "listening on" in a hopgate stderr file; prints the address.
addr_of() {
  for _ in $(seq 100); do
    a=$(grep -o 'listening on http://[0-9.:]*' "$1" | head -1 | sed 's|listening on http://||') || true
    [ -n "$a" ] && { echo "$a"; return; }
    sleep 0.1
  done
  echo "hopgate did not start: $(cat "$1")" >&2; exit 1
}

# Requests/sec from wrk, with any errors or non-2xx answers it saw (a fast error is no result).
rps() {
  out=$(wrk -t2 -c"$conns" -d"${secs}s" "$1")
  echo "$out" | grep -E 'Non-2xx|Socket errors' >&2 || true
  echo "$out" | awk '/Latency/ {lat=$2} /Requests\/sec/ {print $2 " req/s (mean latency " lat ")"}'
}

# php-fpm: 4 static workers on a loopback port, as the tests run it.
mkdir -p "$tmp/www" && chmod 755 "$tmp/www"
printf '<?php echo "hello world\\n";\n' > "$tmp/www/hello.php" && chmod 644 "$tmp/www/hello.php"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$tmp/fpm.conf" <<CONF
[global]
error_log = $tmp/fpm.log
daemonize = no
[www]
user = nobody
group = nogroup
listen = 127.0.0.1:$port
pm = static
pm.max_children = 4
CONF
"$fpm" -F -n -y "$tmp/fpm.conf" -p "$tmp" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "ready to handle connections" "$tmp/fpm.log" 2>/dev/null && break; sleep 0.1; done

"$bin" --access-log off gateway --listen 127.0.0.1:0 --to "fastcgi://127.0.0.1:$port" --root "$tmp/www" 2>"$tmp/php.err" &
pids+=($!)
php=$(addr_of "$tmp/php.err")
[ "$(curl -s "http://$php/hello.php")" = "hello world" ] || { echo "PHP hello world failed" >&2; exit 1; }

mkdir -p "$tmp/cgi-bin"
printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nhello world\\n"\n' > "$tmp/cgi-bin/hello.sh"
chmod 755 "$tmp/cgi-bin/hello.sh"
"$bin" --access-log off gateway --listen 127.0.0.1:0 --to "cgi:$tmp/cgi-bin" 2>"$tmp/cgi.err" &
pids+=($!)
cgi=$(addr_of "$tmp/cgi.err")
[ "$(curl -s "http://$cgi/hello.sh")" = "hello world" ] || { echo "CGI hello world failed" >&2; exit 1; }

echo "machine: $(nproc) cores, $(uname -sr); wrk -t2 -c$conns -d${secs}s, keep-alive, hopgate release, access log off"
echo "PHP hello world, hopgate + php-fpm 8.2 (4 workers, FastCGI over loopback TCP): $(rps "http://$php/hello.php")"
echo "shell CGI hello world (/bin/sh, one process per request): $(rps "http://$cgi/hello.sh")"
