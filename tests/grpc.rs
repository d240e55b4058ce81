//! gRPC through the gateway (issue 17): a server and a client from Python's grpcio (Debian's python3-grpcio),
//! hopgate in between with `upstream_http = "2"`. The client speaks HTTP/2 over TLS to an https:// listener (hopgate's
//! listeners speak HTTP/2 only over TLS); the server is h2c on loopback, or TLS with a test certificate. Generic
//! handlers on raw bytes: no protobuf code generation. Unary and server-streaming calls, grpc-status and
//! grpc-message from the server, a deadline the client sets, and a call the client cancels (the server sees the
//! cancel: hopgate resets the upstream stream).

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::tls::{KeyType, Pair, Pki};
use support::{Hopgate, wait_until};

const PYTHON: &str = "/usr/bin/python3";

const SERVER: &str = r#"
import sys, time
from concurrent import futures
import grpc

def out(line):
    sys.stdout.write(line + '\n')
    sys.stdout.flush()

def unary(req, ctx):
    return b'echo:' + req

def missing(req, ctx):
    ctx.abort(grpc.StatusCode.NOT_FOUND, 'no such thing: ' + req.decode())

def stream(req, ctx):
    for i in range(int(req)):
        yield b'item %d' % i

def endless(req, ctx):
    # Ends by itself after 20 s ('done'); a cancel ends it before ('cancelled').
    finished = []
    ctx.add_callback(lambda: out('done' if finished else 'cancelled'))
    yield b'first'
    for _ in range(400):
        if not ctx.is_active():
            return
        time.sleep(0.05)
        yield b'more'
    finished.append(True)

def sleepy(req, ctx):
    for _ in range(100):
        if not ctx.is_active():
            out('deadline seen')
            return b''
        time.sleep(0.05)
    return b'late'

handlers = {
    'Unary': grpc.unary_unary_rpc_method_handler(unary),
    'Missing': grpc.unary_unary_rpc_method_handler(missing),
    'Stream': grpc.unary_stream_rpc_method_handler(stream),
    'Endless': grpc.unary_stream_rpc_method_handler(endless),
    'Sleepy': grpc.unary_unary_rpc_method_handler(sleepy),
}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler('test.Svc', handlers),))
if len(sys.argv) > 1:
    creds = grpc.ssl_server_credentials([(open(sys.argv[2], 'rb').read(), open(sys.argv[1], 'rb').read())])
    port = server.add_secure_port('127.0.0.1:0', creds)
else:
    port = server.add_insecure_port('127.0.0.1:0')
server.start()
out(str(port))
server.wait_for_termination(60)
"#;

const CLIENT: &str = r#"
import sys
import grpc

port, ca = sys.argv[1], open(sys.argv[2], 'rb').read()
creds = grpc.ssl_channel_credentials(root_certificates=ca)
ch = grpc.secure_channel('localhost:' + port, creds)
grpc.channel_ready_future(ch).result(timeout=10)

def call(kind, name, req, **kw):
    f = getattr(ch, kind)('/test.Svc/' + name)
    try:
        r = f(req, **kw)
        if kind == 'unary_stream':
            r = b'|'.join(r)
        print('OK', r.decode())
    except grpc.RpcError as e:
        print(e.code().name, e.details())
    sys.stdout.flush()

for arg in sys.argv[3:]:
    if arg == 'unary':
        call('unary_unary', 'Unary', b'hi')
    elif arg == 'stream':
        call('unary_stream', 'Stream', b'5')
    elif arg == 'missing':
        call('unary_unary', 'Missing', b'x42')
    elif arg == 'deadline':
        call('unary_unary', 'Sleepy', b'', timeout=0.5)
    elif arg == 'cancel':
        it = ch.unary_stream('/test.Svc/Endless')(b'')
        print('FIRST', next(it).decode())
        it.cancel()
        try:
            for _ in it:
                pass
            print('NOT CANCELLED')
        except grpc.RpcError as e:
            print(e.code().name)
        sys.stdout.flush()
