//! The `ImageLease` class.

use super::*;

/// What holds a lease.
#[napi(string_enum = "lowercase")]
pub enum LeaseKind {
    Sandbox,
    Snapshot,
    Ingest,
}

impl From<core::LeaseKind> for LeaseKind {
    fn from(k: core::LeaseKind) -> Self {
        match k {
            core::LeaseKind::Sandbox => LeaseKind::Sandbox,
            core::LeaseKind::Snapshot => LeaseKind::Snapshot,
            core::LeaseKind::Ingest => LeaseKind::Ingest,
        }
    }
}

/// A pin on an image's manifest, held until released or expired.
#[napi]
pub struct ImageLease {
    inner: core::ImageLease,
    backend: core::LocalBackend,
}

impl ImageLease {
    pub fn new(inner: core::ImageLease, backend: core::LocalBackend) -> Self {
        ImageLease { inner, backend }
    }
}

/// The plain-object form of an `ImageLease`.
#[napi(object, use_nullable = true)]
pub struct ImageLeaseJson {
    pub id: String,
    pub kind: LeaseKind,
    pub reference: Option<String>,
    pub manifest_digest: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub disk: Option<ImageDisk>,
}

#[napi]
impl ImageLease {
    /// The lease id.
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.inner.id.clone()
    }

    /// Who holds it.
    #[napi(getter)]
    pub fn kind(&self) -> LeaseKind {
        self.inner.kind.into()
    }

    /// The reference it was taken through.
    #[napi(getter)]
    pub fn reference(&self) -> Option<String> {
        self.inner.reference.clone()
    }

    /// The pinned manifest.
    #[napi(getter)]
    pub fn manifest_digest(&self) -> Option<String> {
        self.inner.manifest_digest.clone()
    }

    /// When it was taken.
    #[napi(getter)]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.inner.created_at
    }

    /// When it ends; `null` until released.
    #[napi(getter)]
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.inner.expires_at
    }

    /// The image's VM disk, when the lease was taken with `materialize`.
    #[napi(getter)]
    pub fn disk(&self) -> Option<ImageDisk> {
        self.inner.disk.clone().map(ImageDisk::from)
    }

    /// Ends the lease; resolves false if it had already ended.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn release(&self) -> AsyncTask<CoreTask<bool>> {
        let backend = self.backend.clone();
        let id = self.inner.id.clone();
        AsyncTask::new(CoreTask::new(move || backend.release_lease(&id)))
    }

    /// A plain object with the same fields.
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> ImageLeaseJson {
        lease_json(&self.inner)
    }
}

pub fn lease_json(l: &core::ImageLease) -> ImageLeaseJson {
    ImageLeaseJson {
        id: l.id.clone(),
        kind: l.kind.into(),
        reference: l.reference.clone(),
        manifest_digest: l.manifest_digest.clone(),
        created_at: l.created_at,
        expires_at: l.expires_at,
        disk: l.disk.clone().map(ImageDisk::from),
    }
}
