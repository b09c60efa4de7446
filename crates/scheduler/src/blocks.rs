//! The KV block manager: a fixed pool of blocks, reference counts, and the prefix cache that
//! lets requests with a common prefix share the blocks that hold it.
//!
//! A block is in exactly one of three states: owned (reference count > 0), cached (count 0 but
//! its contents are still keyed in the prefix cache and may be revived, evicted LRU when space is
//! needed) or free. Only full blocks are ever cached: a partial block is still being written by
//! its one owner.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use kiln_runtime::FREED_BLOCK;

/// The hash of a full block: its tokens and the hash of everything before it, so equal hashes
/// mean equal whole prefixes (the stored tokens are compared too, so a collision cannot leak).
pub(crate) fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    // `DefaultHasher::new()` uses fixed keys: hashes are stable for the process's life.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone)]
struct Block {
    refs: u32,
    /// Set while the block is in the prefix cache.
    cached: Option<CacheKey>,
    last_used: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CacheKey {
    hash: u64,
    parent: u64,
    tokens: Vec<u32>,
    /// The KV group whose layers the page holds (a block of positions has a page per group).
    group: usize,
}

/// The cache key of group `group`'s page for the block whose chain hash is `hash`: group 0's
/// is the chain hash itself, the others' are derived from it (no real block hashes like them:
/// a block has `block_size` tokens, and no token id is this large).
fn group_hash(hash: u64, group: usize) -> u64 {
    if group == 0 {
        hash
    } else {
        chain_hash(hash, &[u32::MAX - group as u32])
    }
}

#[derive(Debug)]
pub(crate) struct BlockManager {
    block_size: usize,
    blocks: Vec<Block>,
    free: Vec<u32>,
    /// Cached blocks nobody holds, oldest use first: the eviction order.
    evictable: BTreeSet<(u64, u32)>,
    by_hash: HashMap<u64, u32>,
    tick: u64,
    prefix_caching: bool,
    /// Blocks ever handed out: free blocks go low ids first and freed ones are reused first,
    /// so these are ids `0..touched` — the part of the lazily committed pool that is resident.
    touched: usize,
}

impl BlockManager {
    pub(crate) fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        Self {
            block_size,
            blocks: vec![
                Block {
                    refs: 0,
                    cached: None,
                    last_used: 0,
                };
                num_blocks
            ],
            // Popped from the end: hand out low ids first.
            free: (0..num_blocks as u32).rev().collect(),
            evictable: BTreeSet::new(),
            by_hash: HashMap::new(),
            tick: 0,
            prefix_caching,
            touched: 0,
        }
    }

    /// Fraction of the pool ever written (resident in memory from then on).
    pub(crate) fn touched_ratio(&self) -> f64 {
        if self.blocks.is_empty() {
            return 0.0;
        }
        self.touched as f64 / self.blocks.len() as f64
    }

    pub(crate) fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks that can be handed out now (free or evictable).
    pub(crate) fn available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Fraction of the pool held by running sequences.
    pub(crate) fn usage(&self) -> f64 {
        let n = self.blocks.len();
        if n == 0 {
            return 0.0;
        }
        (n - self.available()) as f64 / n as f64
    }

    /// Takes a block for a new owner, evicting the least recently used cached block if no block
    /// is free.
    pub(crate) fn allocate(&mut self) -> Option<u32> {
        let id = match self.free.pop() {
            Some(id) => {
                self.touched = self.touched.max(id as usize + 1);
                id
            }
            None => {
                let (tick, id) = self.evictable.pop_first()?;
                let _ = tick;
                if let Some(key) = self.blocks[id as usize].cached.take() {
                    self.by_hash.remove(&key.hash);
                }
                id
            }
        };
        let block = &mut self.blocks[id as usize];
        block.refs = 1;
        block.last_used = self.tick;
        Some(id)
    }

