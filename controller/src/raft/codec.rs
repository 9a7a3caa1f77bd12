//! The byte layout of the records in the Raft log file: every value carries a
//! CRC-32C over its key and payload, so a corrupt record is refused when it
//! is read instead of being decoded into a plausible but wrong entry and
//! replicated to the peers.
//!
//! Layout of a value: `crc32c(key ‖ payload)` as 4 bytes little endian, then
//! the payload. Payloads are protobuf (raft-rs's own encoding, rust-protobuf
//! 2.28) for raft-rs messages, and fixed-width little-endian integers for
//! our own records. redb checks its page checksums when the file is opened;
//! this checksum is checked on every read.

use protobuf::Message as _;

/// The version of the record layout above. Bump it (and teach `open` to
/// read the old one) when a record's encoding changes.
pub(super) const FORMAT_VERSION: u32 = 1;

const CRC_LEN: usize = 4;

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table driven. A
/// dozen lines here instead of a new dependency.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc32c_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        crc = CRC32C_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// The CRC-32C of `key ‖ payload`.
pub(super) fn crc32c(key: &[u8], payload: &[u8]) -> u32 {
    !crc32c_update(crc32c_update(!0, key), payload)
}

/// A value ready to be stored under `key`.
pub(super) fn seal(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(CRC_LEN + payload.len());
    value.extend_from_slice(&crc32c(key, payload).to_le_bytes());
    value.extend_from_slice(payload);
    value
}

