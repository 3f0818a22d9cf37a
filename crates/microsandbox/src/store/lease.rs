//! Leases: files that pin content while a sandbox, a snapshot or an ingest
//! uses it.
//!
//! A lease is data, not a lock: an id, a kind, the manifest it pins (by
//! digest, not by name), extra blobs it pins (an ingest's content before
//! its manifest is committed), a creation time and an optional expiry.
//! Each lives in `leases/<id>.json`, written atomically, and outlives the
//! process that made it. An expired lease pins nothing and is swept by
//! prune.

use std::collections::HashSet;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::layout::Layout;
use crate::util::time;

pub use crate::values::LeaseKind;

const LEASE_LIMIT: u64 = 16 << 20;
const ID_MAX: usize = 128;

/// A lease as stored in `leases/<id>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    /// The id: `[A-Za-z0-9_.-]`, 1 to 128 characters, not starting with a dot.
    pub id: String,
    /// What holds it.
    pub kind: LeaseKind,
    /// The canonical reference it was taken through, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The manifest it pins, with everything the manifest needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<Digest>,
    /// Further blobs it pins by themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<Digest>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; none for a lease that lasts until released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl LeaseRecord {
    /// When it was made.
    pub fn created(&self) -> SystemTime {
        time::parse(&self.created_at).unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// When it ends, if ever.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires_at
            .as_deref()
            .map(|t| time::parse(t).unwrap_or(SystemTime::UNIX_EPOCH))
    }

    /// Whether it has ended at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires().is_some_and(|t| t <= now)
    }
}

/// Checks a lease id: it becomes a file name, so no separator, no leading dot.
///
/// # Errors
///
/// [`crate::ErrorKind::InvalidArgument`].
pub fn check_id(id: &str) -> MicrosandboxResult<()> {
    let ok = !id.is_empty()
        && id.len() <= ID_MAX
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(MicrosandboxError::invalid_argument(format!(
            "invalid lease id {id:?}: use 1 to {ID_MAX} of A-Z a-z 0-9 _ . -, not starting with a dot"
        )))
    }
}

/// The file name of a lease.
fn file_name(id: &str) -> String {
    format!("{id}.json")
}

/// Writes a lease (atomically; replaces one of the same id).
pub fn write(layout: &Layout, lease: &LeaseRecord) -> MicrosandboxResult<()> {
    check_id(&lease.id)?;
    let bytes = serde_json::to_vec_pretty(lease).expect("a lease always serializes");
    layout
        .leases_dir()
        .write_atomic(&file_name(&lease.id), &bytes)
}

/// Reads one lease; `None` if there is none of that id.
///
/// # Errors
///
/// [`crate::ErrorKind::CorruptCache`] when the file is not a regular
/// file, does not parse, or names another lease.
pub fn read(layout: &Layout, id: &str) -> MicrosandboxResult<Option<LeaseRecord>> {
    check_id(id)?;
    let name = file_name(id);
    match layout.leases_dir().read_bounded(&name, LEASE_LIMIT)? {
        None => Ok(None),
        Some(bytes) => parse(layout, &name, &bytes).map(Some),
    }
}

/// Parses a lease file: its record must be the lease its file name says.
fn parse(layout: &Layout, name: &str, bytes: &[u8]) -> MicrosandboxResult<LeaseRecord> {
    let path = layout.leases_dir().join(name);
    let record: LeaseRecord = serde_json::from_slice(bytes).map_err(|e| {
        MicrosandboxError::corrupt(format!("lease file {} does not parse: {e}", path.display()))
    })?;
    // A time that does not read could be a lease that lasts: never taken
    // as one that has ended.
    let unreadable_time = time::parse(&record.created_at).is_none()
        || record
            .expires_at
            .as_deref()
            .is_some_and(|t| time::parse(t).is_none());
    if unreadable_time {
        return Err(MicrosandboxError::corrupt(format!(
            "lease file {} holds a time that is not RFC 3339 (createdAt {:?}, expiresAt {:?})",
            path.display(),
            record.created_at,
            record.expires_at
        )));
    }
    if file_name(&record.id) != name {
        return Err(MicrosandboxError::corrupt(format!(
            "lease file {} holds lease {:?}: a copy or a forgery, never acted on; \
             remove the file or name it after its id",
            path.display(),
            record.id
        )));
    }
    Ok(record)
}

/// Every lease on disk, expired ones included, oldest first.
///
/// # Errors
///
/// [`crate::ErrorKind::CorruptCache`] when a regular lease file does not
/// parse or names another lease: a lease that cannot be read might pin
/// anything, so nothing may be deleted on its account. Entries that are
/// not regular files (a FIFO, a link) are skipped: no lease is ever
/// written as one.
pub fn list(layout: &Layout) -> MicrosandboxResult<Vec<LeaseRecord>> {
    let (leases, bad) = scan(layout)?;
    match bad.into_iter().find(|b| b.blocking) {
        Some(b) => Err(b.error),
        None => Ok(leases),
    }
}