    /// Gives up one reference to each block ([`FREED_BLOCK`] entries of a table, already given
    /// back, are skipped).
    pub(crate) fn release(&mut self, ids: &[u32]) {
        self.tick += 1;
        for &id in ids.iter().filter(|&&id| id != FREED_BLOCK) {
            let block = &mut self.blocks[id as usize];
            block.refs = block.refs.saturating_sub(1);
            if block.refs == 0 {
                block.last_used = self.tick;
                if block.cached.is_some() {
                    self.evictable.insert((self.tick, id));
                } else {
                    self.free.push(id);
                }
            }
        }
    }

    /// Adds a reference to blocks another sequence already holds (n > 1 choices share the
    /// prompt's full blocks).
    pub(crate) fn share(&mut self, ids: &[u32]) {
        for &id in ids.iter().filter(|&&id| id != FREED_BLOCK) {
            self.blocks[id as usize].refs += 1;
        }
    }

    /// Offers a just-filled block (KV group 0's page of it) to the prefix cache, returning its
    /// chain hash. If an identical block is already cached this one stays private (and is
    /// freed normally when released).
    #[cfg(test)]
    pub(crate) fn register(&mut self, id: u32, parent: u64, tokens: &[u32]) -> u64 {
        self.register_group(id, parent, tokens, 0)
    }

    /// [`register`](Self::register) for group `group`'s page of the block.
    pub(crate) fn register_group(
        &mut self,
        id: u32,
        parent: u64,
        tokens: &[u32],
        group: usize,
    ) -> u64 {
        let chain = chain_hash(parent, tokens);
        let hash = group_hash(chain, group);
        if !self.prefix_caching || self.by_hash.contains_key(&hash) {
            return chain;
        }
        let block = &mut self.blocks[id as usize];
        if block.cached.is_none() {
            block.cached = Some(CacheKey {
                hash,
                parent,
                tokens: tokens.to_vec(),
                group,
            });
            self.by_hash.insert(hash, id);
        }
        chain
    }

    /// The cached page of group `group` for the block of `tokens` whose parent chain hash is
    /// `parent` and whose own is `chain`.
    fn cached_page(
        &self,
        (parent, chain): (u64, u64),
        tokens: &[u32],
        group: usize,
    ) -> Option<u32> {
        let id = *self.by_hash.get(&group_hash(chain, group))?;
        let key = self.blocks[id as usize].cached.as_ref()?;
        (key.parent == parent && key.tokens == tokens && key.group == group).then_some(id)
    }

    /// Takes a reference to a cached (or held) page.
    fn revive(&mut self, id: u32) {
        let block = &self.blocks[id as usize];
        if block.refs == 0 {
            self.evictable.remove(&(block.last_used, id));
        }
        self.blocks[id as usize].refs += 1;
    }

    /// The longest run of cached full blocks that hold a prefix of `tokens`, leaving at least one
    /// token uncovered (its logits are needed), for a model whose layers share pages in groups
    /// attending within `windows` (one group, `[None]`, for most): a hit of `k` blocks needs
    /// every page of a full group's `k` blocks and a sliding group's pages inside its window
    /// before position `k * block_size` (the others are [`kiln_runtime::FREED_BLOCK`]).
    /// Each page returned gains a reference. Returns the table (a page per block per group,
    /// block-major) and the blocks' chain hashes.
    pub(crate) fn lookup(
        &mut self,
        tokens: &[u32],
        windows: &[Option<usize>],
    ) -> (Vec<u32>, Vec<u64>) {
        if !self.prefix_caching || tokens.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let bs = self.block_size;
        let full = (tokens.len() - 1) / bs;
        let mut links = Vec::with_capacity(full);
        let mut parent = 0u64;
        for chunk in tokens.chunks(bs).take(full) {
            let chain = chain_hash(parent, chunk);
            links.push((parent, chain));
            parent = chain;
        }
        let chunk = |b: usize| &tokens[b * bs..(b + 1) * bs];
        let page = |m: &Self, b: usize, group: usize| m.cached_page(links[b], chunk(b), group);
        // As far as every full group's pages go...
        let mut k = 0;
        while k < full
            && windows
                .iter()
                .enumerate()
                .all(|(g, w)| w.is_some() || page(self, k, g).is_some())
        {
            k += 1;
        }
        // ...and no further than every sliding group has its window's pages.
        let from = |k: usize, w: usize| (k * bs + 1).saturating_sub(w) / bs;
        while k > 0
            && !windows
                .iter()
                .enumerate()
                .all(|(g, w)| w.is_none_or(|w| (from(k, w)..k).all(|b| page(self, b, g).is_some())))
        {
            k -= 1;
        }
        let mut table = Vec::with_capacity(k * windows.len());
        for b in 0..k {
            for (g, w) in windows.iter().enumerate() {
                match (w, page(self, b, g)) {
                    (Some(w), _) if b < from(k, *w) => table.push(kiln_runtime::FREED_BLOCK),
                    (_, Some(id)) => {
                        self.revive(id);
                        table.push(id);
                    }
                    // Checked above.
                    (_, None) => table.push(kiln_runtime::FREED_BLOCK),
                }
            }
        }
        (table, links[..k].iter().map(|l| l.1).collect())
    }

