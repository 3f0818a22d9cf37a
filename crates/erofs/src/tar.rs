//! Tar stream reading, pushed in pieces of any size: ustar, GNU (long names
//! and link names, base-256 numbers, old sparse files) and PAX (local and
//! global headers, `SCHILY.xattr.*` and `LIBARCHIVE.xattr.*`, nanosecond
//! mtimes, sparse formats 0.0, 0.1 and 1.0).
//!
//! The parser hands each member to a [`Sink`] as an [`Entry`], then the
//! member's stored data bytes as they arrive (regular files only), then an
//! end mark. It keeps nothing of the data: memory is one header plus the
//! extension records of the member being read.

use crate::error::{Error, ErrorKind, Result};

const BLOCK: usize = 512;

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Regular,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

/// One tar member, with its extension headers applied.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub kind: Kind,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// The file's logical size (the real size of a sparse file).
    pub size: u64,
    pub dev_major: u64,
    pub dev_minor: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The data runs `(offset, length)` of a sparse file, in order; the
    /// stored bytes are these runs one after the other.
    pub sparse: Option<Vec<(u64, u64)>>,
}

/// Receives what the parser reads.
pub(crate) trait Sink {
    /// A member begins; for a regular file its stored data bytes follow
    /// (the size, or the sum of a sparse file's runs).
    fn entry(&mut self, e: &Entry) -> Result<()>;
    /// Data of the current regular file.
    fn data(&mut self, bytes: &[u8]) -> Result<()>;
    /// The current member's data is complete.
    fn end(&mut self) -> Result<()>;
}

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header.
    Header,
    /// Collecting an extension's content (`L`, `K`, `x`, `g`).
    Ext { typeflag: u8, size: usize },
    /// Collecting an old GNU sparse extension block.
    OldSparseExt,
    /// Collecting the GNU sparse 1.0 map at the start of the data.
    SparseMap { remaining: u64 },
    /// Passing data to the sink.
    Data { remaining: u64 },
    /// Discarding bytes (padding, data of non-regular members).
    Skip { remaining: u64 },
    /// After the end-of-archive block: everything is ignored.
    End,
}

/// The push parser.
pub(crate) struct Parser {
    state: State,
    buf: Vec<u8>,
    offset: u64,
    member_at: u64,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    /// The records of the member's PAX headers, checked, as they came.
    pax: Vec<u8>,
    /// Bytes of the member's extension headers so far (`L`, `K`, `x`).
    ext_bytes: u64,
    global: Vec<(Vec<u8>, Vec<u8>)>,
    pending: Option<Entry>,
    /// Padding after the current member's data.
    pad: u64,
    /// The current member's path, for errors.
    current: Option<Vec<u8>>,
    max_ext: u64,
    max_runs: usize,
    /// Where the scan of a GNU sparse 1.0 map is.
    map: MapScan,
}

/// The largest size or offset a tar may give: Linux's `loff_t` (and an
/// EROFS inode's `i_size`) is signed.
pub(crate) const MAX_SIZE: u64 = i64::MAX as u64;