/// A lease file that could not be taken as a lease.
#[derive(Debug)]
pub struct BadLease {
    /// Its name in `leases/`.
    pub name: String,
    /// Why.
    pub error: MicrosandboxError,
    /// Whether it stops a prune: a regular file that might be a lease
    /// (one that is not a regular file is only reported).
    pub blocking: bool,
}

/// Every lease that parses, oldest first, and each lease file that does
/// not (for `verify`), by name.
pub fn scan(layout: &Layout) -> MicrosandboxResult<(Vec<LeaseRecord>, Vec<BadLease>)> {
    let dir = layout.leases_dir();
    let mut leases = Vec::new();
    let mut bad = Vec::new();
    for entry in dir.entries()? {
        let name = entry.name;
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let skip = |error| BadLease {
            name: name.clone(),
            error,
            blocking: false,
        };
        // Opened without following a link and without blocking: a lease
        // released while we list is simply gone.
        match dir.stat(&name)? {
            None => continue,
            Some(s) if crate::store::fs::kind(&s) != rustix::fs::FileType::RegularFile => {
                bad.push(skip(MicrosandboxError::corrupt(format!(
                    "{} is not a regular file",
                    dir.join(&name).display()
                ))));
                continue;
            }
            Some(_) => {}
        }
        match dir.read_bounded(&name, LEASE_LIMIT) {
            Ok(Some(bytes)) => match parse(layout, &name, &bytes) {
                Ok(l) => leases.push(l),
                Err(error) => bad.push(BadLease {
                    name: name.clone(),
                    error,
                    blocking: true,
                }),
            },
            Ok(None) => {}
            // Swapped for a link or a FIFO since the stat.
            Err(error) => bad.push(skip(error)),
        }
    }
    leases.sort_by(|a, b| (a.created(), &a.id).cmp(&(b.created(), &b.id)));
    bad.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((leases, bad))
}

/// Deletes a lease; false when there was none of that id.
pub fn remove(layout: &Layout, id: &str) -> MicrosandboxResult<bool> {
    check_id(id)?;
    let removed = layout.leases_dir().remove(&file_name(id))?;
    if removed {
        // A released lease must not come back after a power loss.
        layout.leases_dir().sync()?;
    }
    Ok(removed)
}

/// What unexpired leases pin: manifests (with what they need) and loose blobs.
#[derive(Debug, Default)]
pub struct Pins {
    /// Pinned manifests.
    pub manifests: HashSet<Digest>,
    /// Pinned blobs.
    pub blobs: HashSet<Digest>,
}

impl Pins {
    /// The pins of the leases live at `now`.
    pub fn of(leases: &[LeaseRecord], now: SystemTime) -> Pins {
        let mut pins = Pins::default();
        for lease in leases.iter().filter(|l| !l.is_expired(now)) {
            pins.manifests.extend(lease.manifest_digest.iter().cloned());
            pins.blobs.extend(lease.blobs.iter().cloned());
        }
        pins
    }
}

/// A lease that pins the blobs of a transfer (a load, a save) while it
/// runs: renewed as the transfer goes on, released when dropped. If the
/// process dies, the pin ends by itself within [`TransferPin::TTL`].
pub struct TransferPin<'a> {
    layout: &'a Layout,
    record: LeaseRecord,
    renewed: std::time::Instant,
}

impl<'a> TransferPin<'a> {
    /// How long a pin lasts past its last renewal.
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(3600);
    /// How often a running transfer renews its pin.
    pub const RENEW: std::time::Duration = std::time::Duration::from_secs(600);

    /// Pins `blobs`, taking the shared cache lock for the write, so the pin
    /// never lands in the middle of a prune.
    pub fn take(layout: &'a Layout, blobs: Vec<Digest>) -> MicrosandboxResult<Self> {
        let _shared = layout.lock::<crate::store::lock::Shared>()?;
        Self::take_locked(layout, blobs)
    }

    /// Pins an image manifest (with what it needs: its blobs and its VM
    /// artifacts) and `blobs`, as [`TransferPin::take`].
    pub fn take_manifest(
        layout: &'a Layout,
        manifest: Digest,
        blobs: Vec<Digest>,
    ) -> MicrosandboxResult<Self> {
        let _shared = layout.lock::<crate::store::lock::Shared>()?;
        Self::pin(layout, Some(manifest), blobs)
    }

    /// [`TransferPin::take`] for a caller that holds a cache lock already.
    pub fn take_locked(layout: &'a Layout, blobs: Vec<Digest>) -> MicrosandboxResult<Self> {
        Self::pin(layout, None, blobs)
    }

