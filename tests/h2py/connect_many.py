# CONNECT streams over one HTTP/2 connection (RFC 9113 section 8.5) to an https:// proxy listener.
# argv: PORT CA STALL_TARGET SINK_TARGET STREAMS BYTES
# Stream 1 goes to STALL_TARGET (which never reads) and is fed first until its send window is used up; then
# STREAMS-1 streams go to SINK_TARGET, each sending BYTES and END_STREAM, and read back what the sink answers.
# Prints one line per finished stream: "ok SID STATUS ANSWER", then "stalled SID SENT" for the stalled one.
# Fails (exit 1, printing every stream's progress) if the others do not all finish within 60 s.
import select, socket, ssl, sys, time
import h2.config, h2.connection, h2.events

port, ca, stall, sink, streams, size = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(['h2'])
tls = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(port)), timeout=15), server_hostname='proxy.test')
assert tls.selected_alpn_protocol() == 'h2', tls.selected_alpn_protocol()
tls.setblocking(False)
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
conn.initiate_connection()
out = bytearray(conn.data_to_send())
chunk = b'x' * 65536

class S:
    def __init__(self, sid, target):
        self.sid, self.target, self.status, self.left, self.sent = sid, target, None, size, 0
        self.answer, self.ended, self.reset = b'', False, None

def open_stream(target):
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(':method', 'CONNECT'), (':authority', target)])
    s = S(sid, target)
    by_id[sid] = s
    return s

def pump_io(wait):
    global out
    out += conn.data_to_send()
    r, w, _ = select.select([tls], [tls] if out else [], [], wait)
    if w and out:
        try:
            n = tls.send(out[:1 << 20])
            del out[:n]
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
    if r or tls.pending():
        while True:
            try:
                data = tls.recv(1 << 20)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not data:
                sys.exit('the proxy closed the connection')
            for ev in conn.receive_data(data):
                s = by_id.get(getattr(ev, 'stream_id', None))
                if isinstance(ev, h2.events.ResponseReceived):
                    s.status = dict(ev.headers)[b':status'].decode()
                elif isinstance(ev, h2.events.DataReceived):
                    s.answer += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    s.ended = True
                elif isinstance(ev, h2.events.StreamReset):
                    s.reset = ev.error_code
            if not tls.pending():
                break
        out += conn.data_to_send()

def feed(s):
    # Sends what both windows allow, a frame at a time, keeping at most 1 MiB queued for the socket.
    while s.status == '200' and s.left > 0 and s.reset is None and len(out) < (1 << 20):
        n = min(s.left, conn.local_flow_control_window(s.sid), conn.max_outbound_frame_size, len(chunk))
        if n <= 0:
            return
        conn.send_data(s.sid, chunk[:n])
        s.left -= n
        s.sent += n
        if s.left == 0:
            conn.end_stream(s.sid)
        out.extend(conn.data_to_send())

by_id = {}
deadline = time.monotonic() + 60
stalled = open_stream(stall)
# The stalled stream first, until its window is used up (the proxy stops releasing it once the target stops
# reading): from then on it holds all it can of the connection's window.
while not (stalled.status == '200' and stalled.sent > 0 and conn.local_flow_control_window(stalled.sid) == 0):
    if time.monotonic() > deadline or stalled.reset is not None or (stalled.status not in (None, '200')):
        sys.exit(f'the stalled stream never filled its window: status {stalled.status} reset {stalled.reset} sent {stalled.sent}')
    feed(stalled)
    pump_io(0.05)
others = [open_stream(sink) for _ in range(streams - 1)]
while not all(s.ended or s.reset is not None for s in others):
    if time.monotonic() > deadline:
        for s in [stalled] + others:
            print(f'progress {s.sid} {s.status} sent {s.sent} answer {s.answer!r} ended {s.ended} reset {s.reset}')
        print(f'connection window {conn.outbound_flow_control_window}')
        sys.exit(1)
    for s in [stalled] + others:
        feed(s)
    pump_io(0.05)
for s in others:
    print('ok', s.sid, s.status, s.answer.decode(errors='replace').strip() if s.reset is None else f'reset {s.reset}')
print('stalled', stalled.sid, stalled.status, 'reset' if stalled.reset is not None else 'open')
