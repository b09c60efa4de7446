//! The step planner: which sequences run this step, how many tokens each feeds, who is preempted
//! and who is admitted, decided from plain data (the sequences' lengths, progress and block
//! tables, the waiting queue's tokens, the limits) and the KV block pool. No model, no tensors,
//! no channels, no clock: the same inputs always give the same [`Plan`], which the engine then
//! carries out.
//!
//! The policy, in order:
//! - **Decode first.** Running sequences are served decodes (one uncomputed token) before
//!   prefills, oldest admission first within each, so a long prefill never starves decodes.
//!   Each takes `min(uncomputed, budget)` tokens: a prefill bigger than what is left of the
//!   token budget is chunked, the rest waits for the next step.
//! - **Preempt the newest.** When a running sequence's chunk needs blocks the pool cannot give,
//!   the newest admitted sequence not yet scheduled this step (possibly itself) gives its blocks
//!   back and goes to the front of the queue, to be recomputed later.
//! - **Admit first come, first served** while token budget, `max_running` and blocks allow. An
//!   admission starts from the longest cached prefix of its tokens and must find room for all of
//!   its tokens plus the first generated one, so it cannot preempt anyone on its next step; the
//!   queue's head is never overtaken (a head that does not fit stops admission).
//!
//! The planner reserves blocks in the pool as it decides, rather than returning counts for the
//! engine to allocate: whether the next admission fits depends on what the prefix cache still
//! holds, and an earlier allocation in the same step can evict it. Planning against the pool
//! itself keeps every decision and every eviction exactly what allocating in that order does.

use crate::blocks::BlockManager;

/// The planner's limits (from [`crate::EngineConfig`]) and the shape of a block table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits<'a> {
    /// Tokens one step may feed the model; 0 is taken as 1.
    pub(crate) max_batched_tokens: usize,
    /// Sequences that may run at once.
    pub(crate) max_running: usize,
    /// The model's KV groups' windows ([`kiln_runtime::KvGroups`]): a table holds a page per
    /// block per group, block-major.
    pub(crate) kv_groups: &'a [Option<usize>],
}

/// A running sequence as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Running<'a> {
    /// Prompt and generated tokens (what a recompute after preemption must feed again).
    pub(crate) tokens: &'a [u32],
    /// Leading tokens already in its KV blocks.
    pub(crate) computed: usize,
    /// Its block table.
    pub(crate) blocks: &'a [u32],
    /// Admission order (unique, increasing): the newest is preempted first.
    pub(crate) admitted: u64,
}

impl Running<'_> {
    fn uncomputed(&self) -> usize {
        self.tokens.len() - self.computed
    }
}

/// One running sequence's share of the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// Index into the planner's `running` input.
    pub(crate) seq: usize,
    /// Tokens it feeds this step, from its `computed` position on.
    pub(crate) tokens: usize,
    /// Blocks reserved for it, to append to its block table.
    pub(crate) new_blocks: Vec<u32>,
}

/// One sequence taken from the front of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Its whole block table: the cached prefix's blocks, then fresh ones.
    pub(crate) blocks: Vec<u32>,
    /// Chain hashes of the cached prefix's blocks.
    pub(crate) hashes: Vec<u64>,
    /// Leading tokens served from the prefix cache (whole blocks).
    pub(crate) cached: usize,
    /// Tokens it feeds this step, from `cached` on.
    pub(crate) tokens: usize,
}

/// What one step does. The batch is `run` (in order), then `admit` (in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Running sequences that feed tokens this step, in batch order.
    pub(crate) run: Vec<Chunk>,
    /// Running sequences the budget did not reach: they keep their blocks and wait a step.
    pub(crate) idle: Vec<usize>,
    /// Running sequences preempted, in order: their blocks are already released; each goes to
    /// the front of the queue in turn (so the last one preempted ends up first).
    pub(crate) preempt: Vec<usize>,
    /// Sequences admitted from the front of the queue as it stands once `preempt` has been
    /// put back, in queue order.
    pub(crate) admit: Vec<Admission>,
}

