//! The one error type of the crate: a closed set of kinds with stable codes.
//!
//! Every rejection carries an [`ErrorKind`] whose [`ErrorKind::code`] is the
//! string the Node binding puts in `err.code`, and a message that names the
//! thing (`image not found: python:3.12`). Callers test the kind, never the
//! message.

use std::fmt;
use std::io;
use std::path::Path;

/// Calls `$callback! { ... }` with every error kind, each with its doc
/// comment, in declaration order: the one list that defines
/// [`ErrorKind`] here and the binding's JS `ErrorCode` enum, so the two
/// cannot drift apart. (Plain `#[doc = "..."]` strings: the binding's
/// generator copies them into `index.d.ts` as they are written.)
#[doc(hidden)]
#[macro_export]
macro_rules! with_error_kinds {
    ($callback:ident) => {
        $callback! {
            #[doc = "No reference in the cache matches."]
            ImageNotFound,
            #[doc = "An unexpired lease pins the image."]
            ImageInUse,
            #[doc = "The reference is outside the Docker reference grammar."]
            InvalidReference,
            #[doc = "An image source (layout directory, archive) is malformed or hostile."]
            InvalidArchive,
            #[doc = "Content did not hash to the digest it was announced with."]
            DigestMismatch,
            #[doc = "The cache on disk breaks one of its invariants."]
            CorruptCache,
            #[doc = "No manifest of an index matches the requested platform."]
            PlatformNotFound,
            #[doc = "The cache lock could not be taken within the bound."]
            Busy,
            #[doc = "A valid request this version does not handle."]
            Unsupported,
            #[doc = "The operating system refused a read or a write."]
            Io,
            #[doc = "A registry refused the credentials."]
            Unauthorized,
            #[doc = "A registry answered with an error."]
            RegistryError,
            #[doc = "An argument is of the wrong type or out of range."]
            InvalidArgument,
        }
    };
}

macro_rules! define_error_kind {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The class of a failure. Its [`code`](ErrorKind::code) is stable.
        #[non_exhaustive]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $($(#[$doc])* $name,)*
        }

        impl ErrorKind {
            /// Every kind, in declaration order.
            pub const ALL: [ErrorKind; [$(stringify!($name)),*].len()] = [$(ErrorKind::$name),*];

            /// The stable code: the JS `err.code` and the name of the variant.
            pub fn code(self) -> &'static str {
                match self {
                    $(ErrorKind::$name => stringify!($name),)*
                }
            }
        }
    };
}

with_error_kinds!(define_error_kind);

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error of the cache: a kind, a message naming the subject, and for
/// [`ErrorKind::Io`] the operating system's error.
#[derive(Debug)]
pub struct MicrosandboxError {
    kind: ErrorKind,
    message: String,
    source: Option<io::Error>,
}

/// The crate's result type.
pub type MicrosandboxResult<T> = Result<T, MicrosandboxError>;

impl MicrosandboxError {
    /// An error of `kind` with a message that names its subject.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        MicrosandboxError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An [`ErrorKind::Io`] error naming the action and the path.
    pub fn io(action: &str, path: &Path, err: io::Error) -> Self {
        MicrosandboxError {
            kind: ErrorKind::Io,
            message: format!("{action} {}: {err}", path.display()),
            source: Some(err),
        }
    }

    /// The class of the failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable code of the kind.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The message without the code.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The operating system's error, for [`ErrorKind::Io`].
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }

    pub(crate) fn not_found(reference: &str) -> Self {
        Self::new(
            ErrorKind::ImageNotFound,
            format!("image not found: {reference}"),
        )
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CorruptCache, message)
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
}

impl fmt::Display for MicrosandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for MicrosandboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Adds a path and an action to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, action: &str, path: &Path) -> MicrosandboxResult<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, action: &str, path: &Path) -> MicrosandboxResult<T> {
        self.map_err(|e| MicrosandboxError::io(action, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_variant_names() {
        for kind in ErrorKind::ALL {
            assert_eq!(kind.code(), format!("{kind:?}"));
        }
    }

    #[test]
    fn io_errors_name_the_path() {
        let err = MicrosandboxError::io(
            "open",
            Path::new("/x/y"),
            io::Error::from(io::ErrorKind::NotFound),
        );
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.to_string().contains("open /x/y"), "{err}");
        assert!(err.io_error().is_some());
    }
}
