//! What a registry needs to serve the cache to other hosts, read only:
//! a repository's manifests by tag or digest, its blobs by digest, its
//! tags. Only what the cache keeps for that repository is served: the
//! manifests its references name and the manifests its unexpired leases
//! pin, with everything each of them needs. Anything else, a blob that
//! sits in `blobs/` for another repository, an orphan, a file another
//! process dropped there, is not found.
//!
//! Each call takes the shared cache lock, decides from `index.json` and
//! the lease files, and opens the file through the cache's directory
//! descriptors (never following a link) before it lets go of the lock:
//! a prune can only delete the file after that, and an open file keeps
//! its bytes. Manifests are read whole (they are small and bounded) and
//! checked against their digest; a blob is handed out as an open file
//! whose reader checks the digest as it streams (see [`ServedBlob`]).

use std::collections::HashSet;
use std::fs::File;

use crate::api::backend::LocalBackend;
use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::gc::census::graph_of;
use crate::gc::graph::Kind;
use crate::oci::digest::Digest;
use crate::oci::model::{ManifestDoc, Shape, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST};
use crate::oci::reference::Reference;
use crate::store::layout::Layout;
use crate::store::lease;
use crate::store::lock::Shared;
use crate::util::time;

/// A manifest or index the cache keeps, read and checked.
#[derive(Clone, Debug)]
pub struct ServedManifest {
    /// `sha256:...`: what its bytes hash to.
    pub digest: String,
    /// Its media type (`application/vnd.oci.image.manifest.v1+json`).
    pub media_type: String,
    /// The document, exactly as stored.
    pub bytes: Vec<u8>,
}

/// A blob the cache keeps, open for reading.
///
/// The file is the cache's own, opened without following links; its
/// bytes were verified when they entered the cache, but anyone who may
/// write the home could have changed them since, so a server hashes what
/// it sends and cuts the answer short when the digest does not match.
#[derive(Debug)]
pub struct ServedBlob {
    /// `sha256:...`: the name it is kept under.
    pub digest: Digest,
    /// Its length now.
    pub size: u64,
    /// The open file.
    pub file: File,
}

/// A repository as a registry names it: `docker.io/library/alpine`.
struct Repository {
    domain: String,
    path: String,
}

impl Repository {
    fn parse(text: &str) -> MicrosandboxResult<Repository> {
        let r = Reference::parse(&format!("{text}:latest"))?;
        if r.repository() != text {
            return Err(MicrosandboxError::new(
                ErrorKind::InvalidReference,
                format!(
                    "invalid repository {text:?}: give it in full, as {}",
                    r.repository()
                ),
            ));
        }
        Ok(Repository {
            domain: r.domain().to_owned(),
            path: r.path().to_owned(),
        })
    }

    fn holds(&self, r: &Reference) -> bool {
        r.domain() == self.domain && r.path() == self.path
    }

