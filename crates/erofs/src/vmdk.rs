//! VMDK descriptors that stitch files into one disk: flat extents, one per
//! file in order (the fsmeta, then layer 0 .. layer N), paths relative to
//! the descriptor, each extent line at most 2 GiB (longer files take
//! several lines with sector offsets into the file), as qemu's
//! `block/vmdk.c` reads them (`createType="twoGbMaxExtentFlat"`).

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// Bytes per sector.
pub const SECTOR: u64 = 512;
/// Sectors per extent line at most (2 GiB).
pub const MAX_EXTENT_SECTORS: u64 = (2 << 30) / SECTOR;
/// The most bytes a file (or an offset into it) may have: Linux's signed
/// `loff_t`.
const MAX_BYTES: u64 = i64::MAX as u64;

/// A file of the disk, in disk order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// The path relative to the descriptor's directory.
    pub path: String,
    /// The file's size in bytes: a positive multiple of 512, as extents
    /// count sectors (EROFS images are whole 4 KiB blocks, so they are).
    pub size: u64,
}

/// One extent line of a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Length in sectors.
    pub sectors: u64,
    /// The file, relative to the descriptor.
    pub path: String,
    /// Where in the file the extent starts, in sectors.
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The `CID` (content id).
    pub cid: u32,
    /// The `createType`.
    pub create_type: String,
    /// The extents, in disk order.
    pub extents: Vec<Extent>,
}

impl Descriptor {
    /// The disk's size in bytes (saturating; [`parse`] keeps each extent
    /// under 2^63 bytes, [`Descriptor::files`] refuses files past that).
    pub fn size(&self) -> u64 {
        self.extents.iter().fold(0u64, |t, e| {
            t.saturating_add(e.sectors.saturating_mul(SECTOR))
        })
    }

