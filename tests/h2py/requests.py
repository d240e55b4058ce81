# Requests on one HTTP/2 connection to an https:// listener, one after another.
# argv: PORT CA REQUEST...; a REQUEST is "METHOD AUTHORITY PATH[;name=value...]", PATH "-" for none (CONNECT).
# A CONNECT that gets a 2xx sends "ping", then ends its side, and reads until the stream ends or is reset; with the
# field ";cancel", it keeps its side open, and once "ping" came back resets the stream with CANCEL; with ";hold", it
# keeps its side open and goes on to the next request once "ping" came back (the tunnel stays open).
# Prints per request: "STATUS BODY" (newlines in BODY as " | "), then " reset CODE" if the stream was reset.
import socket, ssl, sys
import h2.config, h2.connection, h2.events

port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(['h2'])
tls = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=20), server_hostname='proxy.test')
assert tls.selected_alpn_protocol() == 'h2', tls.selected_alpn_protocol()
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
conn.initiate_connection()
tls.sendall(conn.data_to_send())
for req in sys.argv[3:]:
    line, *fields = req.split(';')
    cancel, hold = 'cancel' in fields, 'hold' in fields
    fields = [f for f in fields if f not in ('cancel', 'hold')]
    method, authority, path = line.split(' ')
    sid = conn.get_next_available_stream_id()
    headers = [(':method', method), (':authority', authority)]
    if path != '-':
        headers += [(':scheme', 'http'), (':path', path)]
    headers += [tuple(f.split('=', 1)) for f in fields]
    conn.send_headers(sid, headers, end_stream=method != 'CONNECT')
    tls.sendall(conn.data_to_send())
    status, body, done, reset = None, b'', False, None
    while not done:
        data = tls.recv(65536)
        if not data:
            sys.exit('the connection closed')
        for ev in conn.receive_data(data):
            if getattr(ev, 'stream_id', None) != sid:
                continue
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers)[b':status'].decode()
                if method == 'CONNECT' and status.startswith('2'):
                    conn.send_data(sid, b'ping', end_stream=not (cancel or hold))
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                if cancel and body == b'ping':
                    conn.reset_stream(sid, error_code=8)
                    body, done = b'ping cancelled', True
                elif hold and body == b'ping':
                    body, done = b'ping held', True
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
            elif isinstance(ev, h2.events.StreamReset):
                reset, done = ev.error_code, True
        tls.sendall(conn.data_to_send())
    line = f"{status} {body.decode(errors='replace')}".replace('\n', ' | ').rstrip()
    print(line + (f' reset {int(reset)}' if reset is not None else ''), flush=True)
