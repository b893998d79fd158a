//! How a recorded message travels on its Redis channel:
//! `"\0tg1:" epoch ":" offset "\0" payload`, as `topicgate.lua` publishes
//! it. The leading NUL byte keeps it apart from plain `PUBLISH` payloads in
//! practice; anything that does not parse as this framing is a plain
//! payload, delivered untouched and unpositioned.

use super::Position;

/// What every recorded message starts with (framing version 1).
const MAGIC: &[u8] = b"\0tg1:";
/// Longest epoch accepted: the library's are about ten characters.
const MAX_EPOCH: usize = 64;

/// Splits a channel message into its position (when it was recorded) and
/// the payload as published.
pub(crate) fn decode(message: &[u8]) -> (Option<Position>, &[u8]) {
    match parse(message) {
        Some((position, payload)) => (Some(position), payload),
        None => (None, message),
    }
}

fn parse(message: &[u8]) -> Option<(Position, &[u8])> {
    let rest = message.strip_prefix(MAGIC)?;
    let colon = rest.iter().take(MAX_EPOCH + 1).position(|b| *b == b':')?;
    let (epoch, rest) = (&rest[..colon], &rest[colon + 1..]);
    if epoch.is_empty() || !epoch.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let nul = rest.iter().take(21).position(|b| *b == 0)?;
    let (digits, payload) = (&rest[..nul], &rest[nul + 1..]);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let offset = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let epoch = std::str::from_utf8(epoch).ok()?;
    Some((Position::new(offset, epoch), payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_message_yields_its_position_and_payload() {
        let (position, payload) = decode(b"\0tg1:k3x9:42\0{\"text\":\"hi\"}");
        assert_eq!(position, Some(Position::new(42, "k3x9")));
        assert_eq!(payload, b"{\"text\":\"hi\"}");
        let (position, payload) = decode(b"\0tg1:e:1\0");
        assert_eq!(position, Some(Position::new(1, "e")));
        assert_eq!(payload, b"");
        // The payload may hold NUL bytes and anything else.
        let (_, payload) = decode(b"\0tg1:e:7\0a\0tg1:b:2\0");
        assert_eq!(payload, b"a\0tg1:b:2\0");
    }

    #[test]
    fn anything_else_is_a_plain_payload_left_untouched() {
        let plain: [&[u8]; 11] = [
            b"",
            b"hello",
            b"{\"a\":1}",
            b"\0tg1",
            b"\0tg2:e:1\0x",
            b"\0tg1::1\0x",
            b"\0tg1:e:\0x",
            b"\0tg1:e:1x\0x",
            b"\0tg1:e:1",
            b"\0tg1:e-1:1\0x",
            b"\0tg1:e:99999999999999999999999\0x",
        ];
        for message in plain {
            assert_eq!(decode(message), (None, message), "{message:?}");
        }
    }
}
