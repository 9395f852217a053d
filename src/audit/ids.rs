//! The record ids the sink remembers, held compactly (pure). An id [`super::record::record_id`]
//! made (32 lowercase hex digits) is held as its 16 bytes ([`RecordDigest`]); any other id (a
//! record of another writer, or of an older format, read from a chain) is held as the string it
//! is, beside them. The parse is exact, so two different ids are never taken as one: a set never
//! answers "held" for an id it was not given.

use std::borrow::Borrow;
use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

use super::record::RecordDigest;

/// One record id, parsed once.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Id<'a> {
    /// An id as `record_id` makes it.
    Digest(RecordDigest),
    /// Any other id, as it is.
    Other(&'a str),
}

impl<'a> Id<'a> {
    /// The id `id`.
    pub fn of(id: &'a str) -> Self {
        match id.parse() {
            Ok(d) => Id::Digest(d),
            Err(_) => Id::Other(id),
        }
    }
}

/// A set of ids: 16 bytes per id `record_id` made.
#[derive(Debug, Default)]
pub struct IdSet {
    digests: HashSet<RecordDigest>,
    others: HashSet<Box<str>>,
}

impl IdSet {
    /// Adds `id`; `false` when it was there.
    pub fn insert(&mut self, id: Id<'_>) -> bool {
        match id {
            Id::Digest(d) => self.digests.insert(d),
            Id::Other(s) => !self.others.contains(s) && self.others.insert(s.into()),
        }
    }

    pub fn contains(&self, id: Id<'_>) -> bool {
        match id {
            Id::Digest(d) => self.digests.contains(&d),
            Id::Other(s) => self.others.contains(s),
        }
    }

    /// Removes `id`; `false` when it was not there.
    pub fn remove(&mut self, id: Id<'_>) -> bool {
        match id {
            Id::Digest(d) => self.digests.remove(&d),
            Id::Other(s) => self.others.remove(s),
        }
    }

