//! Mark: everything reachable from a set of roots, over any graph.
//!
//! The walk knows nothing of blobs or manifests: it takes the roots and a
//! function that names a node's children, and returns every node it
//! reached, each expanded once (the gray set is a stack, the black set
//! the result). A failing edge function fails the mark, so a prune never
//! sweeps on a partial picture.

use std::collections::HashSet;
use std::hash::Hash;

/// Every node reachable from `roots` through `edges`, roots included.
///
/// # Errors
///
/// The first error `edges` returns.
pub fn mark<'a, N, C, E, Err>(
    roots: impl IntoIterator<Item = &'a N>,
    mut edges: E,
) -> Result<HashSet<&'a N>, Err>
where
    N: Eq + Hash + ?Sized + 'a,
    C: IntoIterator<Item = &'a N>,
    E: FnMut(&'a N) -> Result<C, Err>,
{
    let mut black: HashSet<&'a N> = HashSet::new();
    let mut gray: Vec<&'a N> = Vec::new();
    for root in roots {
        if black.insert(root) {
            gray.push(root);
        }
    }
    while let Some(node) = gray.pop() {
        for child in edges(node)? {
            if black.insert(child) {
                gray.push(child);
            }
        }
    }
    Ok(black)
}

#[cfg(test)]
mod tests {
    use super::mark;
    use std::collections::HashMap;

    #[test]
    fn reaches_through_chains_and_cycles_once() {
        let edges: HashMap<u32, Vec<u32>> =
            [(1, vec![2, 3]), (2, vec![4]), (4, vec![1]), (5, vec![6])].into();
        let mut expanded = Vec::new();
        let marked = mark([1u32].iter(), |n| -> Result<_, ()> {
            expanded.push(*n);
            Ok(edges.get(n).into_iter().flatten())
        })
        .unwrap();
        let mut got: Vec<u32> = marked.into_iter().copied().collect();
        got.sort();
        assert_eq!(got, [1, 2, 3, 4]);
        expanded.sort();
        assert_eq!(expanded, [1, 2, 3, 4], "each node is expanded once");
    }

    #[test]
    fn an_edge_error_fails_the_mark() {
        let r = mark([1u32, 2].iter(), |n| {
            if *n == 2 {
                Err("unreadable")
            } else {
                Ok(std::iter::empty())
            }
        });
        assert_eq!(r, Err("unreadable"));
    }
}
