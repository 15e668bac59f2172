//! The archive of one tenant, read and written as a stream: a header naming the format and its
//! version, the manifest (JSON) and its SHA-256, then each table's rows in `COPY` text format in
//! frames of at most [`CHUNK`] bytes, each table closed by its end frame, and an end frame. A
//! frame is a tag byte, a big-endian `u32` length and that many bytes; nothing is held in memory
//! but one frame.
//!
//! Version 2 (written): a table's end frame holds the SHA-256 of its bytes, its row count and its
//! row checksum ([`RowSum`]), computed from the stream in the one pass that writes it. Version 1
//! (still read): the manifest held each table's count and a checksum the server computed, the
//! end frame only the SHA-256.

use std::hash::Hasher;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::tenant::TenantId;

/// The first bytes of an archive of version 1 (read, never written).
const MAGIC_V1: &[u8; 20] = b"workspace-diesel/1\n\0";
/// The first bytes of every archive written: the format's name and its version.
const MAGIC: &[u8; 20] = b"workspace-diesel/2\n\0";
/// The largest data frame written.
pub(crate) const CHUNK: usize = 256 * 1024;
/// The largest frame read: a larger length is a corrupted archive, not an allocation.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// The manifest frame (JSON).
pub(crate) const MANIFEST: u8 = b'M';
/// The manifest's SHA-256.
pub(crate) const MANIFEST_SUM: u8 = b'H';
/// A chunk of the current table's `COPY` text.
pub(crate) const DATA: u8 = b'D';
/// The end of the current table ([`TableEnd`]).
pub(crate) const TABLE_END: u8 = b'E';
/// The end of the archive.
pub(crate) const END: u8 = b'Z';

/// The version of an archive read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Counts and server-computed checksums in the manifest.
    V1,
    /// Counts and [`RowSum`]s in each table's end frame.
    V2,
}

/// What an archive holds besides the rows.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// The exported tenant's name.
    pub(crate) tenant: String,
    /// The tenant's ledger, each version with the SHA-256 of its `up.sql` in the exporting set.
    pub(crate) migrations: Vec<MigrationEntry>,
    /// The tables, parents before children, in the order their rows follow.
    pub(crate) tables: Vec<TableEntry>,
    /// Where each sequence stands.
    pub(crate) sequences: Vec<SequenceEntry>,
}

/// One version of the ledger.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MigrationEntry {
    pub(crate) version: String,
    /// SHA-256 of the migration's `up.sql`, hex.
    pub(crate) sha256: String,
    /// When it ran on the exported tenant (ISO, UTC).
    pub(crate) run_on: String,
}

/// One table: the columns its rows carry, how many rows and their checksum.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TableEntry {
    pub(crate) name: String,
    pub(crate) columns: Vec<String>,
    /// Version 1 only: the rows (version 2 carries them in the table's end frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rows: Option<i64>,
    /// Version 1 only: the server-computed checksum of the rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) checksum: Option<String>,
}

/// One sequence.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SequenceEntry {
    pub(crate) name: String,
    pub(crate) last_value: i64,
    pub(crate) is_called: bool,
}

/// What an export wrote or an import created: the tenant, its versions and each table's rows
/// and checksum (equal on both sides: an import that would not reproduce them is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// The tenant exported, or created by the import.
    pub tenant: TenantId,
    /// The name the tenant had when it was exported.
    pub exported_as: String,
    /// The versions of its ledger.
    pub versions: Vec<String>,
    /// Each table, parents before children.
    pub tables: Vec<TableSummary>,
    /// The archive's size in bytes.
    pub bytes: u64,
}

/// One table of an [`ArchiveSummary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    /// The table's name.
    pub name: String,
    /// Its rows.
    pub rows: i64,
    /// The order-independent checksum of its rows: the sum modulo 2^128 (32 hex digits) of
    /// each row's SipHash-1-3 (128 bits, key zero) of its `COPY` text line, read with the
    /// settings that affect values' text pinned (time zone `UTC`, ISO dates, the interval style,
    /// the float digits, hex `bytea`), so it depends on no server's or session's settings. An
    /// archive of format version 1 carries a decimal instead, the sum of the first 64 bits of
    /// each row's MD5, computed by the server.
    pub checksum: String,
}

impl Manifest {
    /// The summary of `tables` (this manifest's, with their counts and checksums), for `tenant`,
    /// `bytes` long.
    pub(crate) fn summary(
        &self,
        tenant: &TenantId,
        tables: Vec<TableSummary>,
        bytes: u64,
    ) -> ArchiveSummary {
        ArchiveSummary {
            tenant: tenant.clone(),
            exported_as: self.tenant.clone(),
            versions: self.migrations.iter().map(|m| m.version.clone()).collect(),
            tables,
            bytes,
        }
    }
}

