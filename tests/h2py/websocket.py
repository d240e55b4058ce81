# A WebSocket over HTTP/2 (RFC 8441): an extended CONNECT with :protocol websocket on one connection to an
# https:// listener, then one masked text frame, and the first frame back.
# argv: PORT CA SCHEME AUTHORITY PATH MESSAGE
# Prints "enable_connect_protocol N" (the listener's setting), then "STATUS" and the response's other fields as
# "name: value" lines, then "frame TEXT" for the frame that came back (or "reset CODE" / "ended").
import os, socket, ssl, struct, sys
import h2.config, h2.connection, h2.events, h2.settings

port, ca, scheme, authority, path, message = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(['h2'])
tls = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=15), server_hostname='gw.test')
assert tls.selected_alpn_protocol() == 'h2', tls.selected_alpn_protocol()
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
conn.initiate_connection()
tls.sendall(conn.data_to_send())
settled = False
while not settled:
    events = conn.receive_data(tls.recv(65536))
    tls.sendall(conn.data_to_send())
    settled = any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events)
print('enable_connect_protocol', conn.remote_settings.enable_connect_protocol, flush=True)
sid = conn.get_next_available_stream_id()
conn.send_headers(sid, [(':method', 'CONNECT'), (':protocol', 'websocket'), (':scheme', scheme),
                        (':authority', authority), (':path', path), ('sec-websocket-version', '13'),
                        ('origin', f'{scheme}://{authority}')])
tls.sendall(conn.data_to_send())
payload = message.encode()
mask = os.urandom(4)
frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
got = b''
while True:
    data = tls.recv(65536)
    if not data:
        sys.exit('the connection closed')
    for ev in conn.receive_data(data):
        if getattr(ev, 'stream_id', None) != sid:
            continue
        if isinstance(ev, h2.events.ResponseReceived):
            for k, v in ev.headers:
                print(v.decode() if k == b':status' else f'{k.decode()}: {v.decode()}', flush=True)
            if dict(ev.headers)[b':status'] == b'200':
                conn.send_data(sid, frame)
        elif isinstance(ev, h2.events.DataReceived):
            got += ev.data
            conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            if len(got) >= 2 and len(got) >= 2 + (got[1] & 0x7f):
                print('frame', got[2:2 + (got[1] & 0x7f)].decode(), flush=True)
                sys.exit(0)
        elif isinstance(ev, h2.events.StreamReset):
            print('reset', int(ev.error_code))
            sys.exit(0)
        elif isinstance(ev, h2.events.StreamEnded):
            print('ended', got.decode(errors='replace'))
            sys.exit(0)
    tls.sendall(conn.data_to_send())