"#;

fn require_grpcio() {
    assert!(
        Path::new(PYTHON).exists()
            && Command::new(PYTHON).args(["-c", "import grpc"]).status().is_ok_and(|s| s.success()),
        "python3's grpcio is missing: install the Debian package python3-grpcio (.ci/run does)"
    );
}

/// The gRPC server, with its stdout lines; killed by PID on drop.
struct Server {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// h2c, or TLS with `tls`.
    fn start(tls: Option<&Pair>) -> Server {
        require_grpcio();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.py");
        std::fs::write(&path, SERVER).unwrap();
        let mut cmd = Command::new(PYTHON);
        cmd.arg(&path);
        if let Some(p) = tls {
            cmd.args([p.cert(), p.key()]);
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().expect("start the gRPC server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let port = first.trim().parse().unwrap_or_else(|_| panic!("the gRPC server did not start: {first:?}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Server { child, port, lines, _dir: dir }
    }

    fn saw(&self, line: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l == line)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway on an https:// listener (certificate for localhost) to `to` with `keys`.
fn gateway(listener: &Pair, to: &str, keys: &str) -> Hopgate {
    Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"https://127.0.0.1:0\"\n[[listener.tls]]\ncert = \"{}\"\n\
         key = \"{}\"\n[[listener.route]]\nto = \"{to}\"\n{keys}\n",
        listener.cert(),
        listener.key()
    ))
}

/// Runs the client through `hg` with `calls`; its output lines.
fn client(hg: &Hopgate, ca: &Pki, calls: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.py");
    std::fs::write(&path, CLIENT).unwrap();
    let out = Command::new("timeout")
        .args(["60", PYTHON])
        .arg(&path)
        .args([&hg.addr.port().to_string(), ca.ca.cert()])
        .args(calls)
        .output()
        .expect("run the gRPC client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the client failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text.lines().map(str::to_string).collect()
}

#[test]
fn grpc_through_the_gateway_to_an_h2c_server() {
    let pki = Pki::new();
    let listener = pki.leaf("hg", KeyType::EcdsaP256, &["localhost"]);
    let server = Server::start(None);
    let hg = gateway(&listener, &format!("http://127.0.0.1:{}", server.port), "upstream_http = \"2\"");
    let lines = client(&hg, &pki, &["unary", "stream", "missing", "deadline", "cancel"]);
    assert_eq!(
        lines,
        [
            "OK echo:hi",
            "OK item 0|item 1|item 2|item 3|item 4",
            "NOT_FOUND no such thing: x42",
            "DEADLINE_EXCEEDED Deadline Exceeded",
            "FIRST first",
            "CANCELLED",
        ]
    );
    // The server saw both ends: the deadline (hopgate reset the stream when the client did) and the cancel.
    let seen = wait_until(Duration::from_secs(10), || server.saw("deadline seen") && server.saw("cancelled"));
    assert!(seen, "the server did not see the deadline and the cancel: {:?}", server.lines.lock().unwrap());
}

#[test]
fn grpc_to_a_tls_server_by_alpn() {
    let pki = Pki::new();
    let listener = pki.leaf("hg", KeyType::EcdsaP256, &["localhost"]);
    let upstream = pki.leaf("grpc", KeyType::EcdsaP256, &["localhost"]);
    let server = Server::start(Some(&upstream));
    let keys = format!("upstream_http = \"2\"\nca = \"{}\"", pki.ca.cert());
    let hg = gateway(&listener, &format!("https://localhost:{}", server.port), &keys);
    let lines = client(&hg, &pki, &["unary", "stream", "missing"]);
    assert_eq!(lines, ["OK echo:hi", "OK item 0|item 1|item 2|item 3|item 4", "NOT_FOUND no such thing: x42"]);
}
