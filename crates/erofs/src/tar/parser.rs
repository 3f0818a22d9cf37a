//! The push parser: bytes of a tar stream in pieces of any size, a state
//! machine that collects each header and extension, decodes the member
//! (ustar, GNU long names and links, old GNU sparse, PAX records applied)
//! and passes its data to the [`Sink`] as it arrives.

use super::entry::{Entry, Kind, Sink};
use super::header::{check_checksum, cstr, number, padding, signed_number, BLOCK};
use super::pax::{add_globals, apply_pax, next_record};
use super::sparse::{check_sparse, old_sparse_run, MapScan, PaxSparse};
use crate::error::{Error, ErrorKind, Result};

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
            State::Header if self.buf.is_empty() => Error::new(
                ErrorKind::Truncated,
                "the tar stream ends without its end-of-archive block",
            ),
            State::Data { .. } | State::SparseMap { .. } => Error::new(
                ErrorKind::Truncated,
                "the tar stream ends inside a file's data",
            ),
            _ => Error::new(ErrorKind::Truncated, "the tar stream ends inside a header"),
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
                    return Err(Error::new(
                        ErrorKind::InvalidSparse,
                        "the sparse map runs past the entry's data",
                    ));
                }
                let need = self.buf.len() + BLOCK - self.buf.len() % BLOCK;
                if self.buf.len() as u64 + BLOCK as u64 > self.max_ext {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        "the sparse map is too long",
                    ));
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
            return Err(Error::new(
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
        check_checksum(h)?;
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
                        Error::new(
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
                return Err(Error::new(
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
                    return Err(Error::new(
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
            b'g' => add_globals(&mut self.global, &content, self.max_ext)?,
            _ => unreachable!("not an extension type"),
        }
        Ok(())
    }
}
