//! Narrows a virtual host's routes to those whose path condition can hold for a request path,
//! so a host with hundreds of routes is not scanned route by route.
//!
//! A byte trie over the routes' literal paths: walking the request path through it visits
//! every exact path, string prefix and path-element prefix the request path could match, in
//! one pass. Conditions the trie cannot narrow (any path, case-insensitive paths, regexes
//! without a literal prefix) sit at the root as the empty prefix, which every walk collects.
//! Candidates come back in route
//! order, and the caller still checks each one in full, so the first full match is the same
//! route a plain scan would find.

use smallvec::SmallVec;

/// Below this many routes a plain scan is cheaper than walking the trie.
pub const INDEXED_FROM: usize = 32;

/// What the index needs to know of one route's path condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKey<'a> {
    /// No narrowing possible: a candidate for every path.
    Always,
    /// The path is exactly this.
    Exact(&'a str),
    /// The path starts with this (Istio `prefix`, a regex's literal prefix).
    Prefix(&'a str),
    /// The path is this or continues with '/' (Gateway API `PathPrefix`, trailing '/' trimmed).
    Segment(&'a str),
}

/// Route indices (positions in the virtual host's route list), ascending.
pub type Candidates = SmallVec<[u32; 16]>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Segment,
}

#[derive(Default)]
struct Node {
    /// (next byte, node), sorted by byte.
    children: Vec<(u8, u32)>,
    /// Routes whose key ends at this node.
    routes: Vec<(Kind, u32)>,
}

pub struct PathIndex {
    /// nodes[0] is the root (the empty string).
    nodes: Vec<Node>,
}

impl PathIndex {
    /// An index over routes given in order: the i-th key belongs to route i.
    pub fn build<'a>(keys: impl IntoIterator<Item = PathKey<'a>>) -> PathIndex {
        let mut index = PathIndex {
            nodes: vec![Node::default()],
        };
        for (route, key) in keys.into_iter().enumerate() {
            let route = u32::try_from(route).expect("fewer than 2^32 routes per host");
            let (kind, path) = match key {
                PathKey::Always => (Kind::Prefix, ""),
                PathKey::Exact(p) => (Kind::Exact, p),
                PathKey::Prefix(p) => (Kind::Prefix, p),
                PathKey::Segment(p) => (Kind::Segment, p),
            };
            let node = index.insert(path.as_bytes());
            index.nodes[node].routes.push((kind, route));
        }
        index
    }

    /// The node for `key`, created with any missing nodes on the way.
    fn insert(&mut self, key: &[u8]) -> usize {
        let mut node = 0;
        for &byte in key {
            node = match self.child(node, byte) {
                Some(child) => child,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(Node::default());
                    let children = &mut self.nodes[node].children;
                    let at = children.partition_point(|(b, _)| *b < byte);
                    children.insert(at, (byte, child as u32));
                    child
                }
            };
        }
        node
    }

    fn child(&self, node: usize, byte: u8) -> Option<usize> {
        let children = &self.nodes[node].children;
        children
            .binary_search_by_key(&byte, |(b, _)| *b)
            .ok()
            .map(|at| children[at].1 as usize)
    }

    /// The routes whose path condition may hold for `path`, ascending.
    pub fn candidates(&self, path: &str) -> Candidates {
        let mut found = Candidates::new();
        let bytes = path.as_bytes();
        let mut node = 0;
        for depth in 0..=bytes.len() {
            let at_end = depth == bytes.len();
            let at_element_end = at_end || bytes[depth] == b'/';
            for &(kind, route) in &self.nodes[node].routes {
                let holds = match kind {
                    Kind::Prefix => true,
                    Kind::Segment => at_element_end,
                    Kind::Exact => at_end,
                };
                if holds {
                    found.push(route);
                }
            }
            let Some(next) = bytes.get(depth).and_then(|b| self.child(node, *b)) else {
                break;
            };
            node = next;
        }
        found.sort_unstable();
        found
    }
}

/// The text every match of the (unanchored) `pattern` starts with, "" when unsure: the leading
/// characters before any regex syntax, less the last one when a quantifier makes it optional.
/// Any alternation gives "" (the literal might belong to one branch only).
pub fn regex_literal_prefix(pattern: &str) -> &str {
    if pattern.contains('|') {
        return "";
    }
    let end = pattern
        .find(|c: char| "\\.+*?()[]{}^$#".contains(c) || c.is_whitespace())
        .unwrap_or(pattern.len());
    let literal = &pattern[..end];
    match pattern[end..].chars().next() {
        Some('?' | '*' | '{') => literal
            .char_indices()
            .last()
            .map_or("", |(last, _)| &literal[..last]),
        _ => literal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(keys: &[PathKey<'_>], path: &str) -> Vec<u32> {
        PathIndex::build(keys.iter().copied())
            .candidates(path)
            .to_vec()
    }

    #[test]
    fn exact_paths_match_only_whole() {
        let keys = [PathKey::Exact("/a"), PathKey::Exact("/a/b")];
        assert_eq!(candidates(&keys, "/a"), [0]);
        assert_eq!(candidates(&keys, "/a/b"), [1]);
        assert!(candidates(&keys, "/a/").is_empty());
        assert!(candidates(&keys, "/").is_empty());
    }

    #[test]
    fn segment_prefixes_respect_path_elements() {
        let keys = [
            PathKey::Segment("/foo"),
            PathKey::Segment(""),
            PathKey::Segment("/foo/bar"),
        ];
        assert_eq!(candidates(&keys, "/foo"), [0, 1]);
        assert_eq!(candidates(&keys, "/foo/"), [0, 1]);
        assert_eq!(candidates(&keys, "/foo/bar/baz"), [0, 1, 2]);
        assert_eq!(candidates(&keys, "/foobar"), [1]);
        assert!(
            candidates(&keys, "*").is_empty(),
            "\"\" covers paths, not '*'"
        );
    }

    #[test]
    fn string_prefixes_match_anywhere_in_an_element() {
        let keys = [PathKey::Prefix("/p1"), PathKey::Prefix("/p10")];
        assert_eq!(candidates(&keys, "/p1"), [0]);
        assert_eq!(candidates(&keys, "/p100/x"), [0, 1]);
        assert!(candidates(&keys, "/p2").is_empty());
    }

    #[test]
    fn unindexed_routes_are_always_candidates_in_route_order() {
        let keys = [
            PathKey::Exact("/x"),
            PathKey::Always,
            PathKey::Prefix("/"),
            PathKey::Always,
        ];
        assert_eq!(candidates(&keys, "/x"), [0, 1, 2, 3]);
        assert_eq!(candidates(&keys, "nothing"), [1, 3]);
    }

    #[test]
    fn regex_literal_prefixes_are_conservative() {
        let cases = [
            ("/api/v1/items/[0-9]+", "/api/v1/items/"),
            ("/users/\\d+", "/users/"),
            ("/static/.*", "/static/"),
            ("/colou?r", "/colo"),
            ("/ab*", "/a"),
            ("/ab{0,2}", "/a"),
            ("/ab+", "/ab"),
            ("/exact", "/exact"),
            ("/a|/b", ""),
            ("/(a|b)/c", ""),
            ("(?i)/admin", ""),
            (".*", ""),
            ("/caf\u{e9}?", "/caf"),
        ];
        for (pattern, literal) in cases {
            assert_eq!(regex_literal_prefix(pattern), literal, "{pattern}");
        }
    }
}