#[cfg(test)]
impl Plan {
    /// Tokens the step feeds the model.
    pub(crate) fn tokens(&self) -> usize {
        self.run.iter().map(|c| c.tokens).sum::<usize>()
            + self.admit.iter().map(|a| a.tokens).sum::<usize>()
    }
}

/// Plans one step. `waiting` is the queue's tokens, front first (a waiting sequence holds no
/// blocks and has computed nothing). Blocks of preempted sequences are released and every
/// block in the plan is reserved in `pool`.
pub(crate) fn plan(
    pool: &mut BlockManager,
    running: &[Running<'_>],
    waiting: &[&[u32]],
    limits: Limits<'_>,
) -> Plan {
    let bs = pool.block_size();
    // Pages per block of positions.
    let groups = limits.kv_groups.len().max(1);
    let mut budget = limits.max_batched_tokens.max(1);
    let mut plan = Plan::default();

    // Decodes first, oldest first, so prefills never starve them.
    let mut order: Vec<usize> = (0..running.len()).collect();
    order.sort_by_key(|&s| (running[s].uncomputed() > 1, running[s].admitted));
    let mut i = 0;
    while i < order.len() && budget > 0 {
        let s = order[i];
        let seq = &running[s];
        let chunk = seq.uncomputed().min(budget);
        let need = (seq.computed + chunk).div_ceil(bs) * groups;
        let mut new_blocks = Vec::new();
        let fits = loop {
            if grow(pool, seq.blocks.len(), &mut new_blocks, need) {
                break true;
            }
            // Out of blocks: preempt the newest sequence not yet scheduled this step.
            let victim = (i..order.len())
                .max_by_key(|&j| running[order[j]].admitted)
                .unwrap_or(i);
            if victim == i {
                break false;
            }
            let v = order.remove(victim);
            pool.release(running[v].blocks);
            plan.preempt.push(v);
        };
        if fits {
            plan.run.push(Chunk {
                seq: s,
                tokens: chunk,
                new_blocks,
            });
            budget -= chunk;
            i += 1;
        } else {
            order.remove(i);
            let held: Vec<u32> = seq.blocks.iter().chain(&new_blocks).copied().collect();
            pool.release(&held);
            plan.preempt.push(s);
        }
    }
    plan.idle = order[i..].to_vec();

    // Admit from the queue as it will stand: the preempted (last one first), then the waiting.
    let queue = plan
        .preempt
        .iter()
        .rev()
        .map(|&s| running[s].tokens)
        .chain(waiting.iter().copied());
    for tokens in queue {
        // Still running: everyone not preempted (`idle` included), and those admitted so far.
        if budget == 0 || order.len() + plan.admit.len() >= limits.max_running {
            break;
        }
        let (mut blocks, hashes) = pool.lookup(tokens, limits.kv_groups);
        let cached = hashes.len() * bs;
        // Room for the whole sequence and the first generated token, so an admitted sequence
        // does not immediately preempt another: every block of a full group, and of a sliding
        // group the most it holds at once — its window and a step's chunk, since it gives back
        // what slides out after every step.
        let fresh = (tokens.len() + 1).div_ceil(bs) - hashes.len();
        let need = pages_for(fresh, bs, limits).max(1);
        if need > pool.available() {
            pool.release(&blocks);
            break;
        }
        let chunk = (tokens.len() - cached).min(budget);
        if !grow(pool, 0, &mut blocks, (cached + chunk).div_ceil(bs) * groups) {
            // Cannot happen after the check above; stay correct regardless.
            pool.release(&blocks);
            break;
        }
        budget -= chunk;
        plan.admit.push(Admission {
            blocks,
            hashes,
            cached,
            tokens: chunk,
        });
    }
    plan
}

/// The most pages a sequence holds at once over `blocks` blocks of positions: every block of a
/// full KV group, and of a sliding group no more than its window's blocks before a step and a
/// chunk's after it (it gives back what slides out after every step).
pub(crate) fn pages_for(blocks: usize, bs: usize, limits: Limits<'_>) -> usize {
    let most = |window: usize| (window + limits.max_batched_tokens.max(1)).div_ceil(bs) + 2;
    limits
        .kv_groups
        .iter()
        .map(|w| w.map_or(blocks, |w| blocks.min(most(w))))
        .sum()
}

/// Reserves blocks until `held + new_blocks` holds `need` blocks; false if the pool ran out
/// (what was reserved stays in `new_blocks`).
fn grow(pool: &mut BlockManager, held: usize, new_blocks: &mut Vec<u32>, need: usize) -> bool {
    while held + new_blocks.len() < need {
        match pool.allocate() {
            Some(b) => new_blocks.push(b),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::blocks::chain_hash;

    const BS: usize = 4;

    /// A running sequence's owned data (the planner borrows it).
    struct Seq {
        tokens: Vec<u32>,
        computed: usize,
        blocks: Vec<u32>,
        admitted: u64,
    }

    fn tokens(len: usize, seed: u32) -> Vec<u32> {
        (0..len as u32).map(|i| seed * 1000 + i).collect()
    }

    /// A running sequence of `len` tokens with `computed` of them in blocks taken from `pool`.
    fn running(pool: &mut BlockManager, len: usize, computed: usize, admitted: u64) -> Seq {
        let blocks = (0..computed.div_ceil(BS))
            .map(|_| pool.allocate().expect("the test's pool is big enough"))
            .collect();
        Seq {
            tokens: tokens(len, admitted as u32),
            computed,
            blocks,
            admitted,
        }
    }

    fn views(seqs: &[Seq]) -> Vec<Running<'_>> {
        seqs.iter()
            .map(|s| Running {
                tokens: &s.tokens,
                computed: s.computed,
                blocks: &s.blocks,
                admitted: s.admitted,
            })
            .collect()
    }

    fn limits(max_batched_tokens: usize, max_running: usize) -> Limits<'static> {
        Limits {
            max_batched_tokens,
            max_running,
            kv_groups: &[None],
        }
    }

    fn run(plan: &Plan) -> Vec<(usize, usize)> {
        plan.run.iter().map(|c| (c.seq, c.tokens)).collect()
    }

    #[test]
    fn kv_groups_take_a_page_per_block_and_a_hit_needs_only_the_window() {
        // A full group and a sliding one (window 8): pages block-major, [full, sliding].
        let groups = [None, Some(8)];
        let limits = Limits {
            kv_groups: &groups,
            ..limits(64, 8)
        };
        let mut pool = BlockManager::new(64, BS, true);
        let prompt = tokens(22, 5);
        // The full group's pages of blocks 0..5 and the sliding group's of 1..5 are cached.
        let mut parent = 0;
        for b in 0..5 {
            let chunk = &prompt[b * BS..(b + 1) * BS];
            for g in 0..2 {
                if g == 1 && b == 0 {
                    continue;
                }
                let id = pool.allocate().unwrap();
                pool.register_group(id, parent, chunk, g);
                pool.release(&[id]);
            }
            parent = chain_hash(parent, chunk);
        }
        let admitted = plan(&mut pool, &[], &[&prompt], limits);
        let a = &admitted.admit[0];
        // 5 blocks hit: the sliding group needs only blocks 3..5 (positions 13.. for the token
        // at 20); its block 0 is not needed, so its absence costs nothing.
        assert_eq!(a.cached, 20);
        assert_eq!(a.hashes.len(), 5);
        assert_eq!(a.blocks.len(), 6 * 2, "a page per block per group");
        let sliding: Vec<u32> = a.blocks.iter().skip(1).step_by(2).copied().collect();
        assert_eq!(&sliding[..3], [kiln_runtime::FREED_BLOCK; 3]);
        assert!(sliding[3..].iter().all(|&b| b != kiln_runtime::FREED_BLOCK));
        assert!(
            a.blocks
                .iter()
                .step_by(2)
                .all(|&b| b != kiln_runtime::FREED_BLOCK)
        );
        // The full group's pages of every block, the sliding group's from block 3, and the
        // two fresh pages of block 5: 5 + 2 + 2 held.
        assert_eq!(pool.available(), 64 - 9);

        // A running sequence grows by a page per group per block.
        let seqs = [running(&mut pool, 30, 22, 1)];
        let mut seq_blocks = seqs[0].blocks.clone();
        seq_blocks.extend((0..6).map(|_| pool.allocate().unwrap()));
        let view = Running {
            tokens: &seqs[0].tokens,
            computed: 22,
            blocks: &seq_blocks,
            admitted: 1,
        };
        let grown = plan(&mut pool, &[view], &[], limits);
        assert_eq!(grown.run[0].tokens, 8);
        assert_eq!(grown.run[0].new_blocks.len(), 2 * 2);
    }

    #[test]
    fn a_sliding_group_needs_room_for_its_window_not_the_whole_prompt() {
        let groups = [None, Some(8)];
        let limits = Limits {
            kv_groups: &groups,
            ..limits(8, 8)
        };
        // 40 tokens and the first generated one: 11 blocks. The full group needs 11 pages,
        // the sliding one at most (8 + 8) / 4 + 2 = 6 at once: 17, not 22.
        let prompt = tokens(40, 3);
        let mut pool = BlockManager::new(17, BS, false);
        let admitted = plan(&mut pool, &[], &[&prompt], limits);
        assert_eq!(admitted.admit.len(), 1);
        // Its first chunk of 8 tokens takes 2 blocks of each group.
        assert_eq!(admitted.admit[0].blocks.len(), 2 * 2);
        let mut pool = BlockManager::new(16, BS, false);
        assert!(plan(&mut pool, &[], &[&prompt], limits).admit.is_empty());
    }

    #[test]
    fn nothing_to_do_plans_nothing() {
        let mut pool = BlockManager::new(4, BS, true);
        let plan = plan(&mut pool, &[], &[], limits(512, 64));
        assert_eq!(plan, Plan::default());
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn decodes_run_before_prefills_oldest_first() {
        let mut pool = BlockManager::new(64, BS, false);
        let seqs = [
            running(&mut pool, 20, 4, 1), // a prefill, 16 tokens to go
            running(&mut pool, 9, 8, 3),  // decodes
            running(&mut pool, 5, 4, 2),
        ];
        let plan = plan(&mut pool, &views(&seqs), &[], limits(10, 64));
        // Both decodes, oldest first, then the prefill gets what is left of the budget.
        assert_eq!(run(&plan), vec![(2, 1), (1, 1), (0, 8)]);
        assert_eq!(plan.tokens(), 10);
        // Each gets the blocks for exactly the positions it writes: 5, 9 and 4 + 8.
        let new: Vec<usize> = plan.run.iter().map(|c| c.new_blocks.len()).collect();
        assert_eq!(new, vec![1, 1, 2]);
        assert!(plan.preempt.is_empty() && plan.idle.is_empty() && plan.admit.is_empty());
    }

    #[test]
    fn prefills_are_chunked_to_the_budget_first_come_first_served() {
        let mut pool = BlockManager::new(64, BS, false);
        let (a, b, c) = (tokens(10, 1), tokens(10, 2), tokens(3, 3));
        let plan = plan(&mut pool, &[], &[&a, &b, &c], limits(16, 64));
        let admitted: Vec<(usize, usize)> = plan
            .admit
            .iter()
            .map(|a| (a.tokens, a.blocks.len()))
            .collect();
        // The first prompt whole, 6 tokens of the second (blocks for those only), none of the
        // third: the budget is spent.
        assert_eq!(admitted, vec![(10, 3), (6, 2)]);
        assert_eq!(plan.tokens(), 16);

        // Next step the older prefill goes on before the newer one.
        let seqs = [
            Seq {
                tokens: b,
                computed: 6,
                blocks: plan.admit[1].blocks.clone(),
                admitted: 2,
            },
            Seq {
                tokens: tokens(12, 9),
                computed: 0,
                blocks: Vec::new(),
                admitted: 3,
            },
        ];
        let next = super::plan(&mut pool, &views(&seqs), &[], limits(6, 64));
        assert_eq!(run(&next), vec![(0, 4), (1, 2)]);
    }

    #[test]
    fn running_sequences_the_budget_does_not_reach_wait_and_nobody_is_admitted() {
        let mut pool = BlockManager::new(64, BS, false);
        let seqs = [
            running(&mut pool, 6, 5, 3),
            running(&mut pool, 6, 5, 1),
            running(&mut pool, 6, 5, 2),
        ];
        let waiting = tokens(3, 7);
        let plan = plan(&mut pool, &views(&seqs), &[&waiting], limits(2, 64));
        assert_eq!(run(&plan), vec![(1, 1), (2, 1)]);
        assert_eq!(plan.idle, vec![0]);
        assert!(plan.admit.is_empty());
    }

    #[test]
    fn a_zero_budget_still_feeds_one_token() {
        let mut pool = BlockManager::new(8, BS, false);
        let seqs = [running(&mut pool, 6, 5, 1), running(&mut pool, 6, 5, 2)];
        let plan = plan(&mut pool, &views(&seqs), &[], limits(0, 64));
        assert_eq!(run(&plan), vec![(0, 1)]);
        assert_eq!(plan.idle, vec![1]);
    }

    #[test]
    fn out_of_blocks_the_newest_is_preempted_itself_included() {
        let mut pool = BlockManager::new(4, BS, false);
        let seqs = [
            running(&mut pool, 5, 4, 1), // needs a second block
            running(&mut pool, 9, 8, 2), // needs a third block
            running(&mut pool, 4, 3, 3), // fits in its one block
        ];
        assert_eq!(pool.available(), 0);
        let plan = plan(&mut pool, &views(&seqs), &[], limits(512, 64));
        // The oldest takes the newest's block; the next is then the newest left, and gives up
        // its own blocks rather than take an older one's.
        assert_eq!(run(&plan), vec![(0, 1)]);
        assert_eq!(plan.run[0].new_blocks, seqs[2].blocks);
        assert_eq!(plan.preempt, vec![2, 1]);
        // Back in the queue (the second, then the third) neither fits again this step: a
        // recompute needs blocks for every token plus one.
        assert!(plan.admit.is_empty());
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn a_scheduled_sequence_is_never_preempted_even_if_newer() {
        let mut pool = BlockManager::new(4, BS, false);
        let seqs = [
            running(&mut pool, 4, 3, 1),  // decode, fits
            running(&mut pool, 12, 4, 2), // prefill, needs two more blocks
            running(&mut pool, 6, 5, 3),  // decode, fits
        ];
        let plan = plan(&mut pool, &views(&seqs), &[], limits(512, 64));
        // Both decodes were served before the prefill ran out; it is the only candidate left.
        assert_eq!(run(&plan), vec![(0, 1), (2, 1)]);
        assert_eq!(plan.preempt, vec![1]);
    }

    #[test]
    fn preemption_goes_on_until_the_chunk_fits() {
        let mut pool = BlockManager::new(3, BS, false);
        let seqs = [
            running(&mut pool, 12, 4, 1), // 8 tokens to go: two more blocks
            running(&mut pool, 10, 2, 2),
            running(&mut pool, 10, 3, 3),
        ];
        assert_eq!(pool.available(), 0);
        let plan = plan(&mut pool, &views(&seqs), &[], limits(512, 64));
        // The newest goes, then the next newest: each frees one block.
        assert_eq!(run(&plan), vec![(0, 8)]);
        assert_eq!(plan.preempt, vec![2, 1]);
        assert_eq!(
            plan.run[0].new_blocks,
            vec![seqs[2].blocks[0], seqs[1].blocks[0]]
        );
        assert!(plan.admit.is_empty());
    }

    #[test]
    fn an_admission_needs_room_for_its_whole_prompt_and_first_token() {
        let mut pool = BlockManager::new(3, BS, false);
        // 12 tokens + 1 need 4 blocks: never admitted into 3, and it holds up the queue.
        let (big, small) = (tokens(12, 1), tokens(3, 2));
        let plan = plan(&mut pool, &[], &[&big, &small], limits(512, 64));
        assert!(plan.admit.is_empty());
        assert_eq!(pool.available(), 3);
        // 11 + 1 fit exactly.
        let fits = tokens(11, 3);
        let plan = super::plan(&mut pool, &[], &[&fits, &small], limits(512, 64));
        assert_eq!(plan.admit.len(), 1);
        assert_eq!((plan.admit[0].tokens, plan.admit[0].blocks.len()), (11, 3));
        assert_eq!(pool.available(), 0);
    }

    #[test]
    fn max_running_caps_admissions() {
        let mut pool = BlockManager::new(64, BS, false);
        let seqs = [running(&mut pool, 6, 5, 1), running(&mut pool, 6, 5, 2)];
        let queue: Vec<Vec<u32>> = (0..3).map(|i| tokens(3, 10 + i)).collect();
        let waiting: Vec<&[u32]> = queue.iter().map(Vec::as_slice).collect();
        let plan = plan(&mut pool, &views(&seqs), &waiting, limits(512, 3));
        assert_eq!(plan.run.len(), 2);
        assert_eq!(plan.admit.len(), 1);
        assert_eq!(plan.admit[0].blocks.len(), 1);
    }

    /// A pool of `n` blocks in which a running sequence holds the first two blocks of `prefix`,
    /// registered in the prefix cache.
    fn cached_prefix(n: usize, prefix: &[u32]) -> (BlockManager, Seq) {
        let mut pool = BlockManager::new(n, BS, true);
        let mut seq = running(&mut pool, 9, 8, 1);
        seq.tokens = prefix.to_vec();
        seq.tokens.push(7);
        let h = pool.register(seq.blocks[0], 0, &prefix[..4]);
        pool.register(seq.blocks[1], h, &prefix[4..8]);
        (pool, seq)
    }

    #[test]
    fn a_cached_prefix_shrinks_what_an_admission_needs_and_prefills() {
        let prefix = tokens(8, 5);
        let mut prompt = prefix.clone();
        prompt.extend([1, 2, 3]);
        // Four blocks: two held by the running sequence, one it will grow into, one free.
        let (mut pool, seq) = cached_prefix(4, &prefix);
        let seqs = [seq];
        let plan = plan(&mut pool, &views(&seqs), &[&prompt], limits(512, 64));
        assert_eq!(run(&plan), vec![(0, 1)]);
        // 11 tokens + 1 need 3 blocks; two are shared from the cache, so one free block is
        // enough, and only the last 3 tokens are fed.
        let a = &plan.admit[0];
        assert_eq!(a.cached, 8);
        assert_eq!(a.tokens, 3);
        assert_eq!(&a.blocks[..2], &seqs[0].blocks[..]);
        assert_eq!(a.blocks.len(), 3);
        assert_eq!(a.hashes.len(), 2);
        assert_eq!(pool.available(), 0);

        // Without the cache the same pool cannot take it.
        let mut cold = BlockManager::new(4, BS, false);
        let seqs = [running(&mut cold, 9, 8, 1)];
        let plan = super::plan(&mut cold, &views(&seqs), &[&prompt], limits(512, 64));
        assert!(plan.admit.is_empty());
    }

    #[test]
    fn the_last_prompt_token_is_always_fed() {
        let prefix = tokens(8, 5);
        let (mut pool, seq) = cached_prefix(8, &prefix);
        let seqs = [seq];
        let plan = plan(&mut pool, &views(&seqs), &[&prefix], limits(512, 64));
        // A prompt that is exactly the cached blocks still computes its last block for logits.
        assert_eq!((plan.admit[0].cached, plan.admit[0].tokens), (4, 4));
    }

    #[test]
    fn a_refused_admission_gives_its_cache_hits_back() {
        let prefix = tokens(8, 5);
        let (mut pool, seq) = cached_prefix(3, &prefix);
        // Nobody holds the cached blocks any more: they are evictable, and count as available.
        pool.release(&seq.blocks);
        assert_eq!(pool.available(), 3);
        let mut prompt = prefix.clone();
        prompt.extend(tokens(8, 6));
        // 16 tokens + 1 need 5 blocks, 2 cached: 3 more than the one block left.
        let plan = plan(&mut pool, &[], &[&prompt], limits(512, 64));
        assert!(plan.admit.is_empty());
        assert_eq!(pool.available(), 3);
        // And the cached prefix is still there for a prompt that fits.
        let mut short = prefix.clone();
        short.push(1);
        let plan = super::plan(&mut pool, &[], &[&short], limits(512, 64));
        assert_eq!((plan.admit[0].cached, plan.admit[0].tokens), (8, 1));
    }

    #[test]
    fn a_preempted_sequence_is_first_in_line_and_may_return_at_once() {
        // Two sequences computed the same 8-token prefix; only the older one's blocks were
        // cached (the newer one's are private duplicates).
        let prefix = tokens(8, 5);
        let (mut pool, mut older) = cached_prefix(5, &prefix);
        older.blocks.push(pool.allocate().expect("room"));
        older.tokens.push(8); // 10 tokens, 9 computed: a decode in its third block
        older.computed = 9;
        let mut newer = running(&mut pool, 12, 8, 2);
        newer.tokens = prefix.clone();
        newer.tokens.extend([1, 2, 3, 4]);
        pool.register(newer.blocks[0], 0, &prefix[..4]);
        assert_eq!(pool.available(), 0);
        let later = tokens(2, 9);
        let seqs = [older, newer];
        let plan = plan(&mut pool, &views(&seqs), &[&later], limits(512, 64));
        // The newer one's last 4 tokens need a third block: none is free, so it is preempted,
        // freeing its two private blocks. Back at the head of the queue it finds its prefix in
        // the older one's cached blocks and fits: re-admitted at once, ahead of the waiting one.
        assert_eq!(run(&plan), vec![(0, 1)]);
        assert_eq!(plan.preempt, vec![1]);
        assert_eq!(plan.admit.len(), 2);
        assert_eq!(plan.admit[0].cached, 8);
        assert_eq!(plan.admit[0].tokens, 4);
        assert_eq!(&plan.admit[0].blocks[..2], &seqs[0].blocks[..2]);
        assert_eq!((plan.admit[1].cached, plan.admit[1].tokens), (0, 2));
    }

    /// xorshift64: a reproducible stream for the random workloads below.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Checks one plan against the state it was made from; `in_use` is the pool's count after.
    fn check(seqs: &[Seq], plan: &Plan, limits: Limits, in_use: usize) {
        assert!(plan.tokens() <= limits.max_batched_tokens.max(1));
        // Every running sequence is run, idle or preempted, exactly once.
        let mut seen: Vec<usize> = plan.run.iter().map(|c| c.seq).collect();
        seen.extend(&plan.idle);
        seen.extend(&plan.preempt);
        seen.sort_unstable();
        assert_eq!(seen, (0..seqs.len()).collect::<Vec<_>>());
        // Decodes before prefills, oldest first within each.
        let keys: Vec<(bool, u64)> = plan
            .run
            .iter()
            .map(|c| {
                (
                    seqs[c.seq].tokens.len() - seqs[c.seq].computed > 1,
                    seqs[c.seq].admitted,
                )
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        for c in &plan.run {
            let s = &seqs[c.seq];
            assert!(c.tokens >= 1 && c.tokens <= s.tokens.len() - s.computed);
            let held = s.blocks.len() + c.new_blocks.len();
            assert!(held >= (s.computed + c.tokens).div_ceil(BS));
        }
        // Admissions need budget left over once every running sequence is served.
        assert!(plan.admit.is_empty() || plan.idle.is_empty());
        let still_running = seqs.len() - plan.preempt.len();
        assert!(plan.admit.is_empty() || still_running + plan.admit.len() <= limits.max_running);
        for a in &plan.admit {
            assert_eq!(a.cached % BS, 0);
            assert_eq!(a.hashes.len() * BS, a.cached);
            assert!(a.tokens >= 1);
            assert_eq!(a.blocks.len(), (a.cached + a.tokens).div_ceil(BS));
        }
        // The pool holds exactly the blocks the resulting tables name: nothing leaked, nothing
        // handed out twice.
        let mut tables: Vec<u32> = plan
            .run
            .iter()
            .flat_map(|c| seqs[c.seq].blocks.iter().chain(&c.new_blocks))
            .chain(plan.idle.iter().flat_map(|&s| &seqs[s].blocks))
            .chain(plan.admit.iter().flat_map(|a| &a.blocks))
            .copied()
            .collect();
        tables.sort_unstable();
        tables.dedup();
        assert_eq!(in_use, tables.len());
    }

    #[test]
    fn random_workloads_keep_every_plan_consistent() {
        let mut preemptions = 0;
        let mut hits = 0;
        for seed in 1..=200u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let blocks = 4 + (next(&mut rng) % 24) as usize;
            let mut pool = BlockManager::new(blocks, BS, !next(&mut rng).is_multiple_of(3));
            let limits = limits(
                (next(&mut rng) % 40) as usize,
                1 + (next(&mut rng) % 8) as usize,
            );
            let mut running: Vec<Seq> = Vec::new();
            let mut waiting: VecDeque<Vec<u32>> = VecDeque::new();
            let mut tick = 0;
            for _ in 0..150 {
                for _ in 0..next(&mut rng) % 3 {
                    // A few shared prefixes, so the cache has something to find; never more
                    // than the pool can hold with the first generated token.
                    let len = 1 + (next(&mut rng) as usize) % (blocks * BS - 1);
                    let prefix = (next(&mut rng) % 3) as u32;
                    waiting.push_back(
                        (0..len as u32)
                            .map(|i| if i < 8 { prefix * 100 + i } else { 1000 + i })
                            .collect(),
                    );
                }
                let queue: Vec<&[u32]> = waiting.iter().map(Vec::as_slice).collect();
                let plan = plan(&mut pool, &views(&running), &queue, limits);
                check(&running, &plan, limits, pool.in_use());
                preemptions += plan.preempt.len();
                hits += plan.admit.iter().filter(|a| a.cached > 0).count();

                // Carry the plan out as the engine does, then "run" it.
                let mut slots: Vec<Option<Seq>> = running.drain(..).map(Some).collect();
                let mut batch = Vec::new();
                for c in plan.run {
                    let mut s = slots[c.seq].take().expect("planned once");
                    s.blocks.extend(c.new_blocks);
                    batch.push((s, c.tokens));
                }
                for &p in &plan.preempt {
                    let s = slots[p].take().expect("planned once");
                    waiting.push_front(s.tokens);
                }
                for a in plan.admit {
                    let tokens = waiting.pop_front().expect("admitted from the queue");
                    tick += 1;
                    let s = Seq {
                        tokens,
                        computed: a.cached,
                        blocks: a.blocks,
                        admitted: tick,
                    };
                    batch.push((s, a.tokens));
                }
                for (mut s, chunk) in batch {
                    let before = s.computed / BS;
                    s.computed += chunk;
                    // Newly filled blocks go to the prefix cache, chained to those before.
                    let mut parent = 0;
                    for b in 0..s.computed / BS {
                        let block = &s.tokens[b * BS..][..BS];
                        parent = if b < before {
                            chain_hash(parent, block)
                        } else {
                            pool.register(s.blocks[b], parent, block)
                        };
                    }
                    if s.computed == s.tokens.len() {
                        s.tokens.push(7);
                        // Finished: at the pool's limit, or by chance.
                        if s.tokens.len() + 1 > blocks * BS || next(&mut rng).is_multiple_of(8) {
                            pool.release(&s.blocks);
                            continue;
                        }
                    }
                    running.push(s);
                }
                running.extend(plan.idle.iter().filter_map(|&s| slots[s].take()));
            }
        }
        // The workloads did exercise preemption and the prefix cache.
        assert!(preemptions > 50, "{preemptions}");
        assert!(hits > 50, "{hits}");
    }
}