/// SHA-256 of `bytes`, hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of one table's `COPY` text, fed chunk by chunk.
#[derive(Default)]
pub(crate) struct TableHash(Sha256);

impl TableHash {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub(crate) fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// The row count and order-independent checksum of a table's `COPY` text, fed in pieces of any
/// size: each line (a row; `COPY` escapes the newlines inside values) hashed with SipHash-1-3
/// (128 bits, key zero), the hashes summed modulo 2^128.
#[derive(Default)]
pub(crate) struct RowSum {
    row: SipHasher13,
    pending: bool,
    sum: u128,
    rows: u64,
}

impl RowSum {
    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        while let Some(end) = memchr::memchr(b'\n', bytes) {
            self.row.write(&bytes[..end]);
            self.sum = self.sum.wrapping_add(self.row.finish128().into());
            self.row = SipHasher13::new();
            self.pending = false;
            self.rows += 1;
            bytes = &bytes[end + 1..];
        }
        if !bytes.is_empty() {
            self.row.write(bytes);
            self.pending = true;
        }
    }

    /// The rows and their checksum; a last line without its newline counts as a row.
    pub(crate) fn finish(mut self) -> (u64, u128) {
        if self.pending {
            self.update(b"\n");
        }
        (self.rows, self.sum)
    }
}

/// The text form of a [`RowSum`] checksum: 32 hex digits.
pub(crate) fn checksum_text(sum: u128) -> String {
    format!("{sum:032x}")
}

/// What closes a table: the SHA-256 of its bytes, and in version 2 its rows and checksum.
pub(crate) struct TableEnd {
    pub(crate) sha256: [u8; 32],
    pub(crate) sum: Option<(u64, u128)>,
}

impl TableEnd {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.sha256.to_vec();
        if let Some((rows, sum)) = self.sum {
            out.extend_from_slice(&rows.to_be_bytes());
            out.extend_from_slice(&sum.to_be_bytes());
        }
        out
    }

    /// Reads an end frame's payload of an archive of `format`.
    pub(crate) fn decode(format: Format, payload: &[u8]) -> Result<Self, ReadError> {
        let wrong = || ReadError::Corrupt("a table's end frame is malformed (corrupted)".into());
        let sha256: [u8; 32] = payload
            .get(..32)
            .ok_or_else(wrong)?
            .try_into()
            .unwrap_or_default();
        let sum = match (format, &payload[32..]) {
            (Format::V1, []) => None,
            (Format::V2, rest) if rest.len() == 24 => {
                let rows = u64::from_be_bytes(rest[..8].try_into().unwrap_or_default());
                Some((
                    rows,
                    u128::from_be_bytes(rest[8..].try_into().unwrap_or_default()),
                ))
            }
            _ => return Err(wrong()),
        };
        Ok(Self { sha256, sum })
    }
}

/// Writes an archive's frames, counting its bytes.
pub(crate) struct Writer<'a> {
    out: &'a mut dyn Write,
    pub(crate) bytes: u64,
}

impl<'a> Writer<'a> {
    /// Writes the header and the manifest with its checksum.
    pub(crate) fn start(out: &'a mut dyn Write, manifest: &Manifest) -> io::Result<Self> {
        let json = serde_json::to_vec(manifest).map_err(io::Error::other)?;
        let mut writer = Self { out, bytes: 0 };
        writer.out.write_all(MAGIC)?;
        writer.bytes += MAGIC.len() as u64;
        writer.frame(MANIFEST, &json)?;
        writer.frame(MANIFEST_SUM, &Sha256::digest(&json))?;
        Ok(writer)
    }

    /// Writes one frame.
    pub(crate) fn frame(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
        self.out.write_all(&[tag])?;
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(payload)?;
        self.bytes += 5 + payload.len() as u64;
        Ok(())
    }

    /// Writes a table's end frame.
    pub(crate) fn table_end(&mut self, end: &TableEnd) -> io::Result<()> {
        self.frame(TABLE_END, &end.encode())
    }

    /// Writes the end frame and flushes.
    pub(crate) fn end(mut self) -> io::Result<u64> {
        self.frame(END, &[])?;
        self.out.flush()?;
        Ok(self.bytes)
    }
}

/// How reading an archive failed: the input itself, or an archive that is not one (or not
/// whole).
pub(crate) enum ReadError {
    Io(io::Error),
    Corrupt(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Corrupt("the archive ends before its end frame (truncated)".to_owned())
        } else {
            ReadError::Io(e)
        }
    }
}

