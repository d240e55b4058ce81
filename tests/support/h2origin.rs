//! An HTTP/2 origin written for the tests in Python (Debian's python3-h2), on loopback: cleartext with prior
//! knowledge (h2c) or TLS choosing by ALPN, and HTTP/1.1 on the same port for a client that does not start with
//! the HTTP/2 preface (or that ALPN put on `http/1.1`). It prints one JSON line per request it answered (its
//! connection number, the protocol, every field as received, pseudo-fields included, the body and the trailers),
//! one per stream reset by the client, and one per connection; the test reads them.
//!
//! Paths: `/hold/N` is answered once N such requests have arrived (on any connection; at most 10 s);
//! `/trailers` answers `hello` with the trailer `x-checksum: abc` (announced in `trailer` with `?announce`; with
//! `?grpc` as `application/grpc` with the trailers `grpc-status: 0` and `grpc-message: fine`, unannounced);
//! `/drip` sends 1000 bytes every 100 ms for 20 s; `/never` is never answered; anything else answers
//! `proto=2 conn=ID path=PATH`. An extended CONNECT with `:protocol websocket` (RFC 8441; the origin sends
//! SETTINGS_ENABLE_CONNECT_PROTOCOL) is answered 200 at once, and each DATA frame on it is echoed as `echo:BYTES` (one masked WebSocket text frame is
//! answered with its text in an unmasked frame).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wait_until;

pub const PYTHON: &str = "/usr/bin/python3";

const SCRIPT: &str = r#"
import asyncio, json, ssl, sys
import h2.config, h2.connection, h2.events

tls = sys.argv[1] == 'tls'
alpn = [p for p in sys.argv[2].split(',') if p] if len(sys.argv) > 2 else []
conns = 0
holds = {}

def out(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()

def text(b):
    return b.decode('latin-1') if isinstance(b, bytes) else b

async def h1(cid, reader, writer, first):
    buf = first
    while True:
        while b'\r\n\r\n' not in buf:
            more = await reader.read(65536)
            if not more:
                return
            buf += more
        head, buf = buf.split(b'\r\n\r\n', 1)
        lines = head.decode('latin-1').split('\r\n')
        fields = [l.split(':', 1) for l in lines[1:]]
        fields = [[n.strip().lower(), v.strip()] for n, v in fields]
        length = sum(int(v) for n, v in fields if n == 'content-length')
        while len(buf) < length:
            buf += await reader.read(65536)
        body, buf = buf[:length], buf[length:]
        out({'conn': cid, 'proto': '1.1', 'start': lines[0], 'headers': fields, 'body': text(body), 'trailers': []})
        resp = b'proto=1.1 conn=%d' % cid
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % len(resp) + resp)
        await writer.drain()

async def h2c(cid, reader, writer, first):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    conn.initiate_connection()
    # RFC 8441: extended CONNECT (a WebSocket on a stream) is welcome.
    conn.update_settings({8: 1})
    writer.write(conn.data_to_send())
    streams = {}

    def flush():
        data = conn.data_to_send()
        if data:
            writer.write(data)

    async def respond(sid):
        s = streams[sid]
        fields = [[text(n), text(v)] for n, v in s['headers']]
        path = dict(fields).get(':path', '')
        out({'conn': cid, 'proto': '2', 'headers': fields, 'body': text(s['body']),
             'trailers': [[text(n), text(v)] for n, v in s['trailers']]})
        if path == '/never':
            return
        if path.startswith('/hold/'):
            n = int(path.split('/')[2])
            ev = holds.setdefault(n, [0, asyncio.Event()])
            ev[0] += 1
            if ev[0] >= n:
                ev[1].set()
            try:
                await asyncio.wait_for(ev[1].wait(), 10)
            except asyncio.TimeoutError:
                pass
        if path.startswith('/trailers'):
            grpc = 'grpc' in path
            head = [(':status', '200'), ('content-type', 'application/grpc' if grpc else 'text/plain')]
            if 'announce' in path:
                head.append(('trailer', 'x-checksum'))
            conn.send_headers(sid, head)
            conn.send_data(sid, b'hello')
            trailers = [('grpc-status', '0'), ('grpc-message', 'fine')] if grpc else [('x-checksum', 'abc')]
            conn.send_headers(sid, trailers, end_stream=True)
        elif path.startswith('/hints/'):
            # N interim 103 (Early Hints) responses, then the final one.
            for _ in range(int(path.split('/')[2])):
                conn.send_headers(sid, [(':status', '103'), ('link', '</a.css>; rel=preload')])
            conn.send_headers(sid, [(':status', '200'), ('content-length', '5')])
            conn.send_data(sid, b'hints', end_stream=True)
        elif path == '/drip':
            conn.send_headers(sid, [(':status', '200'), ('content-type', 'text/plain')])
            for _ in range(200):
                try:
                    conn.send_data(sid, b'x' * 1000)
                except Exception:
                    return
                flush()
                await writer.drain()
                await asyncio.sleep(0.1)
            return
        else:
            body = ('proto=2 conn=%d path=%s' % (cid, path)).encode()
            conn.send_headers(sid, [(':status', '200'), ('content-length', str(len(body)))])
            conn.send_data(sid, body, end_stream=True)
        flush()
        await writer.drain()

    data = first
    while True:
        if not data:
            data = await reader.read(65536)
            if not data:
                return
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                streams[ev.stream_id] = {'headers': ev.headers, 'body': b'', 'trailers': []}
                pseudo = dict((text(n), text(v)) for n, v in ev.headers)
                if pseudo.get(':method') == 'CONNECT' and pseudo.get(':protocol') == 'websocket':
                    # An extended CONNECT: answered at once, then every DATA frame is echoed as `echo:BYTES`.
                    streams[ev.stream_id]['echo'] = True
                    out({'conn': cid, 'proto': '2', 'headers': [[text(n), text(v)] for n, v in ev.headers],
                         'body': '', 'trailers': []})
                    conn.send_headers(ev.stream_id, [(':status', '200')])
            elif isinstance(ev, h2.events.DataReceived):
                streams[ev.stream_id]['body'] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if streams[ev.stream_id].get('echo'):
                    d = ev.data
                    if len(d) >= 6 and d[0] == 0x81 and d[1] & 0x80 and 6 + (d[1] & 0x7f) == len(d):
                        # One masked WebSocket text frame: answered with the same text, unmasked, as a server does.
                        mask, n = d[2:6], d[1] & 0x7f
                        text_ = bytes(b ^ mask[i % 4] for i, b in enumerate(d[6:6 + n]))
                        conn.send_data(ev.stream_id, bytes([0x81, n]) + text_)
                    else:
                        conn.send_data(ev.stream_id, b'echo:' + d)
            elif isinstance(ev, h2.events.TrailersReceived):
                streams[ev.stream_id]['trailers'] = ev.headers
            elif isinstance(ev, h2.events.StreamEnded):
                if streams.get(ev.stream_id, {}).get('echo'):
                    conn.end_stream(ev.stream_id)
                else:
                    asyncio.ensure_future(respond(ev.stream_id))
            elif isinstance(ev, h2.events.StreamReset):
                out({'conn': cid, 'reset': ev.stream_id, 'code': int(ev.error_code)})
        data = b''
        flush()
        await writer.drain()

