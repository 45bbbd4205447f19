//! Caches of parsed DNS answers for mail-auth (SPF, DKIM and DMARC records, MX, addresses,
//! PTR), kept until the record's TTL runs out and bounded in size (least recently used out
//! first). The resolver caches raw answers too; these save parsing a record (an RSA public
//! key, an SPF policy) again for every message from the same senders.

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

use hashlink::LruCache;
use mail_auth::{MX, Parameters, RecordSet, ResolverCache, Txt};

/// Entries per cache: a few thousand sending domains cover most of a day's mail.
pub const ENTRIES: usize = 8192;

/// One bounded cache with expiry.
pub struct TtlCache<K: Hash + Eq, V> {
    entries: Mutex<LruCache<K, (V, Instant)>>,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<K, (V, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for TtlCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.lock();
        match entries.get(name) {
            Some((value, until)) if *until > Instant::now() => Some(value.clone()),
            Some(_) => {
                entries.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        self.lock().insert(key, (value, valid_until));
    }
}

/// The caches of one daemon, shared by every verification.
pub struct DnsCaches {
    pub txt: TtlCache<Box<str>, Txt>,
    pub mx: TtlCache<Box<str>, RecordSet<MX>>,
    pub ipv4: TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    pub ipv6: TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    pub ptr: TtlCache<IpAddr, RecordSet<Box<str>>>,
}

/// Parameters carrying every cache of [`DnsCaches`].
pub type Cached<'x, P> = Parameters<
    'x,
    P,
    TtlCache<Box<str>, Txt>,
    TtlCache<Box<str>, RecordSet<MX>>,
    TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    TtlCache<IpAddr, RecordSet<Box<str>>>,
>;

impl DnsCaches {
    pub fn new(capacity: usize) -> Self {
        DnsCaches {
            txt: TtlCache::new(capacity),
            mx: TtlCache::new(capacity),
            ipv4: TtlCache::new(capacity),
            ipv6: TtlCache::new(capacity),
            ptr: TtlCache::new(capacity),
        }
    }

    /// `params` for a mail-auth call, with these caches.
    pub fn with<'x, P>(&'x self, params: P) -> Cached<'x, P> {
        Parameters::new(params)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_expire_and_the_size_is_bounded() {
        let cache: TtlCache<Box<str>, u32> = TtlCache::new(2);
        let later = Instant::now() + Duration::from_secs(60);
        cache.insert("a".into(), 1, later);
        cache.insert("old".into(), 2, Instant::now() - Duration::from_secs(1));
        assert_eq!(cache.get("a"), Some(1));
        assert_eq!(cache.get("old"), None, "expired");
        cache.insert("b".into(), 3, later);
        cache.insert("c".into(), 4, later);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("a"), None, "least recently used went first");
        assert_eq!(cache.get("c"), Some(4));
    }
}