    fn pin(
        layout: &'a Layout,
        manifest_digest: Option<Digest>,
        blobs: Vec<Digest>,
    ) -> MicrosandboxResult<Self> {
        let now = time::now();
        let record = LeaseRecord {
            id: format!("ingest-{}", crate::store::fs::random_hex(8)),
            kind: LeaseKind::Ingest,
            reference: None,
            manifest_digest,
            blobs,
            created_at: time::format(now),
            expires_at: Some(time::format(now + Self::TTL)),
        };
        write(layout, &record)?;
        Ok(TransferPin {
            layout,
            record,
            renewed: std::time::Instant::now(),
        })
    }

    /// Pushes the expiry on when the last renewal is [`TransferPin::RENEW`] old.
    pub fn renew_if_due(&mut self) -> MicrosandboxResult<()> {
        if self.renewed.elapsed() < Self::RENEW {
            return Ok(());
        }
        // A prune holding the lock past the wait is no reason to fail a
        // transfer whose pin has most of its hour left: try again later.
        let _shared = match self.layout.lock::<crate::store::lock::Shared>() {
            Ok(guard) => guard,
            Err(e)
                if e.kind() == crate::ErrorKind::Busy && self.renewed.elapsed() < Self::TTL / 2 =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        self.record.expires_at = Some(time::format(time::now() + Self::TTL));
        self.renewed = std::time::Instant::now();
        write(self.layout, &self.record)
    }
}

impl Drop for TransferPin<'_> {
    fn drop(&mut self) {
        let _ = remove(self.layout, &self.record.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(id: &str, expires: Option<SystemTime>) -> LeaseRecord {
        LeaseRecord {
            id: id.into(),
            kind: LeaseKind::Sandbox,
            reference: Some("docker.io/library/a:latest".into()),
            manifest_digest: Some(Digest::of(id.as_bytes())),
            blobs: vec![],
            created_at: time::format(time::now()),
            expires_at: expires.map(time::format),
        }
    }

    #[test]
    fn leases_round_trip_and_expire() {
        let (_home, layout) = crate::store::layout::tests::temp();
        let live = record("live", None);
        let past = record("past", Some(time::now() - Duration::from_secs(5)));
        write(&layout, &live).unwrap();
        write(&layout, &past).unwrap();
        assert_eq!(read(&layout, "live").unwrap().unwrap(), live);
        let all = list(&layout).unwrap();
        assert_eq!(all.len(), 2);
        let pins = Pins::of(&all, time::now());
        assert!(pins
            .manifests
            .contains(live.manifest_digest.as_ref().unwrap()));
        assert!(!pins
            .manifests
            .contains(past.manifest_digest.as_ref().unwrap()));
        assert!(remove(&layout, "live").unwrap());
        assert!(!remove(&layout, "live").unwrap());
        assert!(read(&layout, "live").unwrap().is_none());
    }

    #[test]
    fn ids_cannot_escape_the_directory() {
        for bad in ["", "../x", "a/b", ".hidden", "a\0b", &"x".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_id("sandbox-1.two_3").is_ok());
    }

    #[test]
    fn an_unreadable_lease_is_a_corrupt_cache() {
        let (_home, layout) = crate::store::layout::tests::temp();
        std::fs::write(layout.leases_dir().join("bad.json"), b"{").unwrap();
        assert_eq!(
            list(&layout).unwrap_err().kind(),
            crate::ErrorKind::CorruptCache
        );
    }

    #[test]
    fn a_lease_whose_id_is_not_its_file_name_is_bad_and_a_fifo_is_skipped() {
        let (_home, layout) = crate::store::layout::tests::temp();
        let live = record("sbx-live", None);
        write(&layout, &live).unwrap();
        let copy = serde_json::to_vec(&record("sbx-live", Some(time::now()))).unwrap();
        std::fs::write(layout.leases_dir().join("sbx-live.bak.json"), copy).unwrap();
        let (leases, bad) = scan(&layout).unwrap();
        assert_eq!(leases, vec![live.clone()]);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].blocking);
        assert!(bad[0].error.to_string().contains("sbx-live.bak.json"));
        assert_eq!(
            list(&layout).unwrap_err().kind(),
            crate::ErrorKind::CorruptCache
        );
        std::fs::remove_file(layout.leases_dir().join("sbx-live.bak.json")).unwrap();
        let fifo = layout.leases_dir().join("wedge.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path of the test's own home.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (leases, bad) = scan(&layout).unwrap();
        assert_eq!(leases, vec![live]);
        assert!(!bad[0].blocking);
        assert_eq!(list(&layout).unwrap().len(), 1);
    }
}