/// Reads an archive's frames, counting its bytes.
pub(crate) struct Reader<'a> {
    input: &'a mut dyn Read,
    pub(crate) bytes: u64,
    pub(crate) format: Format,
}

impl<'a> Reader<'a> {
    /// Reads the header and the manifest, checked against its checksum.
    pub(crate) fn start(input: &'a mut dyn Read) -> Result<(Self, Manifest), ReadError> {
        let mut magic = [0u8; MAGIC.len()];
        input.read_exact(&mut magic)?;
        let format =
            match &magic {
                m if m == MAGIC => Format::V2,
                m if m == MAGIC_V1 => Format::V1,
                m if m.starts_with(b"workspace-diesel/") => return Err(ReadError::Corrupt(
                    "a workspace-diesel tenant archive of a format version this version does not \
                     read (written by a newer version?)"
                        .to_owned(),
                )),
                _ => {
                    return Err(ReadError::Corrupt(
                        "not a workspace-diesel tenant archive".to_owned(),
                    ))
                }
            };
        let mut reader = Self {
            input,
            bytes: MAGIC.len() as u64,
            format,
        };
        let mut json = Vec::new();
        reader.expect(MANIFEST, &mut json)?;
        let mut sum = Vec::new();
        reader.expect(MANIFEST_SUM, &mut sum)?;
        if Sha256::digest(&json).as_slice() != sum.as_slice() {
            return Err(ReadError::Corrupt(
                "its manifest does not match its checksum (corrupted)".to_owned(),
            ));
        }
        let manifest = serde_json::from_slice(&json)
            .map_err(|e| ReadError::Corrupt(format!("its manifest is not readable: {e}")))?;
        Ok((reader, manifest))
    }

    /// Reads the next frame into `buf`; returns its tag.
    pub(crate) fn next(&mut self, buf: &mut Vec<u8>) -> Result<u8, ReadError> {
        let mut head = [0u8; 5];
        self.input.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            return Err(ReadError::Corrupt(format!(
                "a frame claims {len} bytes (corrupted)"
            )));
        }
        buf.clear();
        buf.resize(len, 0);
        self.input.read_exact(buf)?;
        self.bytes += 5 + len as u64;
        Ok(head[0])
    }

    fn expect(&mut self, tag: u8, buf: &mut Vec<u8>) -> Result<(), ReadError> {
        match self.next(buf)? {
            t if t == tag => Ok(()),
            t => Err(unexpected(t)),
        }
    }
}

/// The corruption an unexpected frame tag stands for.
pub(crate) fn unexpected(tag: u8) -> ReadError {
    ReadError::Corrupt(format!(
        "unexpected frame `{}` (corrupted)",
        (tag as char).escape_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(pieces: &[&[u8]]) -> (u64, u128) {
        let mut sum = RowSum::default();
        for piece in pieces {
            sum.update(piece);
        }
        sum.finish()
    }

    #[test]
    fn a_row_sum_depends_on_the_rows_not_their_order_nor_the_pieces() {
        let whole = sum(&[b"1\tacme\n2\tglobex\n3\t\\N\n"]);
        assert_eq!(whole.0, 3);
        assert_eq!(sum(&[b"3\t\\N\n2\tglobex\n1\tacme\n"]), whole);
        assert_eq!(
            sum(&[b"1\tac", b"me\n2\tglo", b"bex\n", b"3\t\\N\n"]),
            whole
        );
        assert_eq!(sum(&[b"1\tacme\n2\tglobex\n3\t\\N"]), whole);
        // Negative controls: one byte changed, a row missing, a row split in two.
        assert_ne!(sum(&[b"1\tacme\n2\tglobex\n3\t\\M\n"]), whole);
        assert_ne!(sum(&[b"1\tacme\n2\tglobex\n"]).1, whole.1);
        assert_ne!(sum(&[b"1\tacme\n2\tglo\nbex\n3\t\\N\n"]).1, whole.1);
        assert_eq!(sum(&[]), (0, 0));
    }

    #[test]
    fn a_table_end_round_trips_and_refuses_a_malformed_one() {
        let end = TableEnd {
            sha256: [7; 32],
            sum: Some((42, u128::MAX - 1)),
        };
        let read = TableEnd::decode(Format::V2, &end.encode()).ok().unwrap();
        assert_eq!((read.sha256, read.sum), (end.sha256, end.sum));
        let v1 = TableEnd::decode(Format::V1, &[7; 32]).ok().unwrap();
        assert_eq!(v1.sum, None);
        assert!(TableEnd::decode(Format::V2, &[7; 32]).is_err());
        assert!(TableEnd::decode(Format::V1, &end.encode()).is_err());
        assert!(TableEnd::decode(Format::V2, &[7; 31]).is_err());
    }
}
