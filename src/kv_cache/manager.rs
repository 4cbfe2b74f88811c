//! The paged KV cache's host bookkeeping (its block manager): sequences and their page lists, the
//! free list, per-page reference counts and the prefix cache. It touches no device memory: it says
//! which slots a step writes and which pages to copy, and `PagedKvCache` does the device work.
//!
//! A page is in exactly one of three states:
//! - free: no sequence holds it and it holds nothing worth keeping (on `free`);
//! - cached: no sequence holds it, but it is a full page whose tokens are known, kept for prefix
//!   hits until its space is needed (on `evictable`, least recently used first);
//! - held: one or more sequences hold it (`refs` counts them), and it may also be in the prefix
//!   cache (`cached`), when it is a full page whose tokens are known.
//!
//! A page is written only by a step that appends into it; the manager never lets that page be
//! shared (copy-on-write) or be in the prefix cache at that moment, so no page has two writers and
//! no cached page changes under a later hit.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};

/// The prefix cache's hash of one full page: the previous page's hash (none for the first page)
/// chained with the page's token ids. Swappable for tests that plant collisions.
pub(crate) type PrefixHasher = fn(Option<u64>, &[u32]) -> u64;

/// The default page hash: SipHash-1-3 with fixed keys (std's `DefaultHasher`), so equal prefixes
/// hash alike within a process. A collision costs nothing but a token comparison: hits are
/// confirmed against the page's stored tokens and its parent page.
pub(crate) fn default_prefix_hash(parent: Option<u64>, tokens: &[u32]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// A page's entry in the prefix cache.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CachedPage {
    hash: u64,
    /// Unique to this entry: a page that leaves the cache and comes back with other tokens gets a
    /// new one, so entries that named it as their parent no longer match.
    id: u64,
    /// The entry holding the tokens just before this page's (page, id; none for a sequence's
    /// first page): a hit must follow the very chain of entries it was computed after, which
    /// makes hits exact whatever the hash does.
    parent: Option<(u32, u64)>,
    tokens: Box<[u32]>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PageState {
    /// Sequences holding the page.
    refs: u32,
    cached: Option<CachedPage>,
    /// When the page was last hit or released (the LRU order of `evictable`).
    last_use: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Sequence {
    pages: Vec<u32>,
    len: usize,
    /// The token ids of every position, for sequences whose tokens the engine tells (made with
    /// a prefix, and given tokens at every reserve since); `None` once unknown.
    tokens: Option<Vec<u32>>,
    /// The chained hash of each full page, while `tokens` is known.
    hashes: Vec<u64>,
}

/// One sequence's part of a step: `new_tokens` new tokens, with their ids when known.
pub(crate) struct Request<'a> {
    pub seq: u64,
    pub new_tokens: usize,
    pub token_ids: Option<&'a [u32]>,
}

/// What a step changed on the device side: each new token's flat slot, and the pages to copy
/// (source, destination) before any of them is written.
#[derive(Debug, Default)]
pub(crate) struct Reservation {
    pub slots: Vec<i32>,
    pub copies: Vec<(u32, u32)>,
}

/// Counts for `stats()`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageCounts {
    pub free: usize,
    pub cached: usize,
    pub shared: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct Manager {
    page_size: usize,
    pages: Vec<PageState>,
    /// Free pages, taken from the end (lowest index first on a new cache).
    free: Vec<u32>,
    /// Cached pages no sequence holds, by (last use, page): evicted from the front.
    evictable: BTreeSet<(u64, u32)>,
    /// Prefix-cache pages by hash (several when hashes collide or contents repeat).
    by_hash: BTreeMap<u64, Vec<u32>>,
    seqs: BTreeMap<u64, Sequence>,
    next_seq: u64,
    tick: u64,
    hasher: PrefixHasher,
}

/// Equal states: everything but the hash function (compared only between states of one cache).
impl PartialEq for Manager {
    fn eq(&self, other: &Manager) -> bool {
        self.page_size == other.page_size
            && self.pages == other.pages
            && self.free == other.free
            && self.evictable == other.evictable
            && self.by_hash == other.by_hash
            && self.seqs == other.seqs
            && self.next_seq == other.next_seq
            && self.tick == other.tick
    }
}

impl Manager {
    /// Reorders the free pages by a seeded shuffle, so that consecutive pages of a sequence are
    /// seldom adjacent (tests and the CLI's paged runs).
    pub(crate) fn shuffle_free(&mut self, seed: u64) {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        self.free
            .shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    }

    pub(crate) fn new(num_pages: usize, page_size: usize) -> Manager {
        Manager {
            page_size,
            pages: vec![PageState::default(); num_pages],
            free: (0..num_pages as u32).rev().collect(),
            evictable: BTreeSet::new(),
            by_hash: BTreeMap::new(),
            seqs: BTreeMap::new(),
            next_seq: 0,
            tick: 0,
            hasher: default_prefix_hash,
        }
    }

    pub(crate) fn set_hasher(&mut self, hasher: PrefixHasher) {
        self.hasher = hasher;
    }

    fn seq(&self, seq: u64) -> Result<&Sequence> {
        self.seqs.get(&seq).ok_or_else(|| unknown_seq(seq))
    }

    pub(crate) fn seq_len(&self, seq: u64) -> Result<usize> {
        Ok(self.seq(seq)?.len)
    }

    pub(crate) fn seq_pages(&self, seq: u64) -> Result<&[u32]> {
        Ok(&self.seq(seq)?.pages)
    }

    /// Every live sequence and its length, by id.
    pub(crate) fn seq_lens(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.seqs.iter().map(|(&id, s)| (id, s.len))
    }

    pub(crate) fn counts(&self) -> PageCounts {
        PageCounts {
            free: self.free.len(),
            cached: self.evictable.len(),
            shared: self.pages.iter().filter(|p| p.refs > 1).count(),
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    pub(crate) fn add_sequence(&mut self) -> u64 {
        let id = self.next_seq;
        self.next_seq += 1;
        self.seqs.insert(
            id,
            Sequence {
                pages: Vec::new(),
                len: 0,
                tokens: None,
                hashes: Vec::new(),
            },
        );
        id
    }

    /// A sequence sharing the longest chain of cached full pages that starts `tokens`, leaving at
    /// least one token uncovered (so the engine computes the last position's logits). Returns the
    /// id and the tokens covered.
    pub(crate) fn add_sequence_with_prefix(&mut self, tokens: &[u32]) -> (u64, usize) {
        let p = self.page_size;
        let max_pages = tokens.len().saturating_sub(1) / p;
        let mut pages = Vec::new();
        let mut hashes = Vec::new();
        let mut parent: Option<(u32, u64)> = None;
        for chunk in tokens.chunks_exact(p).take(max_pages) {
            let hash = (self.hasher)(hashes.last().copied(), chunk);
            let hit = self.by_hash.get(&hash).and_then(|candidates| {
                candidates.iter().find_map(|&page| {
                    let c = self.pages[page as usize].cached.as_ref()?;
                    (c.parent == parent && *c.tokens == *chunk).then_some((page, c.id))
                })
            });
            let Some((page, id)) = hit else { break };
            pages.push(page);
            hashes.push(hash);
            parent = Some((page, id));
        }
        let tick = self.next_tick();
        for &page in &pages {
            let state = &mut self.pages[page as usize];
            if state.refs == 0 {
                self.evictable.remove(&(state.last_use, page));
            }
            state.refs += 1;
            state.last_use = tick;
        }
        let cached = pages.len() * p;
        let id = self.next_seq;
        self.next_seq += 1;
        self.seqs.insert(
            id,
            Sequence {
                pages,
                len: cached,
                tokens: Some(tokens[..cached].to_vec()),
                hashes,
            },
        );
        (id, cached)
    }

    pub(crate) fn fork(&mut self, seq: u64) -> Result<u64> {
        let child = self.seq(seq)?.clone();
        for &page in &child.pages {
            self.pages[page as usize].refs += 1;
        }
        let id = self.next_seq;
        self.next_seq += 1;
        self.seqs.insert(id, child);
        Ok(id)
    }

    /// Drops a sequence's hold on `page`: a page nobody holds goes to the prefix cache if it is
    /// in it, else to the free list.
    fn release(&mut self, page: u32) {
        let tick = self.next_tick();
        let state = &mut self.pages[page as usize];
        state.refs -= 1;
        if state.refs == 0 {
            state.last_use = tick;
            if state.cached.is_some() {
                self.evictable.insert((tick, page));
            } else {
                self.free.push(page);
            }
        }
    }

    pub(crate) fn truncate(&mut self, seq: u64, new_len: usize) -> Result<()> {
        let len = self.seq(seq)?.len;
        if new_len > len {
            return Err(Error::invalid(
                "new_len",
                format!("{new_len}: sequence {seq} has {len} tokens; truncate cannot extend it"),
            ));
        }
        let keep = new_len.div_ceil(self.page_size);
        let full = new_len / self.page_size;
        let s = self.seqs.get_mut(&seq).expect("checked above");
        let dropped = s.pages.split_off(keep);
        s.len = new_len;
        if let Some(tokens) = &mut s.tokens {
            tokens.truncate(new_len);
            s.hashes.truncate(full);
        }
        // Tail first, so a freed sequence's last pages are the first evicted.
        for page in dropped.into_iter().rev() {
            self.release(page);
        }
        Ok(())
    }

    pub(crate) fn free(&mut self, seq: u64) -> Result<()> {
        self.truncate(seq, 0)?;
        self.seqs.remove(&seq);
        Ok(())
    }

    /// Takes a page for writing: a free one, else the least recently used cached one (leaving
    /// the prefix cache). The caller checked that one is there.
    fn take_page(&mut self) -> u32 {
        let page = match self.free.pop() {
            Some(page) => page,
            None => {
                let (_, page) = self.evictable.pop_first().expect("pages counted before");
                self.uncache(page);
                page
            }
        };
        self.pages[page as usize].refs = 1;
        page
    }

    /// Removes `page` from the prefix cache.
    fn uncache(&mut self, page: u32) {
        if let Some(c) = self.pages[page as usize].cached.take() {
            if let Some(list) = self.by_hash.get_mut(&c.hash) {
                list.retain(|&p| p != page);
                if list.is_empty() {
                    self.by_hash.remove(&c.hash);
                }
            }
        }
    }

    /// Plans a step: checks every request, then (only if all of them can be served) allocates
    /// pages, copies shared partly filled last pages, and returns each new token's slot.
    pub(crate) fn reserve(&mut self, requests: &[Request<'_>]) -> Result<Reservation> {
        let p = self.page_size;
        let mut needed = 0usize;
        let mut seen = BTreeSet::new();
        let mut total_tokens = 0usize;
        for r in requests {
            let s = self.seq(r.seq)?;
            if !seen.insert(r.seq) {
                return Err(Error::invalid(
                    "requests",
                    format!("sequence {} appears twice in one step", r.seq),
                ));
            }
            if let Some(ids) = r.token_ids {
                if ids.len() != r.new_tokens {
                    return Err(Error::invalid(
                        "token_ids",
                        format!(
                            "{} ids for sequence {}, which gets {} new tokens",
                            ids.len(),
                            r.seq,
                            r.new_tokens
                        ),
                    ));
                }
            }
            let new_len = s
                .len
                .checked_add(r.new_tokens)
                .filter(|&n| n <= i32::MAX as usize);
            let Some(new_len) = new_len else {
                return Err(Error::invalid(
                    "new_tokens",
                    format!(
                        "{} for sequence {} of {} tokens: lengths are int32",
                        r.new_tokens, r.seq, s.len
                    ),
                ));
            };
            total_tokens += r.new_tokens;
            needed += new_len.div_ceil(p) - s.pages.len();
            if self.must_copy_last_page(s, r.new_tokens) {
                needed += 1;
            }
        }
        if total_tokens > i32::MAX as usize {
            return Err(Error::invalid(
                "new_tokens",
                format!("{total_tokens} in one step: token counts are int32"),
            ));
        }
        let available = self.free.len() + self.evictable.len();
        if needed > available {
            return Err(Error::OutOfPages { needed, available });
        }

        // Everything below succeeds.
        let mut out = Reservation {
            slots: Vec::with_capacity(total_tokens),
            copies: Vec::new(),
        };
        for r in requests {
            let (len, last) = {
                let s = &self.seqs[&r.seq];
                (s.len, s.pages.last().copied())
            };
            if r.new_tokens > 0 && !len.is_multiple_of(p) {
                let last = last.expect("a partly filled page");
                if self.pages[last as usize].refs > 1 {
                    // Copy-on-write: this sequence gets its own copy of the shared page.
                    let copy = self.take_page();
                    out.copies.push((last, copy));
                    self.pages[last as usize].refs -= 1;
                    let s = self.seqs.get_mut(&r.seq).expect("checked");
                    *s.pages.last_mut().expect("a partly filled page") = copy;
                } else {
                    // Held by this sequence alone, but possibly still in the prefix cache (a
                    // full page it was truncated into): it leaves the cache before it changes.
                    self.uncache(last);
                }
            }
            let new_len = len + r.new_tokens;
            while self.seqs[&r.seq].pages.len() < new_len.div_ceil(p) {
                let page = self.take_page();
                self.seqs.get_mut(&r.seq).expect("checked").pages.push(page);
            }
            let s = &self.seqs[&r.seq];
            out.slots
                .extend((len..new_len).map(|pos| (s.pages[pos / p] as usize * p + pos % p) as i32));
            self.seqs.get_mut(&r.seq).expect("checked").len = new_len;
            self.record_tokens(r.seq, len, r.token_ids);
        }
        Ok(out)
    }

    /// Whether appending `new_tokens` to `s` writes into a partly filled last page that another
    /// sequence also holds.
    fn must_copy_last_page(&self, s: &Sequence, new_tokens: usize) -> bool {
        new_tokens > 0
            && !s.len.is_multiple_of(self.page_size)
            && s.pages
                .last()
                .is_some_and(|&page| self.pages[page as usize].refs > 1)
    }

    /// Records the ids of a step's tokens (from position `from`) and puts the pages they fill
    /// into the prefix cache; without ids, the sequence's tokens are unknown from now on.
    fn record_tokens(&mut self, seq: u64, from: usize, ids: Option<&[u32]>) {
        let p = self.page_size;
        let s = self.seqs.get_mut(&seq).expect("checked");
        let (Some(tokens), Some(ids)) = (&mut s.tokens, ids) else {
            s.tokens = None;
            s.hashes.clear();
            return;
        };
        debug_assert_eq!(tokens.len(), from);
        tokens.extend_from_slice(ids);
        let mut fresh = Vec::new();
        while s.hashes.len() < tokens.len() / p {
            let i = s.hashes.len();
            let chunk = &tokens[i * p..(i + 1) * p];
            let hash = (self.hasher)(s.hashes.last().copied(), chunk);
            s.hashes.push(hash);
            fresh.push((i, hash, Box::<[u32]>::from(chunk)));
        }
        if fresh.is_empty() {
            return;
        }
        let pages = s.pages.clone();
        for (i, hash, tokens) in fresh {
            // The page before is in the cache (it was filled, or hit, with known tokens) unless
            // it left it; then neither this page nor any after it can be found by a hit.
            let parent = match i.checked_sub(1) {
                None => None,
                Some(j) => match &self.pages[pages[j] as usize].cached {
                    Some(c) => Some((pages[j], c.id)),
                    None => break,
                },
            };
            let id = self.next_tick();
            let state = &mut self.pages[pages[i] as usize];
            if state.cached.is_none() {
                state.cached = Some(CachedPage {
                    hash,
                    id,
                    parent,
                    tokens,
                });
                self.by_hash.entry(hash).or_default().push(pages[i]);
            }
        }
    }

    /// Checks the manager's invariants; a description of the first broken one.
    pub(crate) fn check_invariants(&self) -> std::result::Result<(), String> {
        let mut refs = vec![0u32; self.pages.len()];
        for (id, s) in &self.seqs {
            if s.pages.len() != s.len.div_ceil(self.page_size) {
                return Err(format!(
                    "sequence {id}: {} pages for {} tokens",
                    s.pages.len(),
                    s.len
                ));
            }
            for &page in &s.pages {
                refs[page as usize] += 1;
            }
            if let Some(tokens) = &s.tokens {
                if tokens.len() != s.len || s.hashes.len() != s.len / self.page_size {
                    return Err(format!("sequence {id}: token record out of step"));
                }
            }
        }
        let free: BTreeSet<u32> = self.free.iter().copied().collect();
        if free.len() != self.free.len() {
            return Err("a page is on the free list twice".into());
        }
        for (page, state) in self.pages.iter().enumerate() {
            let page32 = page as u32;
            if state.refs != refs[page] {
                return Err(format!(
                    "page {page}: {} references counted, {} held",
                    state.refs, refs[page]
                ));
            }
            let is_free = free.contains(&page32);
            let is_evictable = self.evictable.contains(&(state.last_use, page32));
            let expected = (
                state.refs == 0 && state.cached.is_none(),
                state.refs == 0 && state.cached.is_some(),
            );
            if (is_free, is_evictable) != expected {
                return Err(format!(
                    "page {page}: refs {}, cached {}, but free {is_free}, evictable {is_evictable}",
                    state.refs,
                    state.cached.is_some()
                ));
            }
            if let Some(c) = &state.cached {
                if !self
                    .by_hash
                    .get(&c.hash)
                    .is_some_and(|l| l.contains(&page32))
                {
                    return Err(format!("page {page}: cached but not found by its hash"));
                }
            }
        }
        if self.evictable.len()
            != self
                .pages
                .iter()
                .filter(|s| s.refs == 0 && s.cached.is_some())
                .count()
        {
            return Err("the LRU list holds pages that are not cached and unheld".into());
        }
        Ok(())
    }
}

fn unknown_seq(seq: u64) -> Error {
    Error::invalid(
        "seq",
        format!("sequence {seq} is not in the cache (never added, or freed)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(seq: u64, n: usize) -> Request<'static> {
        Request {
            seq,
            new_tokens: n,
            token_ids: None,
        }
    }

    #[test]
    fn slots_follow_pages_of_any_size() {
        let mut m = Manager::new(10, 3);
        let a = m.add_sequence();
        let r = m.reserve(&[req(a, 7)]).unwrap();
        // Pages come off the free list lowest first: 0, 1, 2.
        assert_eq!(r.slots, vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(m.seq_pages(a).unwrap(), &[0, 1, 2]);
        let r = m.reserve(&[req(a, 3)]).unwrap();
        assert_eq!(r.slots, vec![7, 8, 9]);
        assert_eq!(m.seq_pages(a).unwrap(), &[0, 1, 2, 3]);
        m.check_invariants().unwrap();
    }

    #[test]
    fn out_of_pages_changes_nothing() {
        let mut m = Manager::new(4, 2);
        let a = m.add_sequence();
        let b = m.add_sequence();
        m.reserve(&[req(a, 5)]).unwrap();
        let before = m.clone();
        let err = m.reserve(&[req(a, 1), req(b, 3)]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfPages {
                    needed: 2,
                    available: 1
                }
            ),
            "{err}"
        );
        assert_eq!(m, before);
    }

    #[test]
    fn fork_copies_the_shared_partial_page_on_first_write() {
        let mut m = Manager::new(8, 4);
        let a = m.add_sequence();
        m.reserve(&[req(a, 6)]).unwrap();
        let b = m.fork(a).unwrap();
        let r = m.reserve(&[req(b, 1)]).unwrap();
        assert_eq!(r.copies, vec![(1, 2)]);
        assert_eq!(m.seq_pages(a).unwrap(), &[0, 1]);
        assert_eq!(m.seq_pages(b).unwrap(), &[0, 2]);
        // The parent now holds page 1 alone and writes in place.
        let r = m.reserve(&[req(a, 1)]).unwrap();
        assert!(r.copies.is_empty());
        assert_eq!(r.slots, vec![6]);
        m.check_invariants().unwrap();
    }
}
