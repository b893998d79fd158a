//! The key names `topicgate.lua` gives a channel's history, derived the
//! same way, so tests can check that they hash to the channel's slot and
//! that the library wrote exactly these keys.

use crate::broker::cluster::key_slot;

/// CRC16 of the two-byte string (as a number) at index k is 2^k.
const INVERSE: [u16; 16] = [
    0x9d71, 0x2ac3, 0x5586, 0xab0c, 0x4639, 0x8c72, 0x08c5, 0x118a, 0x2314, 0x4628, 0x8c50, 0x0881,
    0x1102, 0x2204, 0x4408, 0x8810,
];

const CLOSE: u8 = b'}';

/// `(meta, stream)`: the keys of `channel`'s epoch and last offset, and of
/// its recorded messages.
pub(crate) fn history_keys(channel: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let body = key_body(channel);
    let key = |kind: &[u8]| [b"topicgate:", kind, b":", &body[..]].concat();
    (key(b"meta"), key(b"hist"))
}

fn key_body(channel: &[u8]) -> Vec<u8> {
    if has_tag(channel) {
        return [b"=", channel].concat();
    }
    if !channel.contains(&CLOSE) {
        return [b"{", channel, b"}"].concat();
    }
    [b"#{", &slot_tag(key_slot(channel))[..], b"}", channel].concat()
}

/// Whether Redis would hash only a `{...}` part of `name`.
fn has_tag(name: &[u8]) -> bool {
    name.iter().position(|b| *b == b'{').is_some_and(|open| {
        name[open + 1..]
            .iter()
            .position(|b| *b == CLOSE)
            .is_some_and(|close| close > 0)
    })
}

fn crc16(bytes: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(bytes)
}

fn solve(crc: u16) -> u16 {
    (0..16)
        .filter(|k| crc & (1 << k) != 0)
        .fold(0, |m, k| m ^ INVERSE[k])
}

/// Two or three bytes, none of them `}`, whose CRC16 maps to `slot`.
fn slot_tag(slot: u16) -> Vec<u8> {
    for lead in (0..=255u8).filter(|p| *p != CLOSE) {
        let (prefix, base) = if lead == 0 {
            (Vec::new(), 0)
        } else {
            (vec![lead], crc16(&[lead, 0, 0]))
        };
        for high in 0..4u16 {
            let [b0, b1] = solve((slot + high * 16384) ^ base).to_be_bytes();
            if b0 != CLOSE && b1 != CLOSE {
                return [&prefix[..], &[b0, b1]].concat();
            }
        }
    }
    unreachable!("some lead byte gives a tag without a closing brace")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inverse_table_inverts_crc16() {
        for (k, m) in INVERSE.iter().enumerate() {
            assert_eq!(crc16(&m.to_be_bytes()), 1 << k);
        }
    }

    #[test]
    fn every_form_of_channel_name_keeps_its_slot_and_its_own_keys() {
        let channels: [&[u8]; 14] = [
            b"chat",
            b"a{b}c",
            b"{x}",
            b"x",
            b"a}b",
            b"{}y",
            b"}",
            b"{",
            b"x{y",
            b"{}{z}",
            b"tg:{room}.1",
            b"}{a}",
            b"\xff\x00",
            b"user.42.inbox",
        ];
        let mut seen = std::collections::HashSet::new();
        for channel in channels {
            let (meta, stream) = history_keys(channel);
            assert_eq!(key_slot(&meta), key_slot(channel), "{channel:?}");
            assert_eq!(key_slot(&stream), key_slot(channel), "{channel:?}");
            assert!(seen.insert(meta), "{channel:?} shares a key");
        }
        // `{x}` keeps its tag; `x` is wrapped: different keys.
        assert_eq!(history_keys(b"{x}").0, b"topicgate:meta:={x}");
        assert_eq!(history_keys(b"x").0, b"topicgate:meta:{x}");
    }

    #[test]
    fn a_tag_exists_for_every_slot() {
        for slot in 0..16384 {
            let tag = slot_tag(slot);
            assert!(!tag.contains(&CLOSE));
            assert_eq!(key_slot(&[b"{", &tag[..], b"}"].concat()), slot);
        }
    }
}
