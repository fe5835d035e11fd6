//! [`Payload`]: the data of a log entry, shared within one thread instead of copied.
//!
//! One entry's bytes are held by several owners at once: the Raft core's log, the
//! Ready handed to the driver, the WAL's cache of recent entries, replication
//! messages. Cloning a `Vec<u8>` for each of them costs an allocation and a copy per
//! entry per owner; a `Payload` clone is a non-atomic reference count (a shard's
//! entries never leave its thread: peers get them serialized, so nothing here needs
//! `Send`). It is also a view: entries decoded from one WAL record share that
//! record's buffer.
//!
//! Measured (`docs/wal.md`, session 8): `cargo bench --bench raft_core` commits 1.6x
//! (batch 1) to 3x (batch 128) more entries per second than with `Vec<u8>` data, and
//! the WAL's time per batch-1024 append outside the I/O fell from ~33 to ~24 µs. An
//! atomic count (`bytes::Bytes`) was tried first: ~10 ns per entry cached and as much
//! again per entry evicted, no better than copying 256 bytes.
//!
//! Archived (rkyv) exactly like a `Vec<u8>`, so the peer protocol's bytes are those of
//! a plain byte vector.

use std::fmt;
use std::ops::{Deref, Range};
use std::rc::Rc;

use rkyv::rancor::Fallible;
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Deserialize, Place, Serialize};

/// Immutable shared bytes: a range of a reference-counted buffer (or nothing).
#[derive(Clone, Default)]
pub struct Payload {
    buf: Option<Rc<Vec<u8>>>,
    at: u32,
    len: u32,
}

impl Payload {
    /// An empty payload (no allocation).
    pub const fn new() -> Payload {
        Payload {
            buf: None,
            at: 0,
            len: 0,
        }
    }

    /// A payload holding a copy of `b`.
    pub fn copy_from_slice(b: &[u8]) -> Payload {
        Payload::from(b.to_vec())
    }

    /// Bytes `range` of this payload, sharing its buffer. Panics if out of range.
    pub fn slice(&self, range: Range<usize>) -> Payload {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "payload slice {range:?} of {} bytes",
            self.len()
        );
        if range.is_empty() {
            return Payload::new();
        }
        Payload {
            buf: self.buf.clone(),
            at: self.at + range.start as u32,
            len: range.len() as u32,
        }
    }

    /// How many payloads share this one's buffer (0 for an empty payload).
    #[cfg(test)]
    pub fn shares(&self) -> usize {
        self.buf.as_ref().map_or(0, Rc::strong_count)
    }

    /// Its length, from the view itself: no load through the shared buffer (the WAL
    /// sums entry sizes on every append and compaction; through `Deref` each length
    /// was a dependent load from another allocation).
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.at as usize..(self.at + self.len) as usize],
            None => &[],
        }
    }
}

impl From<Vec<u8>> for Payload {
    /// Takes the vector as the shared buffer: no copy of its bytes.
    fn from(v: Vec<u8>) -> Payload {
        if v.is_empty() {
            return Payload::new();
        }
        let len = u32::try_from(v.len()).expect("payload over 4 GiB");
        Payload {
            buf: Some(Rc::new(v)),
            at: 0,
            len,
        }
    }
}

impl From<&[u8]> for Payload {
    fn from(b: &[u8]) -> Payload {
        Payload::copy_from_slice(b)
    }
}

impl<const N: usize> From<&[u8; N]> for Payload {
    fn from(b: &[u8; N]) -> Payload {
        Payload::copy_from_slice(b)
    }
}

impl From<&str> for Payload {
    fn from(s: &str) -> Payload {
        Payload::copy_from_slice(s.as_bytes())
    }
}

impl FromIterator<u8> for Payload {
    fn from_iter<I: IntoIterator<Item = u8>>(iter: I) -> Payload {
        Payload::from(iter.into_iter().collect::<Vec<u8>>())
    }
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Payload {}

impl PartialEq<[u8]> for Payload {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<Vec<u8>> for Payload {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Payload {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.as_slice() == other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Payload {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.as_slice() == *other
    }
}

impl std::hash::Hash for Payload {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl Archive for Payload {
    type Archived = ArchivedVec<u8>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<ArchivedVec<u8>>) {
        ArchivedVec::resolve_from_slice(self.as_slice(), resolver, out);
    }
}

impl<S: Fallible + Allocator + Writer + ?Sized> Serialize<S> for Payload {
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::serialize_from_slice(self.as_slice(), serializer)
    }
}

impl<D: Fallible + ?Sized> Deserialize<Payload, D> for ArchivedVec<u8> {
    fn deserialize(&self, _: &mut D) -> Result<Payload, D::Error> {
        Ok(Payload::copy_from_slice(self.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_the_buffer_and_compare_by_content() {
        let p = Payload::from(b"hello world".to_vec());
        let w = p.slice(6..11);
        assert_eq!(w, *b"world");
        assert_eq!(w.slice(1..3), *b"or");
        assert!(Rc::ptr_eq(p.buf.as_ref().unwrap(), w.buf.as_ref().unwrap()));
        assert_eq!(p.slice(3..3), Payload::new());
        assert_eq!(Payload::from(Vec::new()).len(), 0);
        assert_eq!(Payload::copy_from_slice(b"world"), w);
        assert_ne!(Payload::from("worle"), w);
        assert_eq!(format!("{:?}", p.slice(0..2)), "[104, 101]");
    }

    #[test]
    #[should_panic(expected = "payload slice")]
    fn a_slice_past_the_end_panics() {
        let _ = Payload::from(b"abc").slice(2..4);
    }

    /// The archived form is that of a `Vec<u8>`: either side can read the other's.
    #[test]
    fn archives_like_a_byte_vector() {
        let p = Payload::from(b"xyzzy-payload".to_vec()).slice(6..13);
        let a = rkyv::to_bytes::<rkyv::rancor::Error>(&p).unwrap();
        let v = rkyv::to_bytes::<rkyv::rancor::Error>(&b"payload".to_vec()).unwrap();
        assert_eq!(&a[..], &v[..]);
        let back: Payload = rkyv::from_bytes::<Payload, rkyv::rancor::Error>(&v).unwrap();
        assert_eq!(back, p);
        let empty = rkyv::to_bytes::<rkyv::rancor::Error>(&Payload::new()).unwrap();
        let back: Vec<u8> = rkyv::from_bytes::<Vec<u8>, rkyv::rancor::Error>(&empty).unwrap();
        assert!(back.is_empty());
    }
}