fn err(kind: ErrorKind, msg: impl Into<String>) -> Error {
    Error::new(kind, msg)
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

impl Parser {
    /// A parser that refuses extension headers over `max_ext` bytes and
    /// sparse maps over `max_runs` runs.
    pub fn new(max_ext: u64, max_runs: usize) -> Parser {
        Parser {
            state: State::Header,
            buf: Vec::with_capacity(BLOCK),
            offset: 0,
            member_at: 0,
            long_name: None,
            long_link: None,
            pax: Vec::new(),
            ext_bytes: 0,
            global: Vec::new(),
            pending: None,
            pad: 0,
            current: None,
            max_ext,
            max_runs,
            map: MapScan::default(),
        }
    }

    /// Whether the end-of-archive block was seen.
    pub fn ended(&self) -> bool {
        matches!(self.state, State::End)
    }

    /// Checks that the stream ended where a tar may end.
    pub fn finish(&self) -> Result<()> {
        if self.ended() {
            return Ok(());
        }
        let e = match &self.state {
            State::Header if self.buf.is_empty() => err(
                ErrorKind::Truncated,
                "the tar stream ends without its end-of-archive block",
            ),
            State::Data { .. } | State::SparseMap { .. } => err(
                ErrorKind::Truncated,
                "the tar stream ends inside a file's data",
            ),
            _ => err(ErrorKind::Truncated, "the tar stream ends inside a header"),
        };
        Err(self.locate(e))
    }

    fn locate(&self, e: Error) -> Error {
        let e = match &self.current {
            Some(p) => e.with_entry(p),
            None => e,
        };
        e.at(self.member_at)
    }

    /// Feeds bytes; the sink sees what they complete.
    pub fn push(&mut self, mut input: &[u8], sink: &mut impl Sink) -> Result<()> {
        while !input.is_empty() {
            let before = input.len();
            let r = self.step(&mut input, sink);
            self.offset += (before - input.len()) as u64;
            r.map_err(|e| self.locate(e))?;
        }
        Ok(())
    }

    /// Moves bytes from `input` into `buf` until it holds `need`; true when full.
    fn fill(&mut self, input: &mut &[u8], need: usize) -> bool {
        let take = (need - self.buf.len()).min(input.len());
        self.buf.extend_from_slice(&input[..take]);
        *input = &input[take..];
        self.buf.len() == need
    }

    fn step(&mut self, input: &mut &[u8], sink: &mut impl Sink) -> Result<()> {
        match self.state {
            State::End => {
                *input = &[];
                Ok(())
            }
            State::Skip { remaining } => {
                let n = (remaining.min(input.len() as u64)) as usize;
                *input = &input[n..];
                self.state = if remaining == n as u64 {
                    State::Header
                } else {
                    State::Skip {
                        remaining: remaining - n as u64,
                    }
                };
                Ok(())
            }
            State::Data { remaining } => {
                let n = (remaining.min(input.len() as u64)) as usize;
                let (now, rest) = input.split_at(n);
                *input = rest;
                sink.data(now)?;
                if remaining == n as u64 {
                    sink.end()?;
                    self.current = None;
                    self.state = State::Skip {
                        remaining: self.pad,
                    };
                } else {
                    self.state = State::Data {
                        remaining: remaining - n as u64,
                    };
                }
                Ok(())
            }
            State::Header => {
                let start = self.offset - self.buf.len() as u64;
                if self.buf.is_empty() && input.len() >= BLOCK {
                    // The common case: a whole header in the input.
                    let (h, rest) = input.split_at(BLOCK);
                    *input = rest;
                    let h: [u8; BLOCK] = h.try_into().expect("a block");
                    return self.header(&h, start, sink);
                }
                if self.fill(input, BLOCK) {
                    let h: [u8; BLOCK] = self.buf[..].try_into().expect("a block");
                    self.buf.clear();
                    return self.header(&h, start, sink);
                }
                Ok(())
            }
            State::Ext { typeflag, size } => {
                if self.fill(input, size) {
                    let content = std::mem::take(&mut self.buf);
                    self.extension(typeflag, content)?;
                    self.state = State::Skip {
                        remaining: padding(size as u64),
                    };
                }
                Ok(())
            }
            State::OldSparseExt => {
                if self.fill(input, BLOCK) {
                    let b = std::mem::take(&mut self.buf);
                    let mut e = self.pending.take().expect("a pending sparse entry");
                    let runs = e.sparse.as_mut().expect("sparse runs");
                    for i in 0..21 {
                        if let Some(run) = old_sparse_run(&b[i * 24..i * 24 + 24])? {
                            runs.push(run);
                        }
                    }
                    self.check_runs(runs.len())?;
                    if b[504] != 0 {
                        self.pending = Some(e);
                    } else {
                        let stream = self.pad_stream_size();
                        self.begin(e, stream, sink)?;
                    }
                }
                Ok(())
            }
            State::SparseMap { remaining } => {
                if self.buf.len().is_multiple_of(BLOCK) && remaining < BLOCK as u64 {
                    return Err(err(
                        ErrorKind::InvalidSparse,
                        "the sparse map runs past the entry's data",
                    ));
                }
                let need = self.buf.len() + BLOCK - self.buf.len() % BLOCK;
                if self.buf.len() as u64 + BLOCK as u64 > self.max_ext {
                    return Err(err(ErrorKind::LimitExceeded, "the sparse map is too long"));
                }
                let before = self.buf.len();
                let full = self.fill(input, need);
                let got = (self.buf.len() - before) as u64;
                self.state = State::SparseMap {
                    remaining: remaining - got,
                };
                if full {
                    if let Some(runs) = self.map.scan(&self.buf, self.max_runs)? {
                        self.buf.clear();
                        let State::SparseMap { remaining } = self.state else {
                            unreachable!()
                        };
                        let mut e = self.pending.take().expect("a pending sparse entry");
                        e.sparse = Some(runs);
                        self.begin(e, remaining, sink)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// For old GNU sparse members, the stream size was stashed in `pad`.
    fn pad_stream_size(&mut self) -> u64 {
        std::mem::take(&mut self.pad)
    }

    fn check_runs(&self, n: usize) -> Result<()> {
        if n > self.max_runs {
            return Err(err(
                ErrorKind::LimitExceeded,
                format!("a sparse map of more than {} runs", self.max_runs),
            ));
        }
        Ok(())
    }

    fn header(&mut self, h: &[u8; BLOCK], start: u64, sink: &mut impl Sink) -> Result<()> {
        if self.long_name.is_none() && self.long_link.is_none() && self.ext_bytes == 0 {
            self.member_at = start;
            self.current = None;
        }
        if h.iter().all(|&b| b == 0) {
            self.state = State::End;
            return Ok(());
        }
        let stored = parse_octal(&h[148..156]).ok_or_else(|| {
            err(
                ErrorKind::InvalidHeader,
                "a header checksum is not a number",
            )
        })?;
        // The checksum field counts as spaces; old tars summed signed bytes.
        let (mut unsigned, mut signed) = (0u64, 0i64);
        for (i, &b) in h.iter().enumerate() {
            let (u, s) = if (148..156).contains(&i) {
                (32, 32)
            } else {
                (b as u64, b as i8 as i64)
            };
            unsigned += u;
            signed += s;
        }
        if stored != unsigned && stored as i64 != signed {
            return Err(err(
                ErrorKind::InvalidHeader,
                "a tar header's checksum is wrong",
            ));
        }
        let typeflag = h[156];
        let size = number(&h[124..136], "size")?;
        match typeflag {
            b'L' | b'K' | b'x' | b'g' => {
                // One member's extension headers together, and each global
                // one, stay within the limit.
                let before = if typeflag == b'g' { 0 } else { self.ext_bytes };
                let total = before.saturating_add(size);
                let size = usize::try_from(size)
                    .ok()
                    .filter(|_| total <= self.max_ext)
                    .ok_or_else(|| {
                        err(
                            ErrorKind::LimitExceeded,
                            format!(
                                "extension headers of {total} bytes for one member (the limit is {})",
                                self.max_ext
                            ),
                        )
                    })?;
                if typeflag != b'g' {
                    // Counted even when empty: the member has begun.
                    self.ext_bytes = total.max(1);
                }
                self.state = State::Ext { typeflag, size };
                self.buf.clear();
                return Ok(());
            }
            _ => {}
        }
        self.ext_bytes = 0;
        let ustar = &h[257..263] == b"ustar\0";
        let gnu = &h[257..265] == b"ustar  \0";
        let mut path = match self.long_name.take() {
            Some(n) => n,
            None => {
                let name = cstr(&h[0..100]);
                let prefix = if ustar { cstr(&h[345..500]) } else { &[][..] };
                if prefix.is_empty() {
                    name.to_vec()
                } else {
                    let mut p = prefix.to_vec();
                    p.push(b'/');
                    p.extend_from_slice(name);
                    p
                }
            }
        };
        let mut link = match self.long_link.take() {
            Some(l) => l,
            None => cstr(&h[157..257]).to_vec(),
        };
        self.current = Some(path.clone());
        let kind = match typeflag {
            b'0' | b'7' | b'S' => Kind::Regular,
            0 if path.ends_with(b"/") => Kind::Dir,
            0 => Kind::Regular,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' | b'D' => Kind::Dir,
            b'6' => Kind::Fifo,
            b'V' => {
                // A volume label: no file.
                self.pax.clear();
                self.current = None;
                self.state = State::Skip {
                    remaining: size + padding(size),
                };
                return Ok(());
            }
            b'M' | b'N' => {
                return Err(err(
                    ErrorKind::Unsupported,
                    format!(
                        "a tar member of type '{}' (multi-volume or old GNU names)",
                        typeflag as char
                    ),
                ))
            }
            // GNU tar extracts members of unknown types as regular files.
            _ => Kind::Regular,
        };
        let mut e = Entry {
            kind,
            path: Vec::new(),
            link: Vec::new(),
            mode: (number(&h[100..108], "mode")? & 0o7777) as u32,
            uid: number(&h[108..116], "uid")?,
            gid: number(&h[116..124], "gid")?,
            mtime: signed_number(&h[136..148], "mtime")?,
            mtime_nsec: 0,
            size,
            dev_major: if ustar || gnu {
                number(&h[329..337], "devmajor")?
            } else {
                0
            },
            dev_minor: if ustar || gnu {
                number(&h[337..345], "devminor")?
            } else {
                0
            },
            xattrs: Vec::new(),
            sparse: None,
        };
        let mut stream = size;
        let records = std::mem::take(&mut self.pax);
        let mut sp = PaxSparse {
            max_runs: self.max_runs,
            ..Default::default()
        };
        for (k, v) in &self.global {
            apply_pax(&mut e, &mut path, &mut link, &mut stream, &mut sp, k, v)?;
        }
        let mut rest = &records[..];
        while let Some((k, v)) = next_record(&mut rest)? {
            apply_pax(&mut e, &mut path, &mut link, &mut stream, &mut sp, k, v)?;
        }
        self.check_runs(sp.offsets.len() + sp.map.len() / 2)?;
        e.path = path;
        e.link = link;
        self.current = Some(e.path.clone());
        if typeflag == b'S' {
            // Old GNU sparse: the map is in the header, the real size after it.
            let mut runs = Vec::new();
            for i in 0..4 {
                let at = 386 + i * 24;
                if let Some(run) = old_sparse_run(&h[at..at + 24])? {
                    runs.push(run);
                }
            }
            e.size = number(&h[483..495], "realsize")?;
            e.sparse = Some(runs);
            if h[482] != 0 {
                self.pending = Some(e);
                self.pad = stream;
                self.state = State::OldSparseExt;
                self.buf.clear();
                return Ok(());
            }
            return self.begin(e, stream, sink);
        }
        if e.kind == Kind::Regular && sp.is_sparse() {
            if let Some(n) = sp.name.take() {
                e.path = n;
                self.current = Some(e.path.clone());
            }
            if let Some(real) = sp.realsize {
                e.size = real;
            }
            if sp.major == Some(1) {
                if sp.minor != Some(0) {
                    return Err(err(
                        ErrorKind::InvalidSparse,
                        "an unknown GNU sparse format version",
                    ));
                }
                self.pending = Some(e);
                self.pad = padding(stream);
                self.buf.clear();
                self.map = MapScan::default();
                self.state = State::SparseMap { remaining: stream };
                return Ok(());
            }
            e.sparse = Some(sp.runs()?);
        }
        self.begin(e, stream, sink)
    }

    /// Hands a member to the sink and sets up the reading of its data.
    fn begin(&mut self, mut e: Entry, stream: u64, sink: &mut impl Sink) -> Result<()> {
        let pad = match &self.state {
            State::SparseMap { .. } => std::mem::take(&mut self.pad),
            _ => padding(stream),
        };
        if let Some(runs) = &e.sparse {
            check_sparse(runs, e.size, stream)?;
        }
        if e.kind != Kind::Regular {
            e.sparse = None;
        }
        sink.entry(&e)?;
        if e.kind == Kind::Regular {
            self.pad = pad;
            if stream == 0 {
                sink.end()?;
                self.current = None;
                self.state = State::Skip { remaining: pad };
            } else {
                self.state = State::Data { remaining: stream };
            }
        } else {
            sink.end()?;
            self.current = None;
            self.state = State::Skip {
                remaining: stream + pad,
            };
        }
        Ok(())
    }

    fn extension(&mut self, typeflag: u8, content: Vec<u8>) -> Result<()> {
        match typeflag {
            b'L' => self.long_name = Some(cstr(&content).to_vec()),
            b'K' => self.long_link = Some(cstr(&content).to_vec()),
            b'x' => {
                // Checked now, applied (without copies) at the member's header.
                let mut rest = &content[..];
                while next_record(&mut rest)?.is_some() {}
                self.pax.extend_from_slice(&content);
            }
            b'g' => {
                let mut rest = &content[..];
                while let Some((k, v)) = next_record(&mut rest)? {
                    if matches!(k, b"path" | b"linkpath" | b"size") || k.starts_with(b"GNU.sparse.")
                    {
                        continue;
                    }
                    self.global.retain(|(gk, _)| gk[..] != *k);
                    if !v.is_empty() {
                        // What the globals hold together stays within the
                        // limit of one extension header (a record's
                        // overhead counted as 64 bytes).
                        let held: u64 = self
                            .global
                            .iter()
                            .map(|(k, v)| (k.len() + v.len()) as u64 + 64)
                            .sum();
                        if held + (k.len() + v.len()) as u64 + 64 > self.max_ext {
                            return Err(err(
                                ErrorKind::LimitExceeded,
                                format!("global PAX records of more than {} bytes", self.max_ext),
                            ));
                        }
                        self.global.push((k.to_vec(), v.to_vec()));
                    }
                }
            }
            _ => unreachable!("not an extension type"),
        }
        Ok(())
    }
}

/// The sparse records of a PAX header.
#[derive(Default)]
struct PaxSparse {
    /// The most runs a map may have.
    max_runs: usize,
    major: Option<u64>,
    minor: Option<u64>,
    name: Option<Vec<u8>>,
    realsize: Option<u64>,
    offsets: Vec<(u64, Option<u64>)>,
    map: Vec<u64>,
    has_map: bool,
}

impl PaxSparse {
    fn is_sparse(&self) -> bool {
        self.major.is_some() || self.realsize.is_some() || self.has_map || !self.offsets.is_empty()
    }

    /// The runs of formats 0.0 and 0.1.
    fn runs(&self) -> Result<Vec<(u64, u64)>> {
        if self.has_map {
            if !self.map.len().is_multiple_of(2) {
                return Err(err(
                    ErrorKind::InvalidSparse,
                    "a GNU.sparse.map of odd length",
                ));
            }
            return Ok(self.map.chunks(2).map(|c| (c[0], c[1])).collect());
        }
        self.offsets
            .iter()
            .map(|&(o, n)| {
                n.map(|n| (o, n)).ok_or_else(|| {
                    err(
                        ErrorKind::InvalidSparse,
                        "a GNU.sparse.offset without its numbytes",
                    )
                })
            })
            .collect()
    }
}

/// A PAX size or offset: a number up to [`MAX_SIZE`], `kind` if it is not one.
fn pax_size(v: &[u8], key: &[u8], kind: ErrorKind) -> Result<u64> {
    let n = pax_number(v, key).map_err(|e| Error::new(kind, e.to_string()))?;
    if n > MAX_SIZE {
        return Err(err(
            kind,
            format!(
                "the PAX record {} is {n}, past 2^63-1",
                String::from_utf8_lossy(key)
            ),
        ));
    }
    Ok(n)
}

fn too_many_runs(max: usize) -> Error {
    err(
        ErrorKind::LimitExceeded,
        format!("a sparse map of more than {max} runs"),
    )
}

fn pax_number(v: &[u8], key: &[u8]) -> Result<u64> {
    let s = std::str::from_utf8(v).ok();
    s.and_then(|s| {
        if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    })
    .ok_or_else(|| {
        err(
            ErrorKind::InvalidPax,
            format!(
                "the PAX record {} is not a number",
                String::from_utf8_lossy(key)
            ),
        )
    })
}

/// Parses a PAX time: `[-]SECONDS[.FRACTION]`.
fn pax_time(v: &[u8]) -> Result<(i64, u32)> {
    let bad = || err(ErrorKind::InvalidPax, "a PAX mtime is not a time");
    let (neg, body) = match v.first() {
        Some(b'-') => (true, &v[1..]),
        _ => (false, v),
    };
    let (int, frac) = match body.iter().position(|&b| b == b'.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &[][..]),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) || !frac.iter().all(u8::is_ascii_digit)
    {
        return Err(bad());
    }
    let secs: i64 = std::str::from_utf8(int)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let mut nsec: u32 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| (d - b'0') as u32);
    }
    if !neg {
        return Ok((secs, nsec));
    }
    if nsec == 0 {
        Ok((-secs, 0))
    } else {
        Ok((-secs - 1, 1_000_000_000 - nsec))
    }
}

fn apply_pax(
    e: &mut Entry,
    path: &mut Vec<u8>,
    link: &mut Vec<u8>,
    stream: &mut u64,
    sp: &mut PaxSparse,
    k: &[u8],
    v: &[u8],
) -> Result<()> {
    match k {
        b"path" => *path = v.to_vec(),
        b"linkpath" => *link = v.to_vec(),
        b"size" => {
            *stream = pax_size(v, k, ErrorKind::InvalidPax)?;
            e.size = *stream;
        }
        b"uid" => e.uid = pax_number(v, k)?,
        b"gid" => e.gid = pax_number(v, k)?,
        b"mtime" => (e.mtime, e.mtime_nsec) = pax_time(v)?,
        b"SCHILY.devmajor" => e.dev_major = pax_number(v, k)?,
        b"SCHILY.devminor" => e.dev_minor = pax_number(v, k)?,
        b"GNU.sparse.major" => sp.major = Some(pax_number(v, k)?),
        b"GNU.sparse.minor" => sp.minor = Some(pax_number(v, k)?),
        b"GNU.sparse.name" => sp.name = Some(v.to_vec()),
        b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
            sp.realsize = Some(pax_size(v, k, ErrorKind::InvalidSparse)?)
        }
        b"GNU.sparse.offset" => {
            if sp.offsets.len() >= sp.max_runs {
                return Err(too_many_runs(sp.max_runs));
            }
            sp.offsets
                .push((pax_size(v, k, ErrorKind::InvalidSparse)?, None))
        }
        b"GNU.sparse.numbytes" => match sp.offsets.last_mut() {
            Some((_, n @ None)) => *n = Some(pax_size(v, k, ErrorKind::InvalidSparse)?),
            _ => {
                return Err(err(
                    ErrorKind::InvalidSparse,
                    "a GNU.sparse.numbytes without its offset",
                ))
            }
        },
        b"GNU.sparse.map" => {
            sp.has_map = true;
            sp.map.clear();
            if !v.is_empty() {
                // Counted before anything is held: two numbers per run.
                let numbers = v.iter().filter(|&&b| b == b',').count() + 1;
                if numbers / 2 > sp.max_runs {
                    return Err(too_many_runs(sp.max_runs));
                }
                sp.map.reserve_exact(numbers);
                for part in v.split(|&b| b == b',') {
                    sp.map.push(pax_size(part, k, ErrorKind::InvalidSparse)?);
                }
            }
        }
        _ => {
            if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                set_xattr(e, name.to_vec(), v.to_vec());
            } else if let Some(name) = k.strip_prefix(b"LIBARCHIVE.xattr.") {
                let name = percent_decode(name).ok_or_else(|| {
                    err(
                        ErrorKind::InvalidPax,
                        "a LIBARCHIVE.xattr name is not URL-encoded",
                    )
                })?;
                let value = base64_decode(v).ok_or_else(|| {
                    err(
                        ErrorKind::InvalidPax,
                        "a LIBARCHIVE.xattr value is not base64",
                    )
                })?;
                set_xattr(e, name, value);
            }
        }
    }
    Ok(())
}

fn set_xattr(e: &mut Entry, name: Vec<u8>, value: Vec<u8>) {
    e.xattrs.retain(|(n, _)| *n != name);
    e.xattrs.push((name, value));
}

/// The next PAX record `LEN KEY=VALUE\n` of `b` as `(key, value)`,
/// advancing `b`; `None` at the end (or at NUL padding some writers leave).
fn next_record<'a>(b: &mut &'a [u8]) -> Result<Option<(&'a [u8], &'a [u8])>> {
    let bad = |m: &str| {
        err(
            ErrorKind::InvalidPax,
            format!("a PAX header is malformed: {m}"),
        )
    };
    let all = *b;
    if all.iter().all(|&c| c == 0) {
        *b = &[];
        return Ok(None);
    }
    let sp = all
        .iter()
        .take(20)
        .position(|&c| c == b' ')
        .ok_or_else(|| bad("no length"))?;
    let len: usize = std::str::from_utf8(&all[..sp])
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("a length that is not a number"))?;
    if len <= sp + 1 || len > all.len() || all[len - 1] != b'\n' {
        return Err(bad("a record length that does not fit"));
    }
    let rec = &all[sp + 1..len - 1];
    let eq = rec
        .iter()
        .position(|&c| c == b'=')
        .ok_or_else(|| bad("a record without '='"))?;
    if eq == 0 {
        return Err(bad("an empty key"));
    }
    *b = &all[len..];
    Ok(Some((&rec[..eq], &rec[eq + 1..])))
}

/// Parses PAX records (for tests: the parser reads them in place).
#[cfg(test)]
fn parse_pax(mut b: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    while let Some((k, v)) = next_record(&mut b)? {
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

/// The scan of a GNU sparse 1.0 map (a count, then an offset and a size
/// per run, one decimal number a line), resumed as its blocks arrive.
#[derive(Default)]
struct MapScan {
    /// Bytes of the map scanned so far.
    scanned: usize,
    /// Where the line being scanned starts.
    start: usize,
    /// The count of numbers after the first line.
    want: Option<usize>,
    numbers: Vec<u64>,
}

impl MapScan {
    /// Scans what `b` (the map so far) adds; the runs once all are in.
    fn scan(&mut self, b: &[u8], max_runs: usize) -> Result<Option<Vec<(u64, u64)>>> {
        let bad = || {
            err(
                ErrorKind::InvalidSparse,
                "the GNU sparse 1.0 map is malformed",
            )
        };
        for i in self.scanned..b.len() {
            self.scanned = i + 1;
            let c = b[i];
            if c != b'\n' {
                if !c.is_ascii_digit() {
                    return Err(bad());
                }
                continue;
            }
            let s = std::str::from_utf8(&b[self.start..i]).map_err(|_| bad())?;
            let n: u64 = s.parse().map_err(|_| bad())?;
            self.start = i + 1;
            match self.want {
                None => {
                    if n > max_runs as u64 {
                        return Err(too_many_runs(max_runs));
                    }
                    self.want = Some(n as usize * 2);
                    self.numbers.reserve_exact(n as usize * 2);
                }
                Some(_) => {
                    if n > MAX_SIZE {
                        return Err(err(
                            ErrorKind::InvalidSparse,
                            format!("a GNU sparse 1.0 map number {n}, past 2^63-1"),
                        ));
                    }
                    self.numbers.push(n);
                }
            }
            if self.want == Some(self.numbers.len()) {
                let runs = self.numbers.chunks(2).map(|c| (c[0], c[1])).collect();
                *self = MapScan::default();
                return Ok(Some(runs));
            }
        }
        Ok(None)
    }
}

/// Parses a whole GNU sparse 1.0 map; `None` until all of it is in `b`.
#[cfg(test)]
fn parse_sparse_map_1(b: &[u8], max_runs: usize) -> Result<Option<Vec<(u64, u64)>>> {
    MapScan::default().scan(b, max_runs)
}

fn old_sparse_run(b: &[u8]) -> Result<Option<(u64, u64)>> {
    if b[0] == 0 {
        return Ok(None);
    }
    Ok(Some((
        number(&b[0..12], "sparse offset")?,
        number(&b[12..24], "sparse size")?,
    )))
}

fn check_sparse(runs: &[(u64, u64)], size: u64, stream: u64) -> Result<()> {
    let bad = |m: &str| err(ErrorKind::InvalidSparse, m.to_string());
    let mut end = 0u64;
    let mut total = 0u64;
    for &(o, n) in runs {
        if o < end {
            return Err(bad("sparse runs overlap or are out of order"));
        }
        end = o
            .checked_add(n)
            .ok_or_else(|| bad("a sparse run overflows"))?;
        if end > size {
            return Err(bad("a sparse run ends past the file's size"));
        }
        total = total
            .checked_add(n)
            .ok_or_else(|| bad("the sparse runs overflow"))?;
    }
    if total != stream {
        return Err(bad("the sparse runs do not add up to the stored data"));
    }
    Ok(())
}

fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// An octal field (spaces and NULs around digits allowed); `None` if not a number.
fn parse_octal(f: &[u8]) -> Option<u64> {
    let f = cstr(f);
    let s: &[u8] = {
        let start = f.iter().position(|&c| c != b' ').unwrap_or(f.len());
        let f = &f[start..];
        let end = f.iter().position(|&c| c == b' ').unwrap_or(f.len());
        if f[end..].iter().any(|&c| c != b' ') {
            return None;
        }
        &f[..end]
    };
    let mut v: u64 = 0;
    for &c in s {
        if !(b'0'..=b'7').contains(&c) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

/// A numeric field, octal or GNU base-256; must not be negative.
fn number(f: &[u8], what: &str) -> Result<u64> {
    let v = signed_number(f, what)?;
    u64::try_from(v).map_err(|_| err(ErrorKind::InvalidHeader, format!("a negative {what} field")))
}

fn signed_number(f: &[u8], what: &str) -> Result<i64> {
    let bad = || {
        err(
            ErrorKind::InvalidHeader,
            format!("the {what} field is not a number"),
        )
    };
    if f[0] & 0x80 != 0 {
        // Base-256, two's complement when the top bit of the first byte is set
        // along with 0x40 (0xff: negative).
        let neg = f[0] == 0xff;
        let mut v: i128 = if neg { -1 } else { (f[0] & 0x7f) as i128 };
        for &c in &f[1..] {
            v = (v << 8) | c as i128;
            if v > i64::MAX as i128 || v < i64::MIN as i128 {
                return Err(bad());
            }
        }
        return Ok(v as i64);
    }
    let v = parse_octal(f).ok_or_else(bad)?;
    i64::try_from(v).map_err(|_| bad())
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let h = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_octal_and_base256() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b"  755 \0"), Some(0o755));
        assert_eq!(parse_octal(b"\0\0\0"), Some(0));
        assert_eq!(parse_octal(b"12 3"), None);
        assert_eq!(parse_octal(b"9"), None);
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 1;
        f[10] = 2;
        assert_eq!(number(&f, "size").unwrap(), 0x201);
        let neg = [0xffu8; 12];
        assert_eq!(signed_number(&neg, "mtime").unwrap(), -1);
        assert!(number(&neg, "size").is_err());
    }

    #[test]
    fn pax_records_and_times() {
        let r = parse_pax(b"20 path=a/b/c/d/e/f\n11 uid=123\n").unwrap();
        assert_eq!(r[0], (b"path".to_vec(), b"a/b/c/d/e/f".to_vec()));
        assert_eq!(r[1], (b"uid".to_vec(), b"123".to_vec()));
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"8 path=x\n").is_err());
        assert_eq!(parse_pax(b"9 path=x\n").unwrap().len(), 1);
        assert_eq!(pax_time(b"1.5").unwrap(), (1, 500_000_000));
        assert_eq!(pax_time(b"-1.25").unwrap(), (-2, 750_000_000));
        assert_eq!(
            pax_time(b"1700000000.123456789123").unwrap(),
            (1_700_000_000, 123_456_789)
        );
        assert!(pax_time(b"1e9").is_err());
    }

    #[test]
    fn libarchive_encodings() {
        assert_eq!(percent_decode(b"user.a%3Db").unwrap(), b"user.a=b");
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"AQID").unwrap(), vec![1, 2, 3]);
        assert!(base64_decode(b"a*b").is_none());
    }

    #[test]
    fn sparse_map_1_needs_all_lines() {
        assert_eq!(parse_sparse_map_1(b"2\n0\n10\n", 10).unwrap(), None);
        assert_eq!(
            parse_sparse_map_1(b"2\n0\n10\n100\n5\n", 10).unwrap(),
            Some(vec![(0, 10), (100, 5)])
        );
        assert!(parse_sparse_map_1(b"20\n", 10).is_err());
    }
}
