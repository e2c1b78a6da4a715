//! Value framing: every value Coffer writes is `crc32 (4 bytes, big-endian)
//! ++ payload`, where the crc covers the key and the payload. Covering the
//! key catches a value read back under the wrong key, not only flipped bits.
//! Every read checks the frame; a mismatch is a `Corruption` naming the
//! column family and key, and the payload is never returned.

use crate::error::StorageError;

/// Bytes the frame adds to each value.
pub const FRAME_OVERHEAD: usize = 4;

fn checksum(key: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(payload);
    hasher.finalize()
}

/// Frames `payload` for storage under `key`.
pub fn frame(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(FRAME_OVERHEAD + payload.len());
    frame_into(&mut value, key, payload);
    value
}

/// Frames `payload` for storage under `key` into `value` (cleared first),
/// reusing its allocation.
pub fn frame_into(value: &mut Vec<u8>, key: &[u8], payload: &[u8]) {
    value.clear();
    value.extend_from_slice(&checksum(key, payload).to_be_bytes());
    value.extend_from_slice(payload);
}

/// Checks the frame of `value` stored under `key` in `cf`; returns the payload.
pub fn unframe<'v>(cf: &'static str, key: &[u8], value: &'v [u8]) -> Result<&'v [u8], StorageError> {
    let Some((crc, payload)) = value.split_first_chunk::<FRAME_OVERHEAD>() else {
        return Err(corruption(cf, key, format!("value of {} bytes is shorter than its frame", value.len())));
    };
    let stored = u32::from_be_bytes(*crc);
    let computed = checksum(key, payload);
    if stored != computed {
        return Err(corruption(cf, key, format!("crc32 mismatch: stored {stored:08x}, computed {computed:08x}")));
    }
    Ok(payload)
}

/// A corruption error for `key` in `cf`.
pub fn corruption(cf: &'static str, key: &[u8], reason: impl Into<String>) -> StorageError {
    StorageError::Corruption { cf, key: hex(key), reason: reason.into() }
}

/// `bytes` in lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_values_round_trip() {
        let value = frame(b"key", b"payload");
        assert_eq!(unframe("accounts", b"key", &value).unwrap(), b"payload");
    }

    #[test]
    fn a_flipped_bit_is_corruption_naming_cf_and_key() {
        let mut value = frame(b"\x01\x02", b"payload");
        value[6] ^= 0x10;
        match unframe("transfers", b"\x01\x02", &value) {
            Err(StorageError::Corruption { cf, key, reason }) => {
                assert_eq!(cf, "transfers");
                assert_eq!(key, "0102");
                assert!(reason.contains("crc32 mismatch"), "{reason}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn a_value_under_another_key_is_corruption() {
        let value = frame(b"a", b"payload");
        assert!(unframe("accounts", b"b", &value).is_err());
    }

    #[test]
    fn a_truncated_value_is_corruption() {
        assert!(unframe("meta", b"k", &[1, 2]).is_err());
    }
}
