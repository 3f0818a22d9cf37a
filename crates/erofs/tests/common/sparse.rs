//! Sparse tar members crafted byte for byte, in every GNU form (1.0 and
//! 0.1 and 0.0 through PAX records, the old `S` type), with any declared
//! size written as text, for tests of what refuses hostile ones.

use super::tarw::{record, Ent, TarW};

/// The PAX extended header `x` holding `records`, then nothing else.
pub fn pax_header(w: &mut TarW, records: &[(&str, String)]) {
    let mut content = Vec::new();
    for (k, v) in records {
        content.extend(record(k.as_bytes(), v.as_bytes()));
    }
    let meta = Ent::file("PaxHeaders/x", b"");
    w.header(b"PaxHeaders/x", &meta, b'x', content.len() as u64, b"", b"");
    w.data(&content);
}

/// The stored bytes of `runs` one after the other.
pub fn stored(runs: &[(u64, &[u8])]) -> Vec<u8> {
    runs.iter().flat_map(|r| r.1.iter().copied()).collect()
}

/// A GNU sparse 1.0 member as GNU tar writes it in a PAX archive: records
/// `GNU.sparse.major=1`, `minor=0`, `name`, `realsize` (given as text, so
/// that any number can be written), then a member whose data is the map
/// (`count\noffset\nsize\n...`, padded to 512 bytes) and the runs' bytes.
pub fn sparse_1_0(w: &mut TarW, name: &str, realsize: &str, runs: &[(u64, &[u8])]) {
    pax_header(
        w,
        &[
            ("GNU.sparse.major", "1".into()),
            ("GNU.sparse.minor", "0".into()),
            ("GNU.sparse.name", name.into()),
            ("GNU.sparse.realsize", realsize.into()),
        ],
    );
    let mut map = format!("{}\n", runs.len());
    for (o, d) in runs {
        map.push_str(&format!("{o}\n{}\n", d.len()));
    }
    let mut data = map.into_bytes();
    data.resize(data.len().div_ceil(512) * 512, 0);
    data.extend(stored(runs));
    let header_name = format!("GNUSparseFile.0/{name}");
    let meta = Ent::file(&header_name, b"");
    w.header(
        header_name.as_bytes(),
        &meta,
        b'0',
        data.len() as u64,
        b"",
        b"",
    );
    w.data(&data);
}

/// GNU sparse 0.1: `GNU.sparse.size` and `GNU.sparse.map=o,n,o,n`, the
/// runs' bytes as the member's data.
pub fn sparse_0_1(w: &mut TarW, name: &str, size: &str, runs: &[(u64, &[u8])]) {
    let map: Vec<String> = runs
        .iter()
        .map(|(o, d)| format!("{o},{}", d.len()))
        .collect();
    pax_header(
        w,
        &[
            ("GNU.sparse.size", size.into()),
            ("GNU.sparse.map", map.join(",")),
            ("GNU.sparse.name", name.into()),
        ],
    );
    let data = stored(runs);
    let meta = Ent::file(name, b"");
    w.header(name.as_bytes(), &meta, b'0', data.len() as u64, b"", b"");
    w.data(&data);
}

/// GNU sparse 0.0: `GNU.sparse.size`, then `GNU.sparse.offset` and
/// `GNU.sparse.numbytes` per run.
pub fn sparse_0_0(w: &mut TarW, name: &str, size: &str, runs: &[(u64, &[u8])]) {
    let mut recs = vec![("GNU.sparse.size", size.to_string())];
    for (o, d) in runs {
        recs.push(("GNU.sparse.offset", o.to_string()));
        recs.push(("GNU.sparse.numbytes", d.len().to_string()));
    }
    pax_header(w, &recs);
    let data = stored(runs);
    let meta = Ent::file(name, b"");
    w.header(name.as_bytes(), &meta, b'0', data.len() as u64, b"", b"");
    w.data(&data);
}

/// An old GNU sparse member (type `S`): runs in the header at 386, the real
/// size at 483 in base-256 (so that any 64-bit value fits).
pub fn sparse_old(w: &mut TarW, name: &str, realsize: u64, runs: &[(u64, &[u8])]) {
    assert!(runs.len() <= 4);
    let data = stored(runs);
    let meta = Ent::file(name, b"").fmt(super::tarw::Fmt::Gnu);
    let at = w.buf.len();
    w.header(name.as_bytes(), &meta, b'S', data.len() as u64, b"", b"");
    let h = &mut w.buf[at..at + 512];
    for (i, (o, d)) in runs.iter().enumerate() {
        let f = 386 + i * 24;
        h[f..f + 11].copy_from_slice(format!("{o:011o}").as_bytes());
        h[f + 12..f + 23].copy_from_slice(format!("{:011o}", d.len()).as_bytes());
    }
    h[482] = 0; // no extension blocks
    h[483] = 0x80;
    h[484..487].fill(0);
    h[487..495].copy_from_slice(&realsize.to_be_bytes());
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    w.data(&data);
}
