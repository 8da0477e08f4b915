//! Address leases: the persistent bindings and the in-memory pool around them.
//!
//! [`Bindings`] is the state the lease journal records: which client holds
//! which address until when, and which addresses are quarantined after a
//! DECLINE. It changes only through [`Bindings::apply`] of a [`Record`], the
//! same function the journal replays, so memory and disk cannot disagree.
//! An address maps to at most one client and a client to at most one
//! address, by construction of the two maps.
//!
//! [`Pool`] adds what is not persisted: the configured range and
//! reservations, and OFFERs, which hold an address for a short time (RFC 2131
//! section 4.3.1 lets the server reserve it; an OFFER is a promise, not a
//! grant, so a crash may forget it). The allocator prefers, in order: the
//! client's reservation, its current or previous address, its offered
//! address, the address it asks for, a never-used address, and last the
//! address whose lease expired longest ago (RFC 2131 sections 4.3.1 and
//! 4.4.1 prefer reuse for the same client).
//!
//! Times are Unix seconds passed in by the caller. No ping before offering
//! (RFC 2131 says SHOULD; it costs every first boot a delay).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;

use super::config::Mac;

/// Seconds since the Unix epoch: wall-clock, because leases outlive restarts.
pub type Secs = u64;

/// How a client is known (RFC 2131 section 4.2): option 61, or htype+chaddr.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub Vec<u8>);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({self})")
    }
}

/// One address bound to one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub client: ClientId,
    /// 0 after a RELEASE: the binding is kept so the client gets the same
    /// address back, but the address is free for others.
    pub expires: Secs,
}

/// One change to the bindings; what the journal stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A lease granted or extended (an ACK follows only once this is durable).
    Grant {
        ip: Ipv4Addr,
        client: ClientId,
        expires: Secs,
    },
    /// The client gave the address back (DHCPRELEASE).
    Release { ip: Ipv4Addr, client: ClientId },
    /// The client found the address in use (DHCPDECLINE); quarantined until.
    Decline { ip: Ipv4Addr, until: Secs },
}

/// The persistent lease state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings {
    leases: BTreeMap<Ipv4Addr, Lease>,
    by_client: HashMap<ClientId, Ipv4Addr>,
    quarantine: BTreeMap<Ipv4Addr, Secs>,
}

impl Bindings {
    /// Applies one record, in journal order.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Grant {
                ip,
                client,
                expires,
            } => {
                if let Some(old) = self.by_client.get(client).copied() {
                    if old != *ip {
                        self.leases.remove(&old);
                    }
                }
                self.unbind(*ip);
                self.quarantine.remove(ip);
                self.by_client.insert(client.clone(), *ip);
                let lease = Lease {
                    client: client.clone(),
                    expires: *expires,
                };
                self.leases.insert(*ip, lease);
            }
            Record::Release { ip, client } => {
                if let Some(lease) = self.leases.get_mut(ip) {
                    if &lease.client == client {
                        lease.expires = 0;
                    }
                }
            }
            Record::Decline { ip, until } => {
                self.unbind(*ip);
                self.quarantine.insert(*ip, *until);
            }
        }
    }

    fn unbind(&mut self, ip: Ipv4Addr) {
        if let Some(old) = self.leases.remove(&ip) {
            self.by_client.remove(&old.client);
        }
    }

    pub fn lease(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.leases.get(&ip)
    }

    /// The address bound to `client`, expired or not.
    pub fn address_of(&self, client: &ClientId) -> Option<Ipv4Addr> {
        self.by_client.get(client).copied()
    }

    pub fn quarantined(&self, ip: Ipv4Addr, now: Secs) -> bool {
        self.quarantine.get(&ip).is_some_and(|&until| until > now)
    }

    /// Leases whose time has not run out.
    pub fn active(&self, now: Secs) -> impl Iterator<Item = (Ipv4Addr, &Lease)> {
        self.leases
            .iter()
            .filter(move |(_, l)| l.expires > now)
            .map(|(ip, l)| (*ip, l))
    }

    /// The records that rebuild this state, for a compacted journal. Expired
    /// quarantines are left out; bindings are kept (at most one per address).
    pub fn snapshot(&self, now: Secs) -> Vec<Record> {
        let grants = self.leases.iter().map(|(ip, l)| Record::Grant {
            ip: *ip,
            client: l.client.clone(),
            expires: l.expires,
        });
        let declines = self
            .quarantine
            .iter()
            .filter(|(_, &until)| until > now)
            .map(|(ip, &until)| Record::Decline { ip: *ip, until });
        grants.chain(declines).collect()
    }

    /// Number of bindings, expired or not.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[derive(Debug, Clone)]
struct Offer {
    client: ClientId,
    expires: Secs,
}

