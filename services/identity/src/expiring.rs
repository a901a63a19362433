//! The mechanism under the per-replica caches (`keys::KeyCache`,
//! `oauth::clients::ClientCache`): entries that expire, "no such thing"
//! remembered briefly, a bound on how many entries an invented id can
//! create, and a generation counter so that a load which raced an
//! invalidation does not install what it read before the change.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

enum Slot<V> {
    Present(Arc<V>, Instant),
    Absent(Instant),
}

/// What [`ExpiringMap::lookup`] found.
pub enum Lookup<V> {
    /// A live entry: the value, or `None` if it is known not to exist.
    Fresh(Option<Arc<V>>),
    /// Nothing live: load it, then [`ExpiringMap::install`] with this
    /// generation.
    Miss(u64),
}

/// A map of expiring entries; cheap to share behind an `Arc`.
pub struct ExpiringMap<K, V> {
    entries: RwLock<HashMap<K, Slot<V>>>,
    generation: AtomicU64,
    max_entries: usize,
    negative_age: Duration,
}

impl<K: Eq + Hash, V> ExpiringMap<K, V> {
    /// An empty map. Above `max_entries`, expired and negative entries are
    /// purged and no new negative entry is added; an absence is remembered
    /// for `negative_age`.
    pub fn new(max_entries: usize, negative_age: Duration) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            max_entries,
            negative_age,
        }
    }

    /// The live entry of `key`, or the generation to load it under.
    pub fn lookup(&self, key: &K) -> Lookup<V> {
        let now = Instant::now();
        if let Ok(entries) = self.entries.read() {
            match entries.get(key) {
                Some(Slot::Present(value, until)) if *until > now => {
                    return Lookup::Fresh(Some(value.clone()));
                }
                Some(Slot::Absent(until)) if *until > now => return Lookup::Fresh(None),
                _ => {}
            }
        }
        Lookup::Miss(self.generation.load(Ordering::SeqCst))
    }

    /// The value of `key` even if it has expired (not if it was
    /// invalidated), to reuse what did not change.
    pub fn stale(&self, key: &K) -> Option<Arc<V>> {
        match self.entries.read().ok()?.get(key) {
            Some(Slot::Present(value, _)) => Some(value.clone()),
            _ => None,
        }
    }

    /// Installs what a load found — a value live until the given instant,
    /// or its absence — unless something was invalidated since
    /// `generation` was handed out.
    pub fn install(&self, key: K, found: Option<(Arc<V>, Instant)>, generation: u64) {
        let now = Instant::now();
        let slot = match found {
            Some((value, until)) => Slot::Present(value, until),
            None => Slot::Absent(now + self.negative_age),
        };
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        // Invented ids cost memory only up to a bound.
        if entries.len() >= self.max_entries {
            entries.retain(|_, slot| matches!(slot, Slot::Present(_, until) if *until > now));
        }
        let room = entries.len() < self.max_entries || matches!(slot, Slot::Present(..));
        if room && self.generation.load(Ordering::SeqCst) == generation {
            entries.insert(key, slot);
        }
    }

    /// Forgets the entries `drop` picks.
    pub fn invalidate_where(&self, drop: impl Fn(&K) -> bool) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|key, _| !drop(key));
        }
    }

    /// Forgets one entry.
    pub fn invalidate(&self, key: &K) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(key);
        }
    }

    /// Forgets everything (after missing events, e.g. a Redis reconnect).
    pub fn clear(&self) {
        self.invalidate_where(|_| true);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn fresh(map: &ExpiringMap<&'static str, u32>, key: &'static str) -> Option<Option<u32>> {
        match map.lookup(&key) {
            Lookup::Fresh(value) => Some(value.map(|v| *v)),
            Lookup::Miss(_) => None,
        }
    }

    fn generation(map: &ExpiringMap<&'static str, u32>, key: &'static str) -> u64 {
        match map.lookup(&key) {
            Lookup::Miss(generation) => generation,
            Lookup::Fresh(_) => panic!("{key} is live"),
        }
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_installed() {
        let map = ExpiringMap::new(10, Duration::from_secs(5));
        let later = Instant::now() + Duration::from_secs(60);
        let before = generation(&map, "a");
        map.invalidate(&"b");
        map.install("a", Some((Arc::new(1), later)), before);
        assert_eq!(fresh(&map, "a"), None);

        let now = generation(&map, "a");
        map.install("a", Some((Arc::new(2), later)), now);
        assert_eq!(fresh(&map, "a"), Some(Some(2)));
        map.install("gone", None, generation(&map, "gone"));
        assert_eq!(fresh(&map, "gone"), Some(None));
    }

    #[test]
    fn expired_entries_stay_readable_as_stale_until_invalidated() {
        let map = ExpiringMap::new(10, Duration::from_secs(5));
        let expired = Instant::now();
        map.install("a", Some((Arc::new(7), expired)), generation(&map, "a"));
        assert_eq!(fresh(&map, "a"), None);
        assert_eq!(map.stale(&"a").map(|v| *v), Some(7));
        map.invalidate_where(|key| *key == "a");
        assert!(map.stale(&"a").is_none());
    }

    #[test]
    fn invented_ids_cannot_grow_the_map_past_its_bound() {
        let map = ExpiringMap::new(2, Duration::from_secs(5));
        let later = Instant::now() + Duration::from_secs(60);
        map.install("real", Some((Arc::new(1), later)), generation(&map, "real"));
        for key in ["x", "y", "z"] {
            map.install(key, None, generation(&map, key));
            assert!(map.entries.read().unwrap().len() <= 2);
        }
        // Full: the absences were purged to make room, the live entry kept.
        assert_eq!(fresh(&map, "x"), None);
        assert_eq!(fresh(&map, "real"), Some(Some(1)));
    }
}
