//! Address arithmetic for the policy engine: inclusive address ranges, normalized sets of
//! them, and [`Atom`], one address item as a filter rule writes it (`100.64.0.1`,
//! `10.0.0.0/8` or `100.64.0.0-100.115.91.255`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An inclusive range of addresses of one family, as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    /// True for IPv6.
    pub v6: bool,
    pub start: u128,
    pub end: u128,
}

fn addr_bits(addr: IpAddr) -> (bool, u128) {
    match addr {
        IpAddr::V4(a) => (false, u32::from(a) as u128),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

fn to_addr(v6: bool, bits: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(bits))
    } else {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    }
}

fn family_width(v6: bool) -> u32 {
    if v6 {
        128
    } else {
        32
    }
}

/// The last address of a block of `2^size_log2` addresses starting at `start`.
fn block_end(start: u128, size_log2: u32) -> u128 {
    if size_log2 >= 128 {
        u128::MAX
    } else {
        start + ((1u128 << size_log2) - 1)
    }
}

impl IpRange {
    /// The range holding one address.
    pub fn addr(addr: IpAddr) -> Self {
        let (v6, bits) = addr_bits(addr);
        IpRange { v6, start: bits, end: bits }
    }

    /// The range a prefix covers.
    pub fn net(net: IpNet) -> Self {
        let (v6, start) = addr_bits(net.network());
        let host_bits = family_width(v6) - u32::from(net.prefix_len());
        IpRange { v6, start, end: block_end(start, host_bits) }
    }

    /// The range between two addresses of one family, or `None` when they differ in family
    /// or are out of order.
    pub fn between(first: IpAddr, last: IpAddr) -> Option<Self> {
        let (v6a, a) = addr_bits(first);
        let (v6b, b) = addr_bits(last);
        (v6a == v6b && a <= b).then_some(IpRange { v6: v6a, start: a, end: b })
    }

    /// The first address.
    pub fn first(&self) -> IpAddr {
        to_addr(self.v6, self.start)
    }

    /// The last address.
    pub fn last(&self) -> IpAddr {
        to_addr(self.v6, self.end)
    }

    /// Whether the address is inside.
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        let (v6, bits) = addr_bits(addr);
        v6 == self.v6 && self.start <= bits && bits <= self.end
    }

    /// Whether `other` is entirely inside.
    pub fn contains(&self, other: &IpRange) -> bool {
        self.v6 == other.v6 && self.start <= other.start && other.end <= self.end
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.v6 == other.v6 && self.start <= other.end && other.start <= self.end
    }

    /// The range as the smallest list of prefixes that covers exactly it.
    pub fn prefixes(&self) -> Vec<IpNet> {
        let width = family_width(self.v6);
        let mut out = Vec::new();
        let mut start = self.start;
        loop {
            let mut size = start.trailing_zeros().min(width);
            while block_end(start, size) > self.end {
                size -= 1;
            }
            let len = (width - size) as u8;
            out.push(match to_addr(self.v6, start) {
                IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, len).expect("length within 32")),
                IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, len).expect("length within 128")),
            });
            let end = block_end(start, size);
            if end >= self.end {
                return out;
            }
            start = end + 1;
        }
    }

    /// The prefix equal to this range, if there is one.
    pub fn as_prefix(&self) -> Option<IpNet> {
        let p = self.prefixes();
        (p.len() == 1).then(|| p[0])
    }
}

/// A set of addresses of both families, kept as sorted, disjoint, non-adjacent ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    ranges: Vec<IpRange>,
}