/// What the pool says about giving `ip` to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Grant it.
    Grant,
    /// Another client holds it, it is quarantined, reserved for someone
    /// else, or outside what this server hands out: NAK.
    Refuse,
    /// The client has a reservation for another address: NAK.
    WrongAddress,
}

/// The address pool of one subnet.
#[derive(Debug, Clone)]
pub struct Pool {
    first: u32,
    last: u32,
    excluded: HashSet<Ipv4Addr>,
    reserved: HashMap<Mac, Ipv4Addr>,
    reserved_ips: HashSet<Ipv4Addr>,
    bindings: Bindings,
    offers: HashMap<Ipv4Addr, Offer>,
    offer_of: HashMap<ClientId, Ipv4Addr>,
    /// Where the next search for a never-bound address starts.
    cursor: u64,
}

impl Pool {
    /// A pool over `first..=last` (empty when `first > last`), never handing
    /// out `excluded` (network, broadcast, router, server addresses).
    pub fn new(
        first: Ipv4Addr,
        last: Ipv4Addr,
        excluded: impl IntoIterator<Item = Ipv4Addr>,
        reservations: impl IntoIterator<Item = (Mac, Ipv4Addr)>,
        bindings: Bindings,
    ) -> Pool {
        let reserved: HashMap<Mac, Ipv4Addr> = reservations.into_iter().collect();
        Pool {
            first: first.into(),
            last: last.into(),
            excluded: excluded.into_iter().collect(),
            reserved_ips: reserved.values().copied().collect(),
            reserved,
            bindings,
            offers: HashMap::new(),
            offer_of: HashMap::new(),
            cursor: 0,
        }
    }

    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// Replaces range, exclusions and reservations (a reload), keeping
    /// bindings and offers.
    pub fn reconfigure(mut self, new: Pool) -> Pool {
        self.first = new.first;
        self.last = new.last;
        self.excluded = new.excluded;
        self.reserved = new.reserved;
        self.reserved_ips = new.reserved_ips;
        self
    }

    /// Keeps `ip` out of the pool from now on (the server's own address).
    pub fn exclude(&mut self, ip: Ipv4Addr) {
        self.excluded.insert(ip);
    }

    pub fn reservation(&self, mac: Option<Mac>) -> Option<Ipv4Addr> {
        mac.and_then(|m| self.reserved.get(&m).copied())
    }

