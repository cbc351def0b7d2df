//! Address allocation: hands out one IPv4 and one IPv6 address per node from the configured
//! prefixes, sequentially or at random, skipping addresses Tailscale reserves.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::Rng;

use crate::config::Allocation;

/// No address is left in a prefix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no free address left in {0}")]
pub struct Exhausted(pub IpNet);

/// Tailscale's own service address (MagicDNS resolver).
const QUAD100_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);
const QUAD100_V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x53);

/// Whether Tailscale reserves this address: the MagicDNS resolver and the ChromeOS VM range.
fn is_reserved(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let chromeos: Ipv4Net = "100.115.92.0/23".parse().expect("valid");
            a == QUAD100_V4 || a == Ipv4Addr::new(100, 100, 100, 101) || chromeos.contains(&a)
        }
        IpAddr::V6(a) => a == QUAD100_V6,
    }
}

/// The allocator: the prefixes, the policy and the addresses in use.
#[derive(Debug, Clone)]
pub struct Ipam {
    v4: Option<Ipv4Net>,
    v6: Option<Ipv6Net>,
    allocation: Allocation,
    used: HashSet<IpAddr>,
    next_v4: u128,
    next_v6: u128,
}

impl Ipam {
    /// An allocator over the prefixes, with nothing in use.
    pub fn new(v4: Option<Ipv4Net>, v6: Option<Ipv6Net>, allocation: Allocation) -> Self {
        Ipam { v4, v6, allocation, used: HashSet::new(), next_v4: 1, next_v6: 1 }
    }

    /// Records an address as in use (nodes loaded at start-up).
    pub fn mark_used(&mut self, ip: IpAddr) {
        self.used.insert(ip);
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, ip: IpAddr) {
        self.used.remove(&ip);
    }