impl IpSet {
    /// The set covering all the given ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = IpRange>) -> Self {
        let mut all: Vec<IpRange> = ranges.into_iter().collect();
        if !all.is_sorted() {
            sort_ranges(&mut all);
        }
        // Each range joins the one kept before it when they touch.
        all.dedup_by(|r, last| {
            let joins = last.v6 == r.v6 && r.start <= last.end.saturating_add(1);
            if joins {
                last.end = last.end.max(r.end);
            }
            joins
        });
        IpSet { ranges: all }
    }

    /// The addresses in either set.
    pub fn union(&self, other: &IpSet) -> IpSet {
        match (self.is_empty(), other.is_empty()) {
            (_, true) => self.clone(),
            (true, false) => other.clone(),
            (false, false) => IpSet::from_ranges(merge_sorted(&self.ranges, &other.ranges, |a, b| a <= b)),
        }
    }

    /// Every IPv4 and IPv6 address.
    pub fn everything() -> Self {
        IpSet::from_ranges([
            IpRange { v6: false, start: 0, end: u32::MAX as u128 },
            IpRange { v6: true, start: 0, end: u128::MAX },
        ])
    }

    /// Whether the set has no address.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The normalized ranges, IPv4 first.
    pub fn ranges(&self) -> &[IpRange] {
        &self.ranges
    }

    /// Whether the address is in the set.
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        let probe = IpRange::addr(addr);
        self.find(&probe).is_some_and(|r| r.contains(&probe))
    }

    /// Whether every address of `range` is in the set.
    pub fn contains_range(&self, range: &IpRange) -> bool {
        self.find(range).is_some_and(|r| r.contains(range))
    }

    /// Whether some address of `range` is in the set.
    pub fn overlaps_range(&self, range: &IpRange) -> bool {
        let i = self.ranges.partition_point(|r| (r.v6, r.end) < (range.v6, range.start));
        self.ranges.get(i).is_some_and(|r| r.overlaps(range))
    }

    /// The addresses of `self` that are not in `other`.
    pub fn subtract(&self, other: &IpSet) -> IpSet {
        let mut out = Vec::new();
        for r in &self.ranges {
            let mut start = r.start;
            let mut done = false;
            for cut in other.ranges.iter().filter(|c| c.overlaps(r)) {
                if cut.start > start {
                    out.push(IpRange { v6: r.v6, start, end: cut.start - 1 });
                }
                if cut.end >= r.end {
                    done = true;
                    break;
                }
                start = start.max(cut.end + 1);
            }
            if !done {
                out.push(IpRange { v6: r.v6, start, end: r.end });
            }
        }
        IpSet { ranges: out }
    }

    /// The range of the set that would hold `probe`'s start.
    fn find(&self, probe: &IpRange) -> Option<&IpRange> {
        let i = self.ranges.partition_point(|r| (r.v6, r.end) < (probe.v6, probe.start));
        self.ranges.get(i)
    }
}

/// Sorts ranges as `Ord` does (IPv4 first, then by start and end), IPv4 ones packed into one
/// integer each: sets of node addresses run to thousands of ranges.
fn sort_ranges(ranges: &mut Vec<IpRange>) {
    let mut v4: Vec<u64> = Vec::with_capacity(ranges.len());
    let mut v6: Vec<(u128, u128)> = Vec::new();
    for r in ranges.iter() {
        if r.v6 {
            v6.push((r.start, r.end));
        } else {
            v4.push(((r.start as u64) << 32) | r.end as u64);
        }
    }
    v4.sort_unstable();
    v6.sort_unstable();
    ranges.clear();
    ranges.extend(v4.into_iter().map(|k| IpRange {
        v6: false,
        start: (k >> 32).into(),
        end: (k & 0xffff_ffff).into(),
    }));
    ranges.extend(v6.into_iter().map(|(start, end)| IpRange { v6: true, start, end }));
}

/// Two sorted lists as one sorted list; `le` orders two items.
pub fn merge_sorted<T: Clone>(a: &[T], b: &[T], le: impl Fn(&T, &T) -> bool) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if le(&a[i], &b[j]) {
            out.push(a[i].clone());
            i += 1;
        } else {
            out.push(b[j].clone());
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// One address item of a rule, written the way Tailscale's control plane writes it: a single
/// address bare, a prefix in CIDR form, anything else as `first-last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Atom {
    /// A prefix, written bare when it is a single address.
    Net(IpNet),
    /// A range that is always written `first-last` (the internet and wildcard ranges).
    Range(IpRange),
}

