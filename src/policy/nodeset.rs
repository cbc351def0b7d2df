//! [`NodeSet`], a set of node indexes as a bitset: peer computations OR whole sets at once.

/// A set of node indexes below a fixed size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeSet {
    words: Vec<u64>,
}

impl NodeSet {
    /// An empty set for `n` nodes.
    pub fn new(n: usize) -> Self {
        NodeSet { words: vec![0; n.div_ceil(64)] }
    }

    /// Every node of `n`.
    pub fn full(n: usize) -> Self {
        let mut s = NodeSet::new(n);
        for i in 0..n {
            s.insert(i);
        }
        s
    }

    /// Adds a node.
    pub fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    /// Removes a node.
    pub fn remove(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    /// Whether the node is in the set.
    pub fn contains(&self, i: usize) -> bool {
        self.words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Adds every node of `other`.
    pub fn union_with(&mut self, other: &NodeSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// The nodes in both sets.
    pub fn intersection(&self, other: &NodeSet) -> NodeSet {
        NodeSet { words: self.words.iter().zip(&other.words).map(|(a, b)| a & b).collect() }
    }

    /// Whether some node is in both sets.
    pub fn intersects(&self, other: &NodeSet) -> bool {
        self.words.iter().zip(&other.words).any(|(a, b)| a & b != 0)
    }

    /// Whether no node is in the set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The nodes, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut bits = w;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_unions_and_iterates() {
        let mut a = NodeSet::new(130);
        a.insert(0);
        a.insert(129);
        let mut b = NodeSet::new(130);
        b.insert(64);
        a.union_with(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), [0, 64, 129]);
        assert_eq!(a.intersection(&b).iter().collect::<Vec<_>>(), [64]);
        assert!(a.intersects(&b));
        a.remove(64);
        assert!(!a.contains(64) && a.contains(129) && !a.contains(500));
        assert!(!a.intersects(&b) && a.intersection(&b).is_empty());
        assert_eq!(NodeSet::full(3).iter().count(), 3);
        assert!(NodeSet::new(10).is_empty());
    }
}
