//! Turning one position's logits into a token: logit bias, repetition/presence/frequency
//! penalties, temperature, top-k, top-p, min-p and a seeded per-sequence RNG; and the logprobs
//! OpenAI reports.

use std::collections::HashMap;

/// How one request samples. Field meanings and defaults are OpenAI's (and vLLM's for the
/// extensions `top_k`, `min_p`, `repetition_penalty`).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// `None` keeps every token.
    pub top_k: Option<usize>,
    pub min_p: f32,
    /// Subtracted once from every token already generated.
    pub presence_penalty: f32,
    /// Subtracted once per occurrence in the generated text.
    pub frequency_penalty: f32,
    /// Hugging Face's multiplicative penalty over the prompt and the generated text; 1 is off.
    pub repetition_penalty: f32,
    /// The same seed gives the same text, whatever else the engine is running.
    pub seed: Option<u64>,
    /// Added to the logits of the given ids before anything else.
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }
}

/// xoshiro256**: small, fast and fully determined by its seed, so a seeded request replays
/// exactly on any machine.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // SplitMix64 spreads any seed (even 0) over the whole state.
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// A seed nobody chose: time and a process-wide counter.
    pub(crate) fn entropy_seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.finish()
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The log-probability of one token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    /// The token's text on its own (may be a partial character, shown as U+FFFD).
    pub text: String,
    pub logprob: f32,
}

/// What OpenAI's `logprobs` reports for one generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct Logprobs {
    pub chosen: TokenLogprob,
    /// The most likely tokens, best first (`top_logprobs` of them).
    pub top: Vec<TokenLogprob>,
}

/// Log-softmax of the model's raw logits at `id`, and the `top` best ids with theirs. These are
/// the model's own probabilities (before penalties and temperature), as OpenAI reports them.
pub(crate) fn logprobs(logits: &[f32], id: u32, top: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_z = max + sum.ln() as f32;
    let chosen = logits
        .get(id as usize)
        .map_or(f32::NEG_INFINITY, |&l| l - log_z);
    let mut best = Vec::new();
    if top > 0 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = top.min(idx.len());
        let by_logit_desc = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, by_logit_desc);
            idx.truncate(k);
        }
        idx.sort_by(by_logit_desc);
        best = idx
            .into_iter()
            .map(|i| (i, logits[i as usize] - log_z))
            .collect();
    }
    (chosen, best)
}

/// Picks the next token. `prompt` and `generated` feed the penalties; `logits` is consumed as
/// scratch space.
pub(crate) fn sample(
    logits: &mut [f32],
    params: &SamplingParams,
    prompt: &[u32],
    generated: &[u32],
    rng: &mut Rng,
) -> u32 {
    for &(id, bias) in &params.logit_bias {
        if let Some(l) = logits.get_mut(id as usize) {
            *l += bias;
        }
    }
    if params.repetition_penalty != 1.0 {
        let mut seen: Vec<u32> = prompt.iter().chain(generated).copied().collect();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l > 0.0 {
                    *l / params.repetition_penalty
                } else {
                    *l * params.repetition_penalty
                };
            }
        }
    }
    if params.presence_penalty != 0.0 || params.frequency_penalty != 0.0 {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &id in generated {
            *counts.entry(id).or_default() += 1;
        }
        for (id, count) in counts {
            if let Some(l) = logits.get_mut(id as usize) {
                *l -= params.presence_penalty + params.frequency_penalty * count as f32;
            }
        }
    }
    if params.temperature <= 0.0 || params.top_k == Some(1) {
        return argmax(logits);
    }
    for l in logits.iter_mut() {
        *l /= params.temperature;
    }
    // Candidates as (id, probability), best first once any truncation needs an order.
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, &l)| (i as u32, (l - max).exp()))
        .collect();
    if cand.is_empty() {
        return argmax(logits);
    }
    let desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if let Some(k) = params.top_k.filter(|&k| k > 0 && k < cand.len()) {
        cand.select_nth_unstable_by(k - 1, desc);
        cand.truncate(k);
    }
    let truncating = params.top_p < 1.0 || params.min_p > 0.0;
    if truncating {
        cand.sort_by(desc);
        let total: f32 = cand.iter().map(|c| c.1).sum();
        if params.top_p < 1.0 {
            // Keep the smallest set whose mass reaches top_p (always at least one token).
            let mut acc = 0.0;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                acc += c.1 / total;
                if acc >= params.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep.max(1));
        }
        if params.min_p > 0.0 {
            let threshold = cand.first().map_or(0.0, |c| c.1) * params.min_p;
            cand.retain(|c| c.1 >= threshold);
        }
    }
    let total: f64 = cand.iter().map(|c| f64::from(c.1)).sum();
    let mut r = rng.next_f64() * total;
    for &(id, p) in &cand {
        r -= f64::from(p);
        if r < 0.0 {
            return id;
        }
    }
    cand.last().map_or(0, |c| c.0)
}