    fn shown(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

/// The roots a repository keeps: each reference's manifest with its tag
/// (or none, for a digest-only name), then each unexpired lease's
/// manifest.
struct Kept {
    /// Tag, manifest digest, media type and size, as the index has them.
    tagged: Vec<(Option<String>, Digest, String, u64)>,
    roots: Vec<Digest>,
}

fn not_found(what: String) -> MicrosandboxError {
    MicrosandboxError::new(ErrorKind::ImageNotFound, what)
}

impl LocalBackend {
    /// What `repository` keeps, read under the lock the caller holds.
    fn kept(&self, layout: &Layout, repository: &Repository) -> MicrosandboxResult<Kept> {
        let catalog = self.catalog_cache().current(layout)?;
        let mut tagged = Vec::new();
        let mut roots = Vec::new();
        for e in catalog.entries() {
            if repository.holds(&e.reference) {
                tagged.push((
                    e.reference.tag().map(str::to_owned),
                    e.descriptor.digest.clone(),
                    e.descriptor.media_type.clone(),
                    e.descriptor.size,
                ));
                roots.push(e.descriptor.digest.clone());
            }
        }
        let now = time::now();
        for l in lease::list(layout)? {
            let Some(d) = l.manifest_digest.clone().filter(|_| !l.is_expired(now)) else {
                continue;
            };
            let ours = l
                .reference
                .as_deref()
                .and_then(|r| Reference::parse(r).ok())
                .is_some_and(|r| repository.holds(&r));
            if ours {
                roots.push(d);
            }
        }
        Ok(Kept { tagged, roots })
    }

    /// Whether `digest` is one of the blobs `roots` need, and of which kind.
    fn reach(
        &self,
        layout: &Layout,
        roots: &[Digest],
        digest: &Digest,
    ) -> MicrosandboxResult<Option<Kind>> {
        let distinct: HashSet<&Digest> = roots.iter().collect();
        let graphs = self
            .census_cache()
            .walk_all(layout, distinct.iter().copied());
        for root in distinct {
            if let Some((_, kind)) = graph_of(&graphs, root)?.iter().find(|(d, _)| d == digest) {
                return Ok(Some(*kind));
            }
        }
        Ok(None)
    }

    /// The manifest (or index) `repository` (`docker.io/library/alpine`)
    /// keeps under `reference`: a tag, or a `sha256:` digest of a
    /// manifest one of its references or leases needs. Blocking.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidReference`] for a repository, tag or digest
    /// outside the grammar; [`ErrorKind::ImageNotFound`] for anything the
    /// repository does not keep; [`ErrorKind::CorruptCache`] when the
    /// stored manifest is not what its name says; `Busy`.
    pub fn served_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> MicrosandboxResult<ServedManifest> {
        let repo = Repository::parse(repository)?;
        let by_digest = reference.starts_with("sha256:");
        let digest_asked =
            if by_digest {
                Some(reference.parse::<Digest>().map_err(|e| {
                    MicrosandboxError::new(ErrorKind::InvalidReference, e.to_string())
                })?)
            } else {
                // The tag grammar is the reference parser's.
                Reference::parse(&format!("{}:{reference}", repo.shown()))?;
                None
            };
        let missing = || not_found(format!("manifest unknown: {}:{reference}", repo.shown()));
        let Some(layout) = self.existing_layout()? else {
            return Err(missing());
        };
        let _shared = layout.lock::<Shared>()?;
        let kept = self.kept(&layout, &repo)?;
        let (digest, declared, size) = match digest_asked {
            None => match kept
                .tagged
                .iter()
                .find(|(tag, ..)| tag.as_deref() == Some(reference))
            {
                Some((_, d, media_type, size)) => {
                    (d.clone(), Some(media_type.clone()), Some(*size))
                }
                None => return Err(missing()),
            },
            Some(d) => match self.reach(&layout, &kept.roots, &d)? {
                Some(Kind::Manifest) => (d, None, None),
                _ => return Err(missing()),
            },
        };
        let bytes = layout.read_json_blob(&digest, size)?;
        let doc = ManifestDoc::parse(&bytes).map_err(|e| {
            MicrosandboxError::corrupt(format!("manifest {digest} is invalid: {e}"))
        })?;
        let media_type = doc.media_type.clone().or(declared).unwrap_or_else(|| {
            match doc.shape() {
                Ok(Shape::Index(_)) => MEDIA_OCI_INDEX,
                _ => MEDIA_OCI_MANIFEST,
            }
            .to_owned()
        });
        Ok(ServedManifest {
            digest: digest.to_string(),
            media_type,
            bytes,
        })
    }

    /// A blob (`sha256:...`) one of `repository`'s references or leases
    /// needs, opened for reading. Blocking.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidReference`] for a repository or digest outside
    /// the grammar; [`ErrorKind::ImageNotFound`] for a blob the repository
    /// does not keep, or that is missing; [`ErrorKind::CorruptCache`] for
    /// one that is not a regular file; `Busy`.
    pub fn served_blob(&self, repository: &str, digest: &str) -> MicrosandboxResult<ServedBlob> {
        let repo = Repository::parse(repository)?;
        let digest: Digest = digest.parse().map_err(|e: crate::DigestError| {
            MicrosandboxError::new(ErrorKind::InvalidReference, e.to_string())
        })?;
        let missing = || not_found(format!("blob unknown: {digest} in {}", repo.shown()));
        let Some(layout) = self.existing_layout()? else {
            return Err(missing());
        };
        let _shared = layout.lock::<Shared>()?;
        let kept = self.kept(&layout, &repo)?;
        if self.reach(&layout, &kept.roots, &digest)?.is_none() {
            return Err(missing());
        }
        let file = layout.open_blob(&digest)?.ok_or_else(missing)?;
        let size = file
            .metadata()
            .map_err(|e| MicrosandboxError::io("stat", &layout.blob_path(&digest), e))?
            .len();
        Ok(ServedBlob { digest, size, file })
    }

    /// The tags of `repository`'s references, sorted. Blocking.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidReference`] for a repository outside the
    /// grammar; [`ErrorKind::ImageNotFound`] when the repository keeps
    /// nothing; `Busy`.
    pub fn served_tags(&self, repository: &str) -> MicrosandboxResult<Vec<String>> {
        let repo = Repository::parse(repository)?;
        let missing = || not_found(format!("repository unknown: {}", repo.shown()));
        let Some(layout) = self.existing_layout()? else {
            return Err(missing());
        };
        let _shared = layout.lock::<Shared>()?;
        let kept = self.kept(&layout, &repo)?;
        if kept.roots.is_empty() {
            return Err(missing());
        }
        let mut tags: Vec<String> = kept.tagged.into_iter().filter_map(|(t, ..)| t).collect();
        tags.sort();
        tags.dedup();
        Ok(tags)
    }
}