    /// How many blocks are referenced by someone (for tests and invariants).
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.blocks.iter().filter(|b| b.refs > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_exhausts_then_release_refills() {
        let mut m = BlockManager::new(3, 4, false);
        let ids: Vec<u32> = (0..3).filter_map(|_| m.allocate()).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert_eq!(m.allocate(), None);
        assert!((m.touched_ratio() - 1.0).abs() < 1e-9);
        assert!((m.usage() - 1.0).abs() < 1e-9);
        m.release(&ids[..2]);
        assert_eq!(m.available(), 2);
        assert_eq!(m.in_use(), 1);
    }

    #[test]
    fn a_cached_prefix_is_found_and_shared() {
        let mut m = BlockManager::new(8, 2, true);
        let tokens = [1, 2, 3, 4, 5];
        let a = m.allocate().unwrap();
        let b = m.allocate().unwrap();
        let h = m.register(a, 0, &tokens[0..2]);
        m.register(b, h, &tokens[2..4]);
        // Still owned by the first sequence: a second one shares both blocks.
        let (hit, hashes) = m.lookup(&tokens, &[None]);
        assert_eq!(hit, vec![a, b]);
        assert_eq!(hashes.len(), 2);
        // The last token is always left to compute.
        let (hit, _) = m.lookup(&tokens[..4], &[None]);
        assert_eq!(hit, vec![a]);
        // A different first block breaks the chain even if the second block's tokens match.
        let (hit, _) = m.lookup(&[9, 9, 3, 4, 5], &[None]);
        assert!(hit.is_empty());
    }

    #[test]
    fn released_cached_blocks_are_revived_or_evicted_lru() {
        let mut m = BlockManager::new(2, 2, true);
        let a = m.allocate().unwrap();
        m.register(a, 0, &[1, 2]);
        let b = m.allocate().unwrap();
        m.register(b, 0, &[7, 8]);
        m.release(&[a]);
        m.release(&[b]);
        assert_eq!(m.available(), 2);
        // Reviving `b` takes it out of the eviction order.
        let (hit, _) = m.lookup(&[7, 8, 9], &[None]);
        assert_eq!(hit, vec![b]);
        assert_eq!(m.available(), 1);
        // The next allocation evicts `a`, the only evictable block; its prefix is gone.
        assert_eq!(m.allocate(), Some(a));
        assert!(m.lookup(&[1, 2, 3], &[None]).0.is_empty());
        assert_eq!(m.allocate(), None);
    }

    #[test]
    fn prefix_caching_off_never_hits() {
        let mut m = BlockManager::new(2, 2, false);
        let a = m.allocate().unwrap();
        m.register(a, 0, &[1, 2]);
        assert!(m.lookup(&[1, 2, 3], &[None]).0.is_empty());
        m.release(&[a]);
        assert_eq!(m.free.len(), 2);
    }
}