/// The best id; ties go to the lowest id, so greedy output never depends on scan order.
pub(crate) fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(logits: &[f32], params: &SamplingParams, generated: &[u32], seed: u64) -> u32 {
        sample(
            &mut logits.to_vec(),
            params,
            &[],
            generated,
            &mut Rng::new(seed),
        )
    }

    #[test]
    fn greedy_takes_the_max_and_breaks_ties_low() {
        let p = SamplingParams::greedy();
        assert_eq!(run(&[0.0, 3.0, 1.0], &p, &[], 0), 1);
        assert_eq!(run(&[2.0, 2.0, 1.0], &p, &[], 0), 0);
    }

    #[test]
    fn logit_bias_can_ban_or_force_a_token() {
        let mut p = SamplingParams::greedy();
        p.logit_bias = vec![(1, -100.0)];
        assert_eq!(run(&[0.0, 3.0, 1.0], &p, &[], 0), 2);
        p.logit_bias = vec![(0, 100.0)];
        p.temperature = 1.0;
        for seed in 0..20 {
            assert_eq!(run(&[0.0, 3.0, 1.0], &p, &[], seed), 0);
        }
    }

    #[test]
    fn penalties_follow_their_definitions() {
        let mut p = SamplingParams::greedy();
        p.presence_penalty = 2.5;
        // Token 1 was generated: 3 - 2.5 < 1.
        assert_eq!(run(&[0.0, 3.0, 1.0], &p, &[1], 0), 2);
        let mut p = SamplingParams::greedy();
        p.frequency_penalty = 1.0;
        assert_eq!(run(&[0.0, 3.0, 1.5], &p, &[1], 0), 1);
        assert_eq!(run(&[0.0, 3.0, 1.5], &p, &[1, 1], 0), 2);
        let mut p = SamplingParams::greedy();
        p.repetition_penalty = 2.0;
        // 3 / 2 = 1.5 < 2; a negative logit is multiplied, pushing it further down.
        assert_eq!(run(&[0.0, 3.0, 2.0], &p, &[1], 0), 2);
    }

    #[test]
    fn seeds_replay_and_differ() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let p = SamplingParams::default();
        let a: Vec<u32> = (0..20).map(|s| run(&logits, &p, &[], s)).collect();
        let b: Vec<u32> = (0..20).map(|s| run(&logits, &p, &[], s)).collect();
        assert_eq!(a, b);
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 3, "{a:?}");
    }

    #[test]
    fn top_k_top_p_and_min_p_truncate() {
        let logits = [5.0, 4.9, 0.0, -1.0];
        let mut p = SamplingParams {
            top_k: Some(2),
            ..SamplingParams::default()
        };
        for s in 0..50 {
            assert!(run(&logits, &p, &[], s) < 2);
        }
        p.top_k = None;
        p.top_p = 0.1;
        for s in 0..50 {
            assert_eq!(run(&logits, &p, &[], s), 0);
        }
        p.top_p = 1.0;
        p.min_p = 0.5;
        for s in 0..50 {
            assert!(run(&logits, &p, &[], s) < 2);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // p(0) = 0.75 at temperature 1.
        let logits = [3f32.ln(), 0.0];
        let p = SamplingParams::default();
        let mut rng = Rng::new(7);
        let zeros = (0..4000)
            .filter(|_| sample(&mut logits.to_vec(), &p, &[], &[], &mut rng) == 0)
            .count();
        assert!((2850..3150).contains(&zeros), "{zeros}");
    }

    #[test]
    fn logprobs_are_a_log_softmax_with_sorted_top() {
        let logits = [1.0f32, 3.0, 2.0];
        let (chosen, top) = logprobs(&logits, 1, 2);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((chosen - (3f32.exp() / z).ln()).abs() < 1e-6);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].0, 1);
        assert_eq!(top[1].0, 2);
        assert!((top[0].1 - chosen).abs() < 1e-7);
        let (_, none) = logprobs(&logits, 1, 0);
        assert!(none.is_empty());
    }
}
