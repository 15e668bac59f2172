//! The archive of one tenant, read and written as a stream: a header, the manifest (JSON) and
//! its SHA-256, then each table's rows in `COPY` text format in frames of at most
//! [`CHUNK`] bytes, each table closed by the SHA-256 of its bytes, and an end frame. A frame is
//! a tag byte, a big-endian `u32` length and that many bytes; nothing is held in memory but one
//! frame.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tenant::TenantId;

/// The first bytes of every archive: the format's name and its version.
const MAGIC: &[u8; 20] = b"workspace-diesel/1\n\0";
/// The largest data frame written, and the size of the reads from `COPY`.
pub(crate) const CHUNK: usize = 64 * 1024;
/// The largest frame read: a larger length is a corrupted archive, not an allocation.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// The manifest frame (JSON).
pub(crate) const MANIFEST: u8 = b'M';
/// The manifest's SHA-256.
pub(crate) const MANIFEST_SUM: u8 = b'H';
/// A chunk of the current table's `COPY` text.
pub(crate) const DATA: u8 = b'D';
/// The end of the current table: the SHA-256 of its `COPY` text.
pub(crate) const TABLE_END: u8 = b'E';
/// The end of the archive.
pub(crate) const END: u8 = b'Z';

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
    pub(crate) rows: i64,
    /// The order-independent checksum of the rows ([`TableSummary::checksum`]).
    pub(crate) checksum: String,
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
    /// The sum (a decimal) of the first 64 bits, as a signed integer, of each row's MD5 (of its
    /// text form, in `UTC` with ISO dates): independent of the rows' order, computed by the
    /// server.
    pub checksum: String,
}

impl Manifest {
    /// The summary of this manifest's tables, for `tenant`, `bytes` long.
    pub(crate) fn summary(&self, tenant: &TenantId, bytes: u64) -> ArchiveSummary {
        ArchiveSummary {
            tenant: tenant.clone(),
            exported_as: self.tenant.clone(),
            versions: self.migrations.iter().map(|m| m.version.clone()).collect(),
            tables: self
                .tables
                .iter()
                .map(|t| TableSummary {
                    name: t.name.clone(),
                    rows: t.rows,
                    checksum: t.checksum.clone(),
                })
                .collect(),
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

    pub(crate) fn finish(self) -> Vec<u8> {
        self.0.finalize().to_vec()
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
}

impl<'a> Reader<'a> {
    /// Reads the header and the manifest, checked against its checksum.
    pub(crate) fn start(input: &'a mut dyn Read) -> Result<(Self, Manifest), ReadError> {
        let mut magic = [0u8; MAGIC.len()];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(ReadError::Corrupt(
                "not a workspace-diesel tenant archive (or of another format version)".to_owned(),
            ));
        }
        let mut reader = Self {
            input,
            bytes: MAGIC.len() as u64,
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