    /// Allocates one address of each configured family.
    pub fn allocate(&mut self) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), Exhausted> {
        let v4 = self.allocate_v4()?;
        match self.allocate_v6() {
            Ok(v6) => Ok((v4, v6)),
            Err(e) => {
                if let Some(a) = v4 {
                    self.used.remove(&IpAddr::V4(a));
                }
                Err(e)
            }
        }
    }

    /// Which families are configured: (IPv4, IPv6).
    pub fn families(&self) -> (bool, bool) {
        (self.v4.is_some(), self.v6.is_some())
    }

    /// Allocates an IPv4 address; `None` when no IPv4 prefix is configured.
    pub fn allocate_v4(&mut self) -> Result<Option<Ipv4Addr>, Exhausted> {
        let Some(net) = self.v4 else { return Ok(None) };
        let host_count = 1u128 << (32 - net.prefix_len());
        let base = u32::from(net.network()) as u128;
        let mut next = self.next_v4;
        let ip =
            self.pick(IpNet::V4(net), host_count, &mut next, |off| IpAddr::V4(Ipv4Addr::from((base + off) as u32)))?;
        self.next_v4 = next;
        match ip {
            IpAddr::V4(a) => Ok(Some(a)),
            IpAddr::V6(_) => unreachable!("v4 prefix yields v4"),
        }
    }

    /// Allocates an IPv6 address; `None` when no IPv6 prefix is configured.
    pub fn allocate_v6(&mut self) -> Result<Option<Ipv6Addr>, Exhausted> {
        let Some(net) = self.v6 else { return Ok(None) };
        // Only the low 64 bits are scanned; prefixes are at most /64 in practice.
        let bits = (128 - net.prefix_len() as u32).min(64);
        let host_count = 1u128 << bits;
        let base = u128::from(net.network());
        let mut next = self.next_v6;
        let ip = self.pick(IpNet::V6(net), host_count, &mut next, |off| IpAddr::V6(Ipv6Addr::from(base + off)))?;
        self.next_v6 = next;
        match ip {
            IpAddr::V6(a) => Ok(Some(a)),
            IpAddr::V4(_) => unreachable!("v6 prefix yields v6"),
        }
    }

    /// Finds a free host offset in `1..host_count-1` (skipping network and broadcast), starting
    /// at the cursor (sequential) or at random, scanning forward and wrapping once.
    fn pick(
        &mut self,
        net: IpNet,
        host_count: u128,
        cursor: &mut u128,
        at: impl Fn(u128) -> IpAddr,
    ) -> Result<IpAddr, Exhausted> {
        if host_count < 3 {
            return Err(Exhausted(net));
        }
        let usable = host_count - 2;
        let start = match self.allocation {
            Allocation::Sequential => (*cursor).clamp(1, host_count - 2),
            Allocation::Random => rand::thread_rng().gen_range(1..=usable),
        };
        // Bounded scan: at most `usable` candidates, and at most 1<<20 for huge v6 ranges.
        let limit = usable.min(1 << 20);
        for i in 0..limit {
            let off = (start - 1 + i) % usable + 1;
            let ip = at(off);
            if !is_reserved(ip) && !self.used.contains(&ip) {
                self.used.insert(ip);
                *cursor = off + 1;
                return Ok(ip);
            }
        }
        Err(Exhausted(net))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(v4: &str, alloc: Allocation) -> Ipam {
        Ipam::new(Some(v4.parse().unwrap()), Some("fd7a:115c:a1e0::/48".parse().unwrap()), alloc)
    }

    #[test]
    fn sequential_starts_at_first_host() {
        let mut a = ipam("100.64.0.0/10", Allocation::Sequential);
        let (v4, v6) = a.allocate().unwrap();
        assert_eq!(v4.unwrap().to_string(), "100.64.0.1");
        assert_eq!(v6.unwrap().to_string(), "fd7a:115c:a1e0::1");
        assert_eq!(a.allocate().unwrap().0.unwrap().to_string(), "100.64.0.2");
    }

    #[test]
    fn skips_reserved_and_used_and_exhausts() {
        let mut a = ipam("100.100.100.96/29", Allocation::Sequential);
        let mut got = Vec::new();
        while let Ok((Some(v4), _)) = a.allocate() {
            got.push(v4.to_string());
        }
        // .96 network and .103 broadcast are skipped, .100 and .101 are reserved.
        assert_eq!(got, vec!["100.100.100.97", "100.100.100.98", "100.100.100.99", "100.100.100.102"]);
        assert!(a.allocate().is_err());
        a.release("100.100.100.98".parse().unwrap());
        assert_eq!(a.allocate().unwrap().0.unwrap().to_string(), "100.100.100.98");
    }

    #[test]
    fn random_allocation_is_unique_and_in_prefix() {
        let net: Ipv4Net = "100.64.0.0/24".parse().unwrap();
        let mut a = ipam("100.64.0.0/24", Allocation::Random);
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let ip = a.allocate().unwrap().0.unwrap();
            assert!(net.contains(&ip));
            assert!(seen.insert(ip));
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            Allocate,
            /// Releases the `n % live`th address in use.
            Release(usize),
            /// Marks host offset `n` of the IPv4 prefix as used, as start-up does for stored nodes.
            MarkUsed(u32),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![4 => Just(Op::Allocate), 2 => any::<usize>().prop_map(Op::Release), 1 => any::<u32>().prop_map(Op::MarkUsed)]
        }

        /// Small IPv4 prefixes, some over the reserved 100.100.100.100/31 and the ChromeOS
        /// range, and IPv6 prefixes small enough to run out first.
        fn prefixes() -> impl Strategy<Value = (Ipv4Net, Ipv6Net)> {
            let v4 = prop_oneof![
                (26u8..=30).prop_map(|len| Ipv4Net::new(Ipv4Addr::new(100, 100, 100, 64), len).unwrap().trunc()),
                (26u8..=30).prop_map(|len| Ipv4Net::new(Ipv4Addr::new(100, 115, 92, 0), len).unwrap().trunc()),
                (24u8..=30).prop_map(|len| Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), len).unwrap()),
            ];
            let v6 = (120u8..=128).prop_map(|len| Ipv6Net::new(QUAD100_V6, len).unwrap().trunc());
            (v4, v6)
        }

        /// Every address of `net` but its first and last, and those Tailscale reserves.
        fn usable(net: IpNet) -> HashSet<IpAddr> {
            let all: Vec<IpAddr> = match net {
                IpNet::V4(n) => {
                    (u32::from(n.network())..=u32::from(n.broadcast())).map(|a| Ipv4Addr::from(a).into()).collect()
                }
                IpNet::V6(n) => {
                    (u128::from(n.network())..=u128::from(n.broadcast())).map(|a| Ipv6Addr::from(a).into()).collect()
                }
            };
            let inner = all.len().saturating_sub(1);
            all.iter().take(inner).skip(1).copied().filter(|ip| !is_reserved(*ip)).collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            /// Whatever the order of allocations, releases and addresses loaded as used: an
            /// address handed out is in its prefix, neither network, broadcast nor reserved,
            /// and not in use; allocation fails only when a family has no usable address
            /// left, and then takes nothing.
            #[test]
            fn allocations_are_unique_usable_and_fail_only_when_full(
                (v4, v6) in prefixes(),
                random in any::<bool>(),
                ops in proptest::collection::vec(op(), 1..120),
            ) {
                let allocation = if random { Allocation::Random } else { Allocation::Sequential };
                let mut ipam = Ipam::new(Some(v4), Some(v6), allocation);
                let (usable4, usable6) = (usable(IpNet::V4(v4)), usable(IpNet::V6(v6)));
                let mut live: Vec<IpAddr> = Vec::new();
                for op in ops {
                    match op {
                        Op::Allocate => {
                            let free4 = usable4.iter().any(|ip| !live.contains(ip));
                            let free6 = usable6.iter().any(|ip| !live.contains(ip));
                            match ipam.allocate() {
                                Ok((Some(a), Some(b))) => {
                                    for ip in [IpAddr::V4(a), IpAddr::V6(b)] {
                                        let usable = if ip.is_ipv4() { &usable4 } else { &usable6 };
                                        prop_assert!(usable.contains(&ip), "{ip} is not a usable address");
                                        prop_assert!(!live.contains(&ip), "{ip} was handed out twice");
                                        live.push(ip);
                                    }
                                }
                                Ok(other) => prop_assert!(false, "both families are configured: {other:?}"),
                                Err(Exhausted(net)) => {
                                    prop_assert!(!(free4 && free6), "{net} reported full with room in both");
                                    // Nothing was taken: every usable address not live is still free.
                                    let before = live.len();
                                    prop_assert_eq!(ipam.used.len(), before);
                                }
                            }
                        }
                        Op::Release(n) if !live.is_empty() => {
                            let ip = live.swap_remove(n % live.len());
                            ipam.release(ip);
                        }
                        Op::Release(_) => {}
                        Op::MarkUsed(n) => {
                            let offset = n % (1u32 << (32 - v4.prefix_len()));
                            let ip = IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()) + offset));
                            if !live.contains(&ip) {
                                ipam.mark_used(ip);
                                live.push(ip);
                            }
                        }
                    }
                }
            }
        }
    }
}