    /// The files in disk order with the bytes the extents take of each,
    /// checking that each file's extents are consecutive from offset 0.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidVmdk`] when a file's extents leave gaps or repeat.
    pub fn files(&self) -> Result<Vec<File>> {
        let mut out: Vec<File> = Vec::new();
        for e in &self.extents {
            // parse() keeps both under 2^63 bytes.
            let (offset, len) = (e.offset * SECTOR, e.sectors * SECTOR);
            match out.last_mut() {
                Some(f) if f.path == e.path && f.size == offset => {
                    f.size = f
                        .size
                        .checked_add(len)
                        .filter(|&s| s <= MAX_BYTES)
                        .ok_or_else(|| {
                            bad(format!("the extents of {:?} pass 2^63 bytes", e.path))
                        })?;
                }
                _ => {
                    if e.offset != 0 || out.iter().any(|f| f.path == e.path) {
                        return Err(bad(format!(
                            "the extents of {:?} are not consecutive from its start",
                            e.path
                        )));
                    }
                    out.push(File {
                        path: e.path.clone(),
                        size: len,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Checks that every file exists beside `dir` with the size the
    /// extents give it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidVmdk`] naming the file, or I/O errors.
    pub fn check_files(&self, dir: &Path) -> Result<()> {
        for f in self.files()? {
            let p = dir.join(&f.path);
            let len = std::fs::metadata(&p)
                .map_err(|e| Error::io("a VMDK extent file cannot be read", e).with_entry(&f.path))?
                .len();
            if len != f.size {
                return Err(bad(format!(
                    "the extent file is {len} bytes, the descriptor gives it {}",
                    f.size
                ))
                .with_entry(&f.path));
            }
        }
        Ok(())
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidVmdk, msg)
}

/// The content id of a disk of these files (deterministic: the same files
/// give the same descriptor).
fn cid(files: &[File]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for f in files {
        for b in f.path.bytes().chain(f.size.to_le_bytes()) {
            h = (h ^ b as u32).wrapping_mul(0x0100_0193);
        }
    }
    if h == u32::MAX {
        0
    } else {
        h
    }
}

/// The descriptor text for a disk of `files` in order.
///
/// # Errors
///
/// [`ErrorKind::InvalidVmdk`] for no files, a size that is not a multiple of
/// 512, or a path with a quote, a newline or a NUL, or an absolute one.
pub fn descriptor(files: &[File]) -> Result<String> {
    if files.is_empty() {
        return Err(bad("a disk of no files"));
    }
    let mut s = String::new();
    s.push_str("# Disk DescriptorFile\nversion=1\n");
    let _ = writeln!(s, "CID={:08x}", cid(files));
    s.push_str("parentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n\n# Extent description\n");
    let mut total = 0u64;
    for f in files {
        if f.path.is_empty() || f.path.starts_with('/') || f.path.contains(['"', '\n', '\r', '\0'])
        {
            return Err(bad(format!(
                "the extent path {:?} cannot be written",
                f.path
            )));
        }
        if f.size % SECTOR != 0 || f.size == 0 {
            return Err(bad(format!(
                "{:?} has {} bytes, not a positive multiple of 512",
                f.path, f.size
            )));
        }
        let mut left = f.size / SECTOR;
        let mut offset = 0;
        while left > 0 {
            let n = left.min(MAX_EXTENT_SECTORS);
            let _ = writeln!(s, "RW {n} FLAT \"{}\" {offset}", f.path);
            offset += n;
            left -= n;
        }
        total += f.size / SECTOR;
    }
    let heads = 16u64;
    let cylinders = total.div_ceil(heads * 63).min(65535);
    s.push_str("\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n");
    let _ = writeln!(s, "ddb.geometry.cylinders = \"{cylinders}\"");
    let _ = writeln!(s, "ddb.geometry.heads = \"{heads}\"");
    s.push_str("ddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\n");
    Ok(s)
}

/// Parses a descriptor's header fields and flat extents.
///
/// # Errors
///
/// [`ErrorKind::InvalidVmdk`] for text that is not such a descriptor (no
/// `createType`, an extent line that is not `RW|RDONLY N FLAT "path" OFFSET`).
pub fn parse(text: &str) -> Result<Descriptor> {
    let mut cid = None;
    let mut create_type = None;
    let mut extents = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |m: &str| bad(format!("line {}: {m}", no + 1));
        if line.starts_with("RW ") || line.starts_with("RDONLY ") || line.starts_with("NOACCESS ") {
            let mut parts = line.splitn(3, ' ');
            let _access = parts.next();
            let sectors: u64 = parts
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| at("an extent without a sector count"))?;
            if sectors > MAX_BYTES / SECTOR {
                return Err(at("an extent past 2^63 bytes"));
            }
            let rest = parts.next().unwrap_or("");
            let rest = rest
                .strip_prefix("FLAT ")
                .ok_or_else(|| at("an extent that is not FLAT"))?;
            let rest = rest
                .strip_prefix('"')
                .ok_or_else(|| at("an unquoted extent path"))?;
            let q = rest
                .find('"')
                .ok_or_else(|| at("an unterminated extent path"))?;
            let path = rest[..q].to_string();
            let offset: u64 = rest[q + 1..]
                .trim()
                .parse()
                .map_err(|_| at("an extent without a sector offset"))?;
            if offset > MAX_BYTES / SECTOR {
                return Err(at("an extent offset past 2^63 bytes"));
            }
            extents.push(Extent {
                sectors,
                path,
                offset,
            });
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"');
            match k.trim() {
                "CID" => {
                    cid = Some(u32::from_str_radix(v, 16).map_err(|_| at("a CID that is not hex"))?)
                }
                "createType" => create_type = Some(v.to_string()),
                _ => {}
            }
        }
    }
    let create_type = create_type.ok_or_else(|| bad("no createType"))?;
    if extents.is_empty() {
        return Err(bad("no extents"));
    }
    Ok(Descriptor {
        cid: cid.unwrap_or(u32::MAX),
        create_type,
        extents,
    })
}

/// The path of `target` relative to the directory `from` (both absolute or
/// both relative to the same place), for extent lines.
pub fn relative_path(from: &Path, target: &Path) -> String {
    let a: Vec<_> = from.components().collect();
    let b: Vec<_> = target.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut p = std::path::PathBuf::new();
    for _ in common..a.len() {
        p.push("..");
    }
    for c in &b[common..] {
        p.push(c);
    }
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_files_split_at_2_gib_and_parse_back() {
        let files = vec![
            File {
                path: "fsmeta.erofs".into(),
                size: 8192,
            },
            File {
                path: "layers/0.erofs".into(),
                size: 5 << 30,
            },
        ];
        let text = descriptor(&files).unwrap();
        assert!(text.contains("RW 16 FLAT \"fsmeta.erofs\" 0\n"));
        assert!(text.contains("RW 4194304 FLAT \"layers/0.erofs\" 0\n"));
        assert!(text.contains("RW 4194304 FLAT \"layers/0.erofs\" 4194304\n"));
        assert!(text.contains("RW 2097152 FLAT \"layers/0.erofs\" 8388608\n"));
        let d = parse(&text).unwrap();
        assert_eq!(d.create_type, "twoGbMaxExtentFlat");
        assert_eq!(d.extents.len(), 4);
        assert_eq!(d.files().unwrap(), files);
        assert_eq!(d.size(), 8192 + (5 << 30));
        assert_eq!(descriptor(&files).unwrap(), text);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let f = |p: &str, s| File {
            path: p.into(),
            size: s,
        };
        assert!(descriptor(&[]).is_err());
        assert!(descriptor(&[f("a", 1000)]).is_err());
        assert!(descriptor(&[f("a\"b", 512)]).is_err());
        assert!(descriptor(&[f("/abs", 512)]).is_err());
        assert!(parse("RW 1 FLAT \"a\" 0\n").is_err());
        let gap = "createType=\"x\"\nRW 1 FLAT \"a\" 0\nRW 1 FLAT \"a\" 5\n";
        assert!(parse(gap).unwrap().files().is_err());
        // Sizes that would overflow are refused, not wrapped.
        let huge = format!("createType=\"x\"\nRW {} FLAT \"a\" 0\n", u64::MAX);
        assert!(parse(&huge).is_err());
        let n = MAX_BYTES / SECTOR;
        let two = format!("createType=\"x\"\nRW {n} FLAT \"a\" 0\nRW {n} FLAT \"a\" {n}\n");
        let d = parse(&two).unwrap();
        assert_eq!(d.size(), 2 * n * SECTOR);
        assert!(d.files().is_err());
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/c/vmdk"), Path::new("/c/layers/a.erofs")),
            "../layers/a.erofs"
        );
        assert_eq!(
            relative_path(Path::new("/c"), Path::new("/c/f.erofs")),
            "f.erofs"
        );
    }
}
