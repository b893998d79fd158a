//! Reading the replies of the `topicgate` library's functions.

use redis::Value;

use super::{Position, Range, Recorded};

/// Reads `topicgate_publish_position`'s reply: `[offset, epoch]`, or nil
/// when history is off.
pub(crate) fn position_of(reply: &Value) -> Result<Option<Position>, String> {
    match reply {
        Value::Nil => Ok(None),
        Value::Array(fields) => match fields.as_slice() {
            [offset, epoch] => Ok(Some(Position::new(offset_of(offset)?, text_of(epoch)?))),
            _ => Err(format!("{} fields instead of 2", fields.len())),
        },
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// Reads `topicgate_history`'s reply: nil, or `[epoch, last offset,
/// (offset, payload)...]`.
pub(crate) fn range_of(reply: &Value) -> Result<Range, String> {
    let fields = match reply {
        Value::Nil => return Ok(Range::none()),
        Value::Array(fields) => fields,
        other => return Err(format!("unexpected reply {other:?}")),
    };
    let [epoch, last, entries @ ..] = fields.as_slice() else {
        return Err("no epoch and offset".into());
    };
    if entries.len() % 2 != 0 {
        return Err("an entry without its payload".into());
    }
    let messages = entries
        .chunks_exact(2)
        .map(|entry| {
            let payload = match &entry[1] {
                Value::BulkString(bytes) => bytes::Bytes::copy_from_slice(bytes),
                other => return Err(format!("payload {other:?}")),
            };
            Ok(Recorded {
                offset: offset_of(&entry[0])?,
                payload,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Range {
        last: Some(Position::new(offset_of(last)?, text_of(epoch)?)),
        messages,
    })
}

fn offset_of(value: &Value) -> Result<u64, String> {
    match value {
        Value::Int(n) => u64::try_from(*n).map_err(|_| format!("offset {n}")),
        other => Err(format!("offset {other:?}")),
    }
}

fn text_of(value: &Value) -> Result<String, String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(|_| "epoch".into()),
        Value::SimpleString(text) => Ok(text.clone()),
        other => Err(format!("epoch {other:?}")),
    }
}
