//! What a process remembers about one cache home, shared by every backend
//! of that home: the parsed `index.json` and the census of its blobs.
//!
//! Each view is stamped with the version of the files it was read from
//! (the index by inode, size and times, the blob listing by the
//! directory's stamp), so a backend made later, or one of another lock
//! timeout, can use what an earlier one read: it checks the stamps as
//! the first one would. A caller that makes a backend per request would
//! otherwise hold one copy of every view per backend alive, and parse
//! `index.json` again for each.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::gc::census::CensusCache;
use crate::store::catalog::CatalogCache;

/// The views of one home.
#[derive(Debug, Default)]
pub(super) struct Views {
    pub catalog: CatalogCache,
    pub census: CensusCache,
}

/// The views of `home` (an absolute path), shared with every live backend
/// of the same path; made afresh once none is left.
pub(super) fn of(home: &Path) -> Arc<Views> {
    static HOMES: OnceLock<Mutex<HashMap<PathBuf, Weak<Views>>>> = OnceLock::new();
    let mut homes = HOMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(views) = homes.get(home).and_then(Weak::upgrade) {
        return views;
    }
    // Forget the homes no backend uses any more, so a process that makes
    // backends for many temporary homes does not grow with them.
    homes.retain(|_, w| w.strong_count() > 0);
    let views = Arc::new(Views::default());
    homes.insert(home.to_path_buf(), Arc::downgrade(&views));
    views
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_home_shares_its_views_while_a_backend_holds_them() {
        let a = of(Path::new("/nonexistent/views-test/a"));
        let again = of(Path::new("/nonexistent/views-test/a"));
        assert!(Arc::ptr_eq(&a, &again));
        let other = of(Path::new("/nonexistent/views-test/b"));
        assert!(!Arc::ptr_eq(&a, &other));
        let weak = Arc::downgrade(&a);
        drop((a, again));
        assert!(
            weak.upgrade().is_none(),
            "the views go with the last backend"
        );
        let fresh = of(Path::new("/nonexistent/views-test/a"));
        assert_eq!(Arc::strong_count(&fresh), 1);
    }
}