async def handle(reader, writer):
    global conns
    conns += 1
    cid = conns
    sslobj = writer.get_extra_info('ssl_object')
    try:
        if sslobj is not None:
            proto = sslobj.selected_alpn_protocol()
            out({'connection': cid, 'alpn': proto})
            if proto == 'h2':
                await h2c(cid, reader, writer, b'')
            else:
                await h1(cid, reader, writer, b'')
        else:
            first = await reader.read(65536)
            h2 = first.startswith(b'PRI * HTTP/2.0')
            out({'connection': cid, 'alpn': None, 'preface': h2})
            await (h2c if h2 else h1)(cid, reader, writer, first)
    except Exception as e:
        out({'conn': cid, 'error': repr(e)})
    finally:
        writer.close()

async def main():
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
        if alpn:
            ctx.set_alpn_protocols(alpn)
    server = await asyncio.start_server(handle, '127.0.0.1', 0, ssl=ctx)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"#;

/// A running origin; killed by PID on drop.
pub struct H2Origin {
    child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    _dir: tempfile::TempDir,
}

impl H2Origin {
    /// Cleartext: HTTP/2 with prior knowledge, or HTTP/1.1.
    pub fn plain() -> H2Origin {
        H2Origin::spawn(&["plain"])
    }

    /// TLS with `cert`/`key`, offering `alpn` (say `h2,http/1.1`; empty: no ALPN at all).
    pub fn tls(alpn: &str, cert: &str, key: &str) -> H2Origin {
        H2Origin::spawn(&["tls", alpn, cert, key])
    }

    fn spawn(args: &[&str]) -> H2Origin {
        assert!(
            Path::new(PYTHON).exists()
                && Command::new(PYTHON).args(["-c", "import h2"]).status().is_ok_and(|s| s.success()),
            "python3's h2 is missing: install the Debian package python3-h2 (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h2origin.py");
        std::fs::write(&path, SCRIPT).unwrap();
        let mut child = Command::new(PYTHON)
            .arg(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python HTTP/2 origin");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let port = first.trim().parse().unwrap_or_else(|_| panic!("the HTTP/2 origin did not start: {first:?}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        H2Origin { child, port, lines, _dir: dir }
    }

    /// Every request it answered (or holds), in order of arrival.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.lines.lock().unwrap().iter().filter(|v| v.get("headers").is_some()).cloned().collect()
    }

    /// Waits up to 10 s for `n` requests.
    pub fn wait_requests(&self, n: usize) -> Vec<serde_json::Value> {
        let ok = wait_until(Duration::from_secs(10), || self.requests().len() >= n);
        assert!(ok, "the origin saw {} requests, not {n}: {:?}", self.requests().len(), self.lines());
        self.requests()
    }

    /// The connections accepted: `{"connection": ID, "alpn": ..., "preface": ...}`.
    pub fn connections(&self) -> Vec<serde_json::Value> {
        self.lines.lock().unwrap().iter().filter(|v| v.get("connection").is_some()).cloned().collect()
    }

    /// Connection `n` (1-based) once its line has been read (up to 10 s).
    pub fn connection(&self, n: usize) -> serde_json::Value {
        let ok = wait_until(Duration::from_secs(10), || self.connections().len() >= n);
        assert!(ok, "the origin saw {} connections, not {n}: {:?}", self.connections().len(), self.lines());
        self.connections()[n - 1].clone()
    }

    /// Streams the client reset: `{"conn": ID, "reset": STREAM, "code": H2 error code}`.
    pub fn resets(&self) -> Vec<serde_json::Value> {
        self.lines.lock().unwrap().iter().filter(|v| v.get("reset").is_some()).cloned().collect()
    }

    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for H2Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The values of field `name` (pseudo-fields too) in a request line of [`H2Origin::requests`].
pub fn fields<'a>(req: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    req["headers"]
        .as_array()
        .map(|a| a.iter().filter(|f| f[0] == name).filter_map(|f| f[1].as_str()).collect())
        .unwrap_or_default()
}