    pub fn len(&self) -> usize {
        self.digests.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A set that forgets its oldest entries beyond `max`.
#[derive(Debug)]
struct Fifo<T> {
    set: HashSet<T>,
    order: VecDeque<T>,
    max: usize,
}

impl<T: Hash + Eq + Clone> Fifo<T> {
    fn new(max: usize) -> Self {
        Fifo {
            set: HashSet::new(),
            order: VecDeque::new(),
            max,
        }
    }

    fn contains<Q: Hash + Eq + ?Sized>(&self, q: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        self.set.contains(q)
    }

    fn insert(&mut self, v: T) {
        if !self.set.insert(v.clone()) {
            return;
        }
        self.order.push_back(v);
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn len(&self) -> usize {
        self.set.len()
    }
}

/// The ids remembered most recently: at most `max` ids `record_id` made and at most `max`
/// others, the oldest forgotten first (an id remembered again keeps its place).
#[derive(Debug)]
pub struct Recent {
    digests: Fifo<RecordDigest>,
    others: Fifo<Box<str>>,
}

impl Recent {
    pub fn new(max: usize) -> Self {
        Recent {
            digests: Fifo::new(max),
            others: Fifo::new(max),
        }
    }

    pub fn insert(&mut self, id: Id<'_>) {
        match id {
            Id::Digest(d) => self.digests.insert(d),
            Id::Other(s) => {
                if !self.others.contains(s) {
                    self.others.insert(s.into());
                }
            }
        }
    }

    pub fn contains(&self, id: Id<'_>) -> bool {
        match id {
            Id::Digest(d) => self.digests.contains(&d),
            Id::Other(s) => self.others.contains(s),
        }
    }

    pub fn len(&self) -> usize {
        self.digests.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The ids of one segment: sorted, without spare capacity (16 bytes per id `record_id` made).
#[derive(Debug, Default)]
pub struct IdList {
    digests: Box<[RecordDigest]>,
    others: Box<[Box<str>]>,
}

impl IdList {
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut digests = Vec::new();
        let mut others: Vec<Box<str>> = Vec::new();
        for id in ids {
            match Id::of(id) {
                Id::Digest(d) => digests.push(d),
                Id::Other(s) => others.push(s.into()),
            }
        }
        digests.sort_unstable();
        digests.dedup();
        others.sort_unstable();
        others.dedup();
        IdList {
            digests: digests.into_boxed_slice(),
            others: others.into_boxed_slice(),
        }
    }

    pub fn contains(&self, id: Id<'_>) -> bool {
        match id {
            Id::Digest(d) => self.digests.binary_search(&d).is_ok(),
            Id::Other(s) => self.others.binary_search_by(|o| (**o).cmp(s)).is_ok(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Id<'_>> {
        self.digests
            .iter()
            .map(|d| Id::Digest(*d))
            .chain(self.others.iter().map(|s| Id::Other(s)))
    }

    pub fn len(&self) -> usize {
        self.digests.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditAction, record_id};

    fn ids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| record_id(&format!("u-{i}"), AuditAction::RunCreated, ""))
            .collect()
    }

    /// Ids no `record_id` makes, among them the upper-case spelling of a real one (the same
    /// bytes if parsed leniently) and the real one with a trailing space.
    fn foreign(real: &str) -> Vec<String> {
        vec![
            real.to_uppercase(),
            format!("{real} "),
            "legacy-9".into(),
            String::new(),
        ]
    }

    #[test]
    fn an_id_parses_once_into_its_16_bytes_or_stays_the_string_it_is() {
        let real = &ids(1)[0];
        assert!(matches!(Id::of(real), Id::Digest(d) if d.to_string() == *real));
        for f in foreign(real) {
            assert_eq!(Id::of(&f), Id::Other(f.as_str()));
        }
    }

    #[test]
    fn a_set_keeps_foreign_ids_apart_from_digests() {
        let real = ids(2);
        let mut set = IdSet::default();
        assert!(set.insert(Id::of(&real[0])));
        assert!(!set.insert(Id::of(&real[0])));
        for f in foreign(&real[0]) {
            assert!(!set.contains(Id::of(&f)), "{f:?} is not {}", real[0]);
            assert!(set.insert(Id::of(&f)));
            assert!(set.contains(Id::of(&f)));
        }
        assert_eq!(set.len(), 5);
        assert!(!set.contains(Id::of(&real[1])));
        for f in foreign(&real[0]) {
            assert!(set.remove(Id::of(&f)));
            assert!(!set.remove(Id::of(&f)));
        }
        assert!(
            set.contains(Id::of(&real[0])),
            "removing the others kept it"
        );
        assert!(set.remove(Id::of(&real[0])));
        assert!(set.is_empty());
    }

    #[test]
    fn recent_forgets_the_oldest_of_each_kind_beyond_its_bound() {
        let real = ids(5);
        let mut recent = Recent::new(3);
        for id in &real {
            recent.insert(Id::of(id));
            // Again: keeps its place, does not count twice.
            recent.insert(Id::of(id));
        }
        assert_eq!(recent.len(), 3);
        assert!(!recent.contains(Id::of(&real[0])));
        assert!(!recent.contains(Id::of(&real[1])));
        for id in &real[2..] {
            assert!(recent.contains(Id::of(id)));
        }
        let others = ["a", "b", "c", "d"];
        for o in others {
            recent.insert(Id::Other(o));
        }
        assert!(!recent.contains(Id::Other("a")));
        assert!(recent.contains(Id::Other("d")));
        // The others' bound is their own: the digests are still there.
        assert!(recent.contains(Id::of(&real[4])));
        assert_eq!(recent.len(), 6);
    }

    #[test]
    fn a_list_finds_exactly_its_ids() {
        let real = ids(50);
        let mut given: Vec<&str> = real[..40].iter().map(String::as_str).collect();
        given.push("legacy-7");
        given.push("legacy-3");
        given.push(&real[0]); // twice in a segment: once in the list
        let list = IdList::new(given);
        assert_eq!(list.len(), 42);
        for id in &real[..40] {
            assert!(list.contains(Id::of(id)));
        }
        for id in &real[40..] {
            assert!(!list.contains(Id::of(id)));
        }
        assert!(list.contains(Id::Other("legacy-3")));
        assert!(!list.contains(Id::Other("legacy-5")));
        for f in foreign(&real[0]) {
            assert!(!list.contains(Id::of(&f)), "{f:?}");
        }
        let mut back: Vec<String> = list
            .iter()
            .map(|id| match id {
                Id::Digest(d) => d.to_string(),
                Id::Other(s) => s.to_string(),
            })
            .collect();
        back.sort();
        let mut want: Vec<String> = real[..40].to_vec();
        want.extend(["legacy-7".to_string(), "legacy-3".to_string()]);
        want.sort();
        assert_eq!(back, want);
        assert!(IdList::new([]).is_empty());
    }
}