/// The payload of a value stored under `key`, or what is wrong with it.
pub(super) fn unseal<'v>(key: &[u8], value: &'v [u8]) -> Result<&'v [u8], String> {
    let Some((stored, payload)) = value.split_first_chunk::<CRC_LEN>() else {
        return Err(format!(
            "the value is {} bytes long, shorter than its {CRC_LEN}-byte checksum",
            value.len()
        ));
    };
    let stored = u32::from_le_bytes(*stored);
    let computed = crc32c(key, payload);
    if stored != computed {
        return Err(format!(
            "its checksum does not match (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    Ok(payload)
}

/// The key bytes an entry's checksum covers.
pub(super) fn entry_key(index: u64) -> [u8; 8] {
    index.to_le_bytes()
}

/// Encodes a raft-rs message with its own encoding.
pub(super) fn encode<M: protobuf::Message>(
    message: &M,
) -> Result<Vec<u8>, protobuf::ProtobufError> {
    message.write_to_bytes()
}

/// Decodes exactly `payload`, which [`unseal`] has checked.
pub(super) fn decode<M: protobuf::Message>(payload: &[u8]) -> Result<M, String> {
    M::parse_from_bytes(payload).map_err(|error| format!("it does not decode: {error}"))
}

/// Fixed-width little-endian integers, `N` of them.
pub(super) fn encode_u64s<const N: usize>(values: [u64; N]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

pub(super) fn decode_u64s<const N: usize>(payload: &[u8]) -> Result<[u64; N], String> {
    if payload.len() != 8 * N {
        return Err(format!(
            "it is {} bytes long where {} were written",
            payload.len(),
            8 * N
        ));
    }
    let mut values = [0u64; N];
    for (value, chunk) in values.iter_mut().zip(payload.chunks_exact(8)) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        *value = u64::from_le_bytes(bytes);
    }
    Ok(values)
}

/// Which node a file belongs to, and in which layout it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) format_version: u32,
    pub(super) node_id: u64,
}

/// Marks the identity record, so that a redb file of another program is
/// recognised as such rather than as a damaged Raft log.
const IDENTITY_MAGIC: &[u8; 8] = b"LSTDRAFT";

impl Identity {
    pub(super) fn encode(self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(20);
        payload.extend_from_slice(IDENTITY_MAGIC);
        payload.extend_from_slice(&self.format_version.to_le_bytes());
        payload.extend_from_slice(&self.node_id.to_le_bytes());
        payload
    }

    pub(super) fn decode(payload: &[u8]) -> Result<Identity, String> {
        let Some((magic, rest)) = payload.split_first_chunk::<8>() else {
            return Err("the identity record is too short".into());
        };
        if magic != IDENTITY_MAGIC {
            return Err("the identity record does not start with the Leitstand marker".into());
        }
        let Some((version, rest)) = rest.split_first_chunk::<4>() else {
            return Err("the identity record has no format version".into());
        };
        let format_version = u32::from_le_bytes(*version);
        // Only the version is read before it is checked: a later layout may
        // put anything after it.
        if format_version != FORMAT_VERSION {
            return Ok(Identity {
                format_version,
                node_id: 0,
            });
        }
        let [node_id] = decode_u64s::<1>(rest)
            .map_err(|what| format!("the identity record's node id is damaged: {what}"))?;
        Ok(Identity {
            format_version,
            node_id,
        })
    }
}

/// The size raft-rs accounts for an entry when it limits a batch by bytes
/// (`raft::util::limit_size` uses `compute_size`).
pub(super) fn entry_size(entry: &raft::eraftpb::Entry) -> u64 {
    u64::from(entry.compute_size())
}

/// Longest key of a state machine record.
pub(super) const MAX_STATE_KEY_BYTES: usize = 1024;

/// The snapshot data of a state machine: its records in key order, each as
/// `u32 key length ‖ key ‖ u32 value length ‖ value` (little endian), after
/// a `u64` record count.
pub(super) fn encode_records(records: &std::collections::BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let size = 8 + records
        .iter()
        .map(|(key, value)| 8 + key.len() + value.len())
        .sum::<usize>();
    let mut data = Vec::with_capacity(size);
    data.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for (key, value) in records {
        // Keys are bounded when written; values by the Raft entry size.
        data.extend_from_slice(&(key.len() as u32).to_le_bytes());
        data.extend_from_slice(key.as_bytes());
        data.extend_from_slice(&(value.len() as u32).to_le_bytes());
        data.extend_from_slice(value);
    }
    data
}

/// Decodes [`encode_records`]'s layout, refusing anything else: a snapshot
/// comes from a peer, so every length is checked against what is left.
pub(super) fn decode_records(
    data: &[u8],
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, String> {
    fn take<'d>(data: &mut &'d [u8], len: usize, what: &str) -> Result<&'d [u8], String> {
        if data.len() < len {
            return Err(format!(
                "the snapshot ends inside {what} ({len} bytes needed, {} left)",
                data.len()
            ));
        }
        let (head, rest) = data.split_at(len);
        *data = rest;
        Ok(head)
    }
    fn length(data: &mut &[u8], what: &str) -> Result<usize, String> {
        let bytes = take(data, 4, what)?;
        let mut word = [0u8; 4];
        word.copy_from_slice(bytes);
        Ok(u32::from_le_bytes(word) as usize)
    }
    let mut rest = data;
    let [count] = decode_u64s::<1>(take(&mut rest, 8, "the record count")?)?;
    let mut records = std::collections::BTreeMap::new();
    let mut previous: Option<String> = None;
    for n in 0..count {
        let key_len = length(&mut rest, "a key length")?;
        if key_len > MAX_STATE_KEY_BYTES {
            return Err(format!(
                "record {n} has a {key_len}-byte key; at most {MAX_STATE_KEY_BYTES} are allowed"
            ));
        }
        let key = std::str::from_utf8(take(&mut rest, key_len, "a key")?)
            .map_err(|_| format!("record {n}'s key is not UTF-8"))?
            .to_owned();
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return Err(format!("record {n} ({key:?}) is out of key order"));
        }
        let value_len = length(&mut rest, "a value length")?;
        let value = take(&mut rest, value_len, "a value")?.to_vec();
        previous = Some(key.clone());
        records.insert(key, value);
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes follow the last record", rest.len()));
    }
    Ok(records)
}