    fn usable_reservation(
        &self,
        client: &ClientId,
        mac: Option<Mac>,
        now: Secs,
    ) -> Option<Ipv4Addr> {
        self.reservation(mac)
            .filter(|&r| self.free_for(r, client, now))
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip)) && !self.excluded.contains(&ip)
    }

    /// Whether `ip` may go to `client` now, ignoring the reservation rules.
    fn free_for(&self, ip: Ipv4Addr, client: &ClientId, now: Secs) -> bool {
        let leased_to_other = self
            .bindings
            .lease(ip)
            .is_some_and(|l| &l.client != client && l.expires > now);
        let offered_to_other = self
            .offers
            .get(&ip)
            .is_some_and(|o| &o.client != client && o.expires > now);
        !leased_to_other && !offered_to_other && !self.bindings.quarantined(ip, now)
    }

    /// Whether `client` (with hardware address `mac`) may have `ip`.
    pub fn verdict(&self, client: &ClientId, mac: Option<Mac>, ip: Ipv4Addr, now: Secs) -> Verdict {
        // A reserved address still held by another client's unexpired lease
        // (the reservation was added later) or quarantined after a DECLINE
        // is not handed out; until it frees up the host is served like any
        // other client, so one address never has two holders.
        match self.usable_reservation(client, mac, now) {
            Some(r) if r == ip => return Verdict::Grant,
            Some(_) => return Verdict::WrongAddress,
            None if self.reservation(mac) == Some(ip) => return Verdict::Refuse,
            None => {}
        }
        if self.reserved_ips.contains(&ip) || !self.in_range(ip) || !self.free_for(ip, client, now)
        {
            return Verdict::Refuse;
        }
        Verdict::Grant
    }

    /// Picks an address for a DISCOVER and holds it until `hold_until`.
    pub fn offer(
        &mut self,
        client: &ClientId,
        mac: Option<Mac>,
        requested: Option<Ipv4Addr>,
        now: Secs,
        hold_until: Secs,
    ) -> Option<Ipv4Addr> {
        let ip = self.choose(client, mac, requested, now)?;
        if let Some(old) = self.offer_of.insert(client.clone(), ip) {
            self.offers.remove(&old);
        }
        let offer = Offer {
            client: client.clone(),
            expires: hold_until,
        };
        if let Some(displaced) = self.offers.insert(ip, offer) {
            // Only an expired offer can be displaced (free_for checked it).
            if &displaced.client != client {
                self.offer_of.remove(&displaced.client);
            }
        }
        Some(ip)
    }

    fn choose(
        &mut self,
        client: &ClientId,
        mac: Option<Mac>,
        requested: Option<Ipv4Addr>,
        now: Secs,
    ) -> Option<Ipv4Addr> {
        if let Some(r) = self.usable_reservation(client, mac, now) {
            return Some(r);
        }
        let known = [
            self.bindings.address_of(client),
            self.offer_of.get(client).copied(),
            requested,
        ];
        if let Some(ip) = known
            .into_iter()
            .flatten()
            .find(|&ip| self.verdict(client, mac, ip, now) == Verdict::Grant)
        {
            return Some(ip);
        }
        self.scan(client, now)
    }

    /// A never-bound free address, else the one expired longest ago.
    ///
    /// The search for a never-bound address starts where the last one
    /// ended (next fit), so filling a pool costs O(1) per client rather
    /// than rescanning the bound part every time.
    fn scan(&mut self, client: &ClientId, now: Secs) -> Option<Ipv4Addr> {
        let size = u64::from(self.last.checked_sub(self.first)?) + 1;
        let start = self.cursor % size;
        let mut oldest: Option<(Secs, Ipv4Addr)> = None;
        for i in 0..size {
            let offset = (start + i) % size;
            // first + offset <= last, so the cast cannot wrap.
            let ip = Ipv4Addr::from(self.first + offset as u32);
            if self.reserved_ips.contains(&ip)
                || self.excluded.contains(&ip)
                || !self.free_for(ip, client, now)
            {
                continue;
            }
            match self.bindings.lease(ip) {
                None => {
                    self.cursor = offset + 1;
                    return Some(ip);
                }
                Some(l) if oldest.is_none_or(|(t, _)| l.expires < t) => {
                    oldest = Some((l.expires, ip))
                }
                Some(_) => {}
            }
        }
        oldest.map(|(_, ip)| ip)
    }

    /// Binds `ip` to `client` until `expires`; the record must be made
    /// durable before the ACK leaves.
    pub fn grant(&mut self, client: &ClientId, ip: Ipv4Addr, expires: Secs) -> Record {
        if let Some(offered) = self.offer_of.remove(client) {
            self.offers.remove(&offered);
        }
        if let Some(o) = self.offers.remove(&ip) {
            self.offer_of.remove(&o.client);
        }
        let record = Record::Grant {
            ip,
            client: client.clone(),
            expires,
        };
        self.bindings.apply(&record);
        record
    }

    /// Drops the client's pending offer (it chose another server).
    pub fn withdraw_offer(&mut self, client: &ClientId) {
        if let Some(ip) = self.offer_of.remove(client) {
            self.offers.remove(&ip);
        }
    }

    /// DHCPRELEASE of `ip` by `client`; ignored unless it holds `ip`.
    pub fn release(&mut self, client: &ClientId, ip: Ipv4Addr) -> Option<Record> {
        let lease = self.bindings.lease(ip)?;
        if &lease.client != client || lease.expires == 0 {
            return None;
        }
        let record = Record::Release {
            ip,
            client: client.clone(),
        };
        self.bindings.apply(&record);
        Some(record)
    }

    /// DHCPDECLINE of `ip` by `client`; ignored unless `ip` was offered or
    /// leased to it, so a stranger cannot take addresses out of the pool.
    pub fn decline(&mut self, client: &ClientId, ip: Ipv4Addr, until: Secs) -> Option<Record> {
        let leased = self.bindings.lease(ip).is_some_and(|l| &l.client == client);
        let offered = self.offer_of.get(client) == Some(&ip);
        if !leased && !offered {
            return None;
        }
        self.withdraw_offer(client);
        let record = Record::Decline { ip, until };
        self.bindings.apply(&record);
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, last)
    }

    fn client(n: u8) -> ClientId {
        ClientId(vec![1, 0x52, 0x54, 0, 0, 0, n])
    }

    fn pool(first: u8, last: u8) -> Pool {
        let mac = Mac([0x52, 0x54, 0, 0, 0, 0x10]);
        Pool::new(
            ip(first),
            ip(last),
            [ip(1)],
            [(mac, ip(10))],
            Bindings::default(),
        )
    }

    #[test]
    fn offers_hold_addresses_until_they_expire() {
        let mut p = pool(100, 101);
        let a = p.offer(&client(1), None, None, 0, 30).unwrap();
        let b = p.offer(&client(2), None, None, 0, 30).unwrap();
        assert_ne!(a, b);
        assert_eq!(p.offer(&client(3), None, None, 10, 40), None);
        // After the first offer lapses the third client gets it.
        assert_eq!(p.offer(&client(3), None, None, 31, 61), Some(a));
        // The first client, asking again, does not get what client 3 holds.
        assert_eq!(p.verdict(&client(1), None, a, 31), Verdict::Refuse);
    }

    #[test]
    fn same_client_gets_same_address_back() {
        let mut p = pool(100, 199);
        let a = p.offer(&client(1), None, None, 0, 30).unwrap();
        p.grant(&client(1), a, 3600);
        assert_eq!(p.offer(&client(1), None, None, 5000, 5030), Some(a));
    }

    #[test]
    fn requested_address_is_honoured_when_free() {
        let mut p = pool(100, 199);
        assert_eq!(
            p.offer(&client(1), None, Some(ip(150)), 0, 30),
            Some(ip(150))
        );
        assert_eq!(
            p.offer(&client(2), None, Some(ip(150)), 0, 30)
                .map(|a| a != ip(150)),
            Some(true)
        );
        assert_ne!(
            p.offer(&client(3), None, Some(ip(1)), 0, 30),
            Some(ip(1)),
            "excluded"
        );
    }

    #[test]
    fn reservations_are_kept_for_their_host() {
        let mut p = pool(5, 15);
        let mac = Some(Mac([0x52, 0x54, 0, 0, 0, 0x10]));
        for n in 0..20 {
            assert_ne!(p.offer(&client(n), None, Some(ip(10)), 0, 30), Some(ip(10)));
        }
        assert_eq!(p.offer(&client(0x10), mac, None, 0, 30), Some(ip(10)));
        assert_eq!(
            p.verdict(&client(0x10), mac, ip(11), 0),
            Verdict::WrongAddress
        );
        assert_eq!(p.verdict(&client(0x10), mac, ip(10), 0), Verdict::Grant);
    }

    #[test]
    fn reservation_added_over_a_live_lease_waits_for_it() {
        let mac = Some(Mac([0x52, 0x54, 0, 0, 0, 0x10]));
        let mut p = pool(5, 15);
        p.reserved.clear();
        p.reserved_ips.clear();
        p.grant(&client(1), ip(10), 100);
        let mut p = p.reconfigure(pool(5, 15));
        assert_eq!(p.verdict(&client(0x10), mac, ip(10), 50), Verdict::Refuse);
        let dynamic = p.offer(&client(0x10), mac, None, 50, 80).unwrap();
        assert_ne!(dynamic, ip(10));
        assert_eq!(p.verdict(&client(0x10), mac, dynamic, 50), Verdict::Grant);
        assert_eq!(p.offer(&client(0x10), mac, None, 100, 130), Some(ip(10)));
    }

    #[test]
    fn expired_lease_is_reused_last() {
        let mut p = pool(100, 101);
        p.grant(&client(1), ip(100), 50);
        p.grant(&client(2), ip(101), 60);
        assert_eq!(p.offer(&client(3), None, None, 55, 85), Some(ip(100)));
        assert_eq!(p.offer(&client(4), None, None, 55, 85), None);
    }

    #[test]
    fn release_and_decline() {
        let mut p = pool(100, 100);
        p.grant(&client(1), ip(100), 3600);
        assert_eq!(p.release(&client(2), ip(100)), None, "not its address");
        assert!(p.release(&client(1), ip(100)).is_some());
        assert_eq!(p.bindings().address_of(&client(1)), Some(ip(100)));
        assert_eq!(p.verdict(&client(2), None, ip(100), 10), Verdict::Grant);

        assert_eq!(
            p.decline(&client(2), ip(100), 600),
            None,
            "never offered to it"
        );
        assert_eq!(p.offer(&client(2), None, None, 10, 40), Some(ip(100)));
        assert!(p.decline(&client(2), ip(100), 600).is_some());
        assert_eq!(p.offer(&client(3), None, None, 20, 50), None);
        assert_eq!(p.offer(&client(3), None, None, 600, 630), Some(ip(100)));
    }

    #[test]
    fn bindings_keep_one_address_per_client_and_client_per_address() {
        let mut b = Bindings::default();
        b.apply(&Record::Grant {
            ip: ip(100),
            client: client(1),
            expires: 10,
        });
        b.apply(&Record::Grant {
            ip: ip(101),
            client: client(1),
            expires: 20,
        });
        assert_eq!(b.lease(ip(100)), None);
        b.apply(&Record::Grant {
            ip: ip(101),
            client: client(2),
            expires: 30,
        });
        assert_eq!(b.address_of(&client(1)), None);
        assert_eq!(b.address_of(&client(2)), Some(ip(101)));
        b.apply(&Record::Decline {
            ip: ip(101),
            until: 40,
        });
        assert!(b.is_empty());
        assert!(b.quarantined(ip(101), 39));
        assert!(!b.quarantined(ip(101), 40));
        assert_eq!(b.snapshot(0).len(), 1);
        assert!(b.snapshot(40).is_empty());
    }
}
