//! The crate's error: a closed [`ErrorKind`], a message, the tar entry or
//! image path it is about, the byte offset of the tar header, and the I/O
//! error underneath when there is one.

use std::fmt;
use std::io;

/// A specialized `Result` for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The category of an [`Error`]. New kinds may be added.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Reading the input or writing the output failed (see [`Error::io_error`]).
    Io,
    /// The tar stream ended inside a header or an entry's data, or before its
    /// end-of-archive block.
    Truncated,
    /// A tar header is malformed: its checksum, a number field or a name.
    InvalidHeader,
    /// A PAX extended header is malformed.
    InvalidPax,
    /// A GNU sparse map is malformed or disagrees with the entry's size.
    InvalidSparse,
    /// A path whose `..` climbs above the root.
    PathEscapesRoot,
    /// A path component longer than 255 bytes (the format's limit).
    NameTooLong,
    /// A hard link to a path not seen before it in the stream, or to a
    /// directory.
    InvalidHardlink,
    /// A path below something that is not a directory, or a non-directory
    /// entry for the root.
    NotADirectory,
    /// Something the writer does not handle: a multi-volume tar entry, a
    /// device number or a file layout the format cannot hold.
    Unsupported,
    /// An extended attribute whose name EROFS cannot encode (a namespace
    /// other than `user.`, `trusted.`, `security.` and the POSIX ACLs).
    UnsupportedXattr,
    /// A count or size beyond a bound of [`Limits`](crate::Limits) or of the
    /// format.
    LimitExceeded,
    /// An image that is not a valid EROFS image, or not one this crate can
    /// read (compressed data, inline file tails where chunks are needed).
    InvalidImage,
    /// An fsmeta image and the layer images given with it do not match.
    LayerMismatch,
    /// A VMDK descriptor that cannot be parsed or does not match its files.
    InvalidVmdk,
}

impl ErrorKind {
    /// A short stable name for the kind, e.g. `"path-escapes-root"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::Truncated => "truncated",
            ErrorKind::InvalidHeader => "invalid-header",
            ErrorKind::InvalidPax => "invalid-pax",
            ErrorKind::InvalidSparse => "invalid-sparse",
            ErrorKind::PathEscapesRoot => "path-escapes-root",
            ErrorKind::NameTooLong => "name-too-long",
            ErrorKind::InvalidHardlink => "invalid-hardlink",
            ErrorKind::NotADirectory => "not-a-directory",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::UnsupportedXattr => "unsupported-xattr",
            ErrorKind::LimitExceeded => "limit-exceeded",
            ErrorKind::InvalidImage => "invalid-image",
            ErrorKind::LayerMismatch => "layer-mismatch",
            ErrorKind::InvalidVmdk => "invalid-vmdk",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of this crate. Its `Display` names the bad tar entry (or image)
/// and where its header starts in the stream.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    entry: Option<String>,
    offset: Option<u64>,
    source: Option<io::Error>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            entry: None,
            offset: None,
            source: None,
        }
    }

    pub(crate) fn io(message: impl Into<String>, source: io::Error) -> Error {
        let mut e = Error::new(ErrorKind::Io, message);
        e.source = Some(source);
        e
    }

    /// Names the entry (a tar path or an image file) unless one is named.
    pub(crate) fn with_entry(mut self, entry: impl AsRef<[u8]>) -> Error {
        if self.entry.is_none() {
            self.entry = Some(String::from_utf8_lossy(entry.as_ref()).into_owned());
        }
        self
    }

    /// Records the tar header offset unless one is recorded.
    pub(crate) fn at(mut self, offset: u64) -> Error {
        if self.offset.is_none() {
            self.offset = Some(offset);
        }
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The tar entry's path (lossy UTF-8) or the image the error is about.
    pub fn entry(&self) -> Option<&str> {
        self.entry.as_deref()
    }

    /// The byte offset in the tar stream of the bad entry's header.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The I/O error underneath, for [`ErrorKind::Io`].
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }

    /// Whether this is an I/O error rather than bad input.
    pub fn is_io(&self) -> bool {
        self.kind == ErrorKind::Io
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match (&self.entry, self.offset) {
            (Some(e), Some(o)) => write!(f, " (entry {e:?}, header at byte {o})")?,
            (Some(e), None) => write!(f, " ({e:?})")?,
            (None, Some(o)) => write!(f, " (at byte {o})")?,
            (None, None) => {}
        }
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<io::Error> for Error {
    /// An [`Error`] carried through an `io::Error` (by [`LayerWriter`]'s
    /// `Write` impl) comes back out as itself.
    ///
    /// [`LayerWriter`]: crate::LayerWriter
    fn from(e: io::Error) -> Error {
        if e.get_ref().is_some_and(|r| r.is::<Error>()) {
            if let Some(inner) = e.into_inner() {
                if let Ok(ours) = inner.downcast::<Error>() {
                    return *ours;
                }
            }
            return Error::new(ErrorKind::Io, "an error was lost");
        }
        Error::io("I/O failed", e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e.kind {
            ErrorKind::Io => match e.source {
                Some(s) => s,
                None => io::Error::other(e),
            },
            _ => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_entry_and_offset() {
        let e = Error::new(ErrorKind::PathEscapesRoot, "the path climbs above the root")
            .with_entry(b"a/../../etc")
            .at(1536);
        assert_eq!(
            e.to_string(),
            "the path climbs above the root (entry \"a/../../etc\", header at byte 1536)"
        );
        assert_eq!(e.kind(), ErrorKind::PathEscapesRoot);
    }

    #[test]
    fn round_trips_through_io_error() {
        let e = Error::new(ErrorKind::Truncated, "cut").with_entry("x");
        let io: io::Error = e.into();
        let back: Error = io.into();
        assert_eq!(back.kind(), ErrorKind::Truncated);
        assert_eq!(back.entry(), Some("x"));
    }
}
