//! A tar writer for crafted test layers: ustar (with the prefix field), GNU
//! (`././@LongLink` names, base-256 numbers) and PAX records (paths,
//! nanosecond times, big ids and sizes, `SCHILY.xattr.*` or
//! `LIBARCHIVE.xattr.*`, any extra record).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fmt {
    Ustar,
    Gnu,
    Pax,
}

#[derive(Clone, Debug)]
pub struct Ent {
    pub path: Vec<u8>,
    pub typeflag: u8,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub nsec: Option<u32>,
    pub data: Vec<u8>,
    pub major: u32,
    pub minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub libarchive: bool,
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
    pub fmt: Fmt,
}

impl Ent {
    fn new(path: impl AsRef<[u8]>, typeflag: u8, mode: u32) -> Ent {
        Ent {
            path: path.as_ref().to_vec(),
            typeflag,
            link: Vec::new(),
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            nsec: None,
            data: Vec::new(),
            major: 0,
            minor: 0,
            xattrs: Vec::new(),
            libarchive: false,
            pax: Vec::new(),
            fmt: Fmt::Pax,
        }
    }

    pub fn file(path: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Ent {
        let mut e = Ent::new(path, b'0', 0o644);
        e.data = data.as_ref().to_vec();
        e
    }

    pub fn dir(path: impl AsRef<[u8]>) -> Ent {
        Ent::new(path, b'5', 0o755)
    }

    pub fn symlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Ent {
        let mut e = Ent::new(path, b'2', 0o777);
        e.link = target.as_ref().to_vec();
        e
    }

    pub fn hardlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Ent {
        let mut e = Ent::new(path, b'1', 0o644);
        e.link = target.as_ref().to_vec();
        e
    }

    pub fn chr(path: impl AsRef<[u8]>, major: u32, minor: u32) -> Ent {
        let mut e = Ent::new(path, b'3', 0o600);
        e.major = major;
        e.minor = minor;
        e
    }

    pub fn blk(path: impl AsRef<[u8]>, major: u32, minor: u32) -> Ent {
        let mut e = Ent::new(path, b'4', 0o660);
        e.major = major;
        e.minor = minor;
        e
    }

    pub fn fifo(path: impl AsRef<[u8]>) -> Ent {
        Ent::new(path, b'6', 0o644)
    }

    pub fn mode(mut self, m: u32) -> Ent {
        self.mode = m;
        self
    }

    pub fn owner(mut self, uid: u64, gid: u64) -> Ent {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn mtime(mut self, s: i64) -> Ent {
        self.mtime = s;
        self
    }

    pub fn nsec(mut self, n: u32) -> Ent {
        self.nsec = Some(n);
        self
    }

    pub fn xattr(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Ent {
        self.xattrs
            .push((name.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }

    pub fn fmt(mut self, f: Fmt) -> Ent {
        self.fmt = f;
        self
    }

    pub fn libarchive(mut self) -> Ent {
        self.libarchive = true;
        self
    }

    pub fn record(mut self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) -> Ent {
        self.pax.push((k.as_ref().to_vec(), v.as_ref().to_vec()));
        self
    }
}

fn octal(field: &mut [u8], v: u64) -> bool {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

fn base256(field: &mut [u8], v: i64) {
    let n = field.len();
    let bytes = v.to_be_bytes();
    for (i, f) in field.iter_mut().enumerate() {
        *f = if i + 8 >= n {
            bytes[i + 8 - n]
        } else if v < 0 {
            0xff
        } else {
            0
        };
    }
    if v >= 0 {
        field[0] |= 0x80;
    }
}

/// A numeric field: octal if it fits, else base-256 (GNU) or left 0 (PAX
/// carries it).
fn number(field: &mut [u8], v: i64, gnu: bool) {
    if v >= 0 && octal(field, v as u64) {
        return;
    }
    if gnu {
        base256(field, v);
    } else {
        octal(field, 0);
    }
}

pub fn record(k: &[u8], v: &[u8]) -> Vec<u8> {
    let body = k.len() + v.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(k);
    r.push(b'=');
    r.extend_from_slice(v);
    r.push(b'\n');
    r
}

fn percent(name: &[u8]) -> Vec<u8> {
    let mut o = Vec::new();
    for &c in name {
        if c.is_ascii_alphanumeric() || b"._-".contains(&c) {
            o.push(c);
        } else {
            o.extend_from_slice(format!("%{c:02X}").as_bytes());
        }
    }
    o
}

fn base64(b: &[u8]) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = Vec::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        o.push(A[(n >> 18) as usize & 63]);
        o.push(A[(n >> 12) as usize & 63]);
        o.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        o.push(if c.len() > 2 {
            A[n as usize & 63]
        } else {
            b'='
        });
    }
    o
}

#[derive(Default)]
pub struct TarW {
    pub buf: Vec<u8>,
}

impl TarW {
    pub fn new() -> TarW {
        TarW::default()
    }

    /// A header block; `size` is the data that follows it.
    #[allow(clippy::too_many_arguments)]
    pub fn header(
        &mut self,
        name: &[u8],
        e: &Ent,
        typeflag: u8,
        size: u64,
        link: &[u8],
        prefix: &[u8],
    ) {
        let gnu = e.fmt == Fmt::Gnu;
        let mut h = [0u8; 512];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], e.mode as u64 & 0o7777);
        number(&mut h[108..116], e.uid as i64, gnu);
        number(&mut h[116..124], e.gid as i64, gnu);
        number(&mut h[124..136], size as i64, gnu);
        number(&mut h[136..148], e.mtime, gnu);
        h[156] = typeflag;
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        if gnu {
            h[257..265].copy_from_slice(b"ustar  \0");
        } else {
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
        }
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        octal(&mut h[329..337], e.major as u64);
        octal(&mut h[337..345], e.minor as u64);
        if !gnu {
            let p = prefix.len().min(155);
            h[345..345 + p].copy_from_slice(&prefix[..p]);
        }
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        self.buf.extend_from_slice(&h);
    }

    pub fn data(&mut self, d: &[u8]) {
        self.buf.extend_from_slice(d);
        let pad = (512 - d.len() % 512) % 512;
        self.buf.resize(self.buf.len() + pad, 0);
    }

    fn special(&mut self, e: &Ent, typeflag: u8, content: &[u8]) {
        let mut meta = e.clone();
        meta.mode = 0o644;
        meta.uid = 0;
        meta.gid = 0;
        meta.fmt = if typeflag == b'x' {
            Fmt::Ustar
        } else {
            Fmt::Gnu
        };
        let name: &[u8] = if typeflag == b'x' {
            b"PaxHeaders/x"
        } else {
            b"././@LongLink"
        };
        self.header(name, &meta, typeflag, content.len() as u64, b"", b"");
        self.data(content);
    }

    pub fn add(&mut self, e: &Ent) {
        let size = if e.typeflag == b'0' {
            e.data.len() as u64
        } else {
            0
        };
        let (mut name, mut prefix) = (e.path.clone(), Vec::new());
        match e.fmt {
            Fmt::Pax => {
                let mut recs = Vec::new();
                if e.path.len() > 100 || !e.path.is_ascii() {
                    recs.extend(record(b"path", &e.path));
                    name.truncate(100);
                }
                if e.link.len() > 100 {
                    recs.extend(record(b"linkpath", &e.link));
                }
                if let Some(n) = e.nsec {
                    let t = if e.mtime < 0 && n > 0 {
                        format!("-{}.{:09}", -(e.mtime + 1), 1_000_000_000 - n)
                    } else {
                        format!("{}.{:09}", e.mtime, n)
                    };
                    recs.extend(record(b"mtime", t.as_bytes()));
                } else if e.mtime < 0 {
                    recs.extend(record(b"mtime", e.mtime.to_string().as_bytes()));
                }
                if e.uid > 0o7777777 {
                    recs.extend(record(b"uid", e.uid.to_string().as_bytes()));
                }
                if e.gid > 0o7777777 {
                    recs.extend(record(b"gid", e.gid.to_string().as_bytes()));
                }
                for (k, v) in &e.xattrs {
                    if e.libarchive {
                        let mut key = b"LIBARCHIVE.xattr.".to_vec();
                        key.extend(percent(k));
                        recs.extend(record(&key, &base64(v)));
                    } else {
                        let mut key = b"SCHILY.xattr.".to_vec();
                        key.extend_from_slice(k);
                        recs.extend(record(&key, v));
                    }
                }
                for (k, v) in &e.pax {
                    recs.extend(record(k, v));
                }
                if !recs.is_empty() {
                    self.special(e, b'x', &recs);
                }
            }
            Fmt::Gnu => {
                if e.link.len() > 100 {
                    let mut l = e.link.clone();
                    l.push(0);
                    self.special(e, b'K', &l);
                }
                if e.path.len() > 100 {
                    let mut p = e.path.clone();
                    p.push(0);
                    self.special(e, b'L', &p);
                }
                assert!(
                    e.xattrs.is_empty() && e.nsec.is_none(),
                    "GNU tars carry no PAX records"
                );
            }
            Fmt::Ustar => {
                if e.path.len() > 100 {
                    let at = e.path[..e.path.len() - 1]
                        .iter()
                        .rposition(|&c| c == b'/')
                        .filter(|&i| i <= 155 && e.path.len() - i - 1 <= 100)
                        .expect("a ustar path that splits into prefix and name");
                    prefix = e.path[..at].to_vec();
                    name = e.path[at + 1..].to_vec();
                }
            }
        }
        self.header(&name, e, e.typeflag, size, &e.link.clone(), &prefix);
        if size > 0 {
            self.data(&e.data);
        }
    }

    pub fn with(mut self, e: Ent) -> TarW {
        self.add(&e);
        self
    }

    /// The archive with its end-of-archive blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.resize(self.buf.len() + 1024, 0);
        self.buf
    }
}

/// A tar of these entries.
pub fn tar(entries: &[Ent]) -> Vec<u8> {
    let mut w = TarW::new();
    for e in entries {
        w.add(e);
    }
    w.finish()
}
