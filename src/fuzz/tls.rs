//! The TLS ClientHello an intercepting listener reads before splicing (`crate::clienthello`).

use crate::clienthello::{self, MAX_HELLO_BYTES, MAX_RECORDS_BYTES, Read, Refusal, frame, hello_message};
use crate::config::{DomainPattern, host_key};

/// The raw bytes a client sends first: whatever the reader says is the same however the hello is cut into reads
/// (every prefix of a hello is "incomplete", its own bytes alone give the same hello) and however it is cut into
/// records (the same message framed again names the same server); a refusal stays a refusal when more bytes
/// follow; an incomplete input is bounded; a name read is lowercase DNS text the policy can judge; a hello
/// made here naming a name made of the input reads back with that name.
pub fn client_hello(data: &[u8]) {
    let seed = super::mutate::fnv1a(data);
    let whole = clienthello::read(data);
    match &whole {
        Read::Hello(h) => {
            assert!(h.len <= data.len() && h.len >= 5 + 4 + 41, "{h:?}");
            assert_eq!(clienthello::read(&data[..h.len]), whole, "its own bytes alone");
            for i in 0..4u64 {
                let cut = ((seed >> (i * 16)) as usize) % h.len;
                assert_eq!(clienthello::read(&data[..cut]), Read::Incomplete, "cut at {cut} of {}", h.len);
            }
            if let Some(name) = &h.sni {
                assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
                assert_eq!(&host_key(name), name, "lowercase, no trailing dot");
                assert!(DomainPattern::parse(name).is_ok(), "the policy can judge {name:?}");
            }
            // The handshake message alone (its last record may carry more).
            let mut message = reassemble(&data[..h.len]);
            let declared = 4 + (usize::from(message[1]) << 16 | usize::from(message[2]) << 8 | usize::from(message[3]));
            message.truncate(declared);
            for size in [1, 3, 64, 1 << 14] {
                let framed = frame(&message, size, h.record_version);
                match clienthello::read(&framed) {
                    Read::Hello(again) => {
                        assert_eq!(again.sni, h.sni, "framed in records of {size}");
                        assert_eq!(again.len, framed.len());
                    }
                    Read::Refused(Refusal::TooLarge(_)) if framed.len() > MAX_RECORDS_BYTES => {}
                    other => panic!("framed in records of {size}: {other:?}"),
                }
            }
        }
        Read::Incomplete => assert!(data.len() <= MAX_RECORDS_BYTES + 5 + (1 << 14), "{} bytes", data.len()),
        Read::Refused(_) => {
            let mut more = data.to_vec();
            more.extend_from_slice(&[22, 3, 3, 0, 1, 1]);
            assert!(matches!(clienthello::read(&more), Read::Refused(_)), "a refusal is final");
        }
    }
    // A hello of our own naming a name made of the input.
    let name: String = data
        .iter()
        .filter(|b| b.is_ascii_alphanumeric() || **b == b'.' || **b == b'-')
        .take(70)
        .map(|&b| (b as char).to_ascii_lowercase())
        .collect();
    if name.is_empty() {
        return;
    }
    let valid = name.split('.').all(|l| !l.is_empty() && l.len() <= 63);
    let padding = (seed as usize) % 64;
    let message = hello_message(Some(&name), padding);
    assert!(message.len() <= MAX_HELLO_BYTES);
    match clienthello::read(&frame(&message, 1 + (seed as usize >> 8) % 300, 0x0303)) {
        Read::Hello(h) => {
            assert!(valid, "{name:?} is no DNS name");
            assert_eq!(h.sni.as_deref(), Some(name.as_str()));
        }
        Read::Refused(Refusal::Malformed(_)) => assert!(!valid, "{name:?} refused"),
        other => panic!("{name:?}: {other:?}"),
    }
}

/// The payloads of the records in `records` (a hello the reader accepted), one after another.
fn reassemble(records: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = records;
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        out.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    out
}
