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