impl Atom {
    /// The single address.
    pub fn addr(addr: IpAddr) -> Self {
        Atom::Net(IpNet::from(addr))
    }

    /// The addresses it covers.
    pub fn range(&self) -> IpRange {
        match self {
            Atom::Net(n) => IpRange::net(*n),
            Atom::Range(r) => *r,
        }
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Net(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "{}", n.addr()),
            Atom::Net(n) => write!(f, "{}", n.trunc()),
            Atom::Range(r) if r.start == r.end => write!(f, "{}", r.first()),
            Atom::Range(r) => write!(f, "{}-{}", r.first(), r.last()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn set(nets: &[&str]) -> IpSet {
        IpSet::from_ranges(nets.iter().map(|s| IpRange::net(net(s))))
    }

    #[test]
    fn ranges_decompose_into_prefixes() {
        let r = IpRange::between("100.64.0.0".parse().unwrap(), "100.115.91.255".parse().unwrap()).unwrap();
        let p: Vec<String> = r.prefixes().iter().map(ToString::to_string).collect();
        assert_eq!(
            p,
            [
                "100.64.0.0/11",
                "100.96.0.0/12",
                "100.112.0.0/15",
                "100.114.0.0/16",
                "100.115.0.0/18",
                "100.115.64.0/20",
                "100.115.80.0/21",
                "100.115.88.0/22"
            ]
        );
        assert_eq!(IpRange::net(net("::/0")).prefixes(), [net("::/0")]);
        assert_eq!(IpRange::net(net("10.0.0.0/8")).as_prefix(), Some(net("10.0.0.0/8")));
    }

    #[test]
    fn sets_merge_subtract_and_answer_membership() {
        let cgnat = set(&["100.64.0.0/10"]).subtract(&set(&["100.115.92.0/23"]));
        assert_eq!(cgnat.ranges().len(), 2);
        assert!(cgnat.contains_addr("100.64.0.1".parse().unwrap()));
        assert!(!cgnat.contains_addr("100.115.92.7".parse().unwrap()));
        assert!(cgnat.overlaps_range(&IpRange::net(net("100.115.0.0/16"))));
        assert!(!cgnat.contains_range(&IpRange::net(net("100.115.0.0/16"))));
        let joined = set(&["10.0.0.0/9", "10.128.0.0/9", "fd00::/8"]);
        assert_eq!(joined.ranges().len(), 2);
        assert!(joined.contains_range(&IpRange::net(net("10.0.0.0/8"))));
        assert!(!joined.contains_addr("11.0.0.0".parse().unwrap()));
        assert!(IpSet::everything().subtract(&IpSet::everything()).is_empty());
        let both = set(&["10.0.0.0/9", "fd00::/8"]).union(&set(&["10.128.0.0/9", "192.168.0.0/16"]));
        assert_eq!(both, set(&["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]));
        assert_eq!(merge_sorted(&[1, 4, 6], &[2, 4, 9], |a, b| a <= b), [1, 2, 4, 4, 6, 9]);
        let mut ranges: Vec<IpRange> = ["fd00::/8", "10.0.0.0/9", "10.0.0.0/8", "::/0", "0.0.0.0/0"]
            .iter()
            .map(|s| IpRange::net(net(s)))
            .collect();
        let mut expected = ranges.clone();
        expected.sort();
        sort_ranges(&mut ranges);
        assert_eq!(ranges, expected);
    }

    #[test]
    fn atoms_render_like_the_control_plane() {
        assert_eq!(Atom::addr("100.64.0.1".parse().unwrap()).to_string(), "100.64.0.1");
        assert_eq!(Atom::Net(net("10.33.0.100/32")).to_string(), "10.33.0.100");
        assert_eq!(Atom::Net(net("fd7a:115c:a1e0::/48")).to_string(), "fd7a:115c:a1e0::/48");
        let r = IpRange::net(net("2000::/3"));
        assert_eq!(Atom::Range(r).to_string(), "2000::-3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    }
}
