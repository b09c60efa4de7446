//! Making inputs: a seeded generator and a mutator over byte strings (bit flips, interesting
//! values, inserted and deleted runs, copies within an input, splices from another seed, and
//! dictionary words such as JSON punctuation and control-token strings).
//!
//! Hand-written rather than taken from `rand`: the sequence of inputs for a seed must never
//! change under a dependency update, so a finding's seed and index reproduce it for good.

use serde_json::{Value, json};

/// SplitMix64: small, fast, and fixed forever.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Values that often sit at the edge of a parser's checks.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    7,
    8,
    16,
    64,
    127,
    128,
    255,
    256,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// How to change an input; `dictionary` holds words worth inserting, `region` bounds where
/// byte-level changes land (`None`: anywhere), so a large file's header gets the attention;
/// `json_keys`, when set, makes half the mutants of JSON inputs structural (a value replaced,
/// a key removed or added from these names, an array grown or shrunk) so they still parse.
#[derive(Debug, Clone)]
pub(crate) struct Mutator {
    pub(crate) dictionary: Vec<Vec<u8>>,
    pub(crate) region: Option<usize>,
    pub(crate) max_len: usize,
    pub(crate) json_keys: Option<Vec<&'static str>>,
}

impl Mutator {
    /// A mutant of `input` (one to several changes), `other` a second seed to splice from.
    pub(crate) fn mutate(&self, rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
        if let Some(keys) = &self.json_keys
            && rng.chance(2)
            && let Ok(mut value) = serde_json::from_slice::<Value>(input)
        {
            let donor = serde_json::from_slice::<Value>(other).ok();
            for _ in 0..1 + rng.below(3) {
                mutate_json(rng, &mut value, keys, donor.as_ref());
            }
            let mut out = value.to_string().into_bytes();
            out.truncate(self.max_len);
            return out;
        }
        let mut out = input.to_vec();
        let changes = 1 + rng.below(4);
        for _ in 0..changes {
            self.change(rng, &mut out, other);
        }
        out.truncate(self.max_len);
        out
    }

    fn position(&self, rng: &mut Rng, len: usize) -> usize {
        let bound = self.region.map_or(len, |r| r.min(len));
        if bound == 0 { 0 } else { rng.below(bound) }
    }

    fn change(&self, rng: &mut Rng, out: &mut Vec<u8>, other: &[u8]) {
        let len = out.len();
        match rng.below(9) {
            // Flip a bit.
            0 if len > 0 => {
                let i = self.position(rng, len);
                out[i] ^= 1 << rng.below(8);
            }
            // A random byte.
            1 if len > 0 => {
                let i = self.position(rng, len);
                out[i] = rng.next() as u8;
            }
            // An interesting little-endian integer of 1, 2, 4 or 8 bytes.
            2 if len > 0 => {
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1, 2, 4, 8][rng.below(4)];
                let i = self.position(rng, len);
                for (k, b) in value.to_le_bytes().iter().take(width).enumerate() {
                    if let Some(slot) = out.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            // Delete a run.
            3 if len > 0 => {
                let i = self.position(rng, len);
                let n = 1 + rng.below((len - i).min(64));
                out.drain(i..i + n);
            }
            // Duplicate a run in place.
            4 if len > 0 => {
                let i = self.position(rng, len);
                let n = 1 + rng.below((len - i).min(64));
                let run: Vec<u8> = out[i..i + n].to_vec();
                let at = self.position(rng, len);
                out.splice(at..at, run);
            }
            // Random bytes inserted.
            5 => {
                let at = self.position(rng, len + 1);
                let n = 1 + rng.below(16);
                let run: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, run);
            }
            // A dictionary word inserted or written over.
            6 | 7 if !self.dictionary.is_empty() => {
                let word = &self.dictionary[rng.below(self.dictionary.len())];
                let at = self.position(rng, len + 1);
                if rng.chance(2) {
                    out.splice(at..at, word.iter().copied());
                } else {
                    let end = (at + word.len()).min(len);
                    out.splice(at..end, word.iter().copied());
                }
            }
            // Splice: the head of this input, the tail of another.
            _ if !other.is_empty() => {
                let cut = self.position(rng, len + 1);
                let from = rng.below(other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
}

/// JSON values that sit at the edge of validation.
fn interesting_json(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(1.5),
        5 => json!(1e300),
        6 => json!(u64::MAX),
        7 => json!(i64::MIN),
        8 => json!(""),
        9 => json!("x".repeat(1 + rng.below(300))),
        10 => json!([]),
        11 => json!({}),
        12 => json!("<|im_start|>"),
        13 => json!([1, "a", null]),
        14 => json!(-0.0),
        _ => json!(2),
    }
}

/// Counts a value's nodes (itself and everything inside).
fn nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(nodes).sum(),
        Value::Object(map) => map.values().map(nodes).sum(),
        _ => 0,
    }
}

/// The `k`-th node in pre-order.
fn node_mut(v: &mut Value, k: usize) -> Option<&mut Value> {
    if k == 0 {
        return Some(v);
    }
    let mut k = k - 1;
    let children: Vec<&mut Value> = match v {
        Value::Array(items) => items.iter_mut().collect(),
        Value::Object(map) => map.values_mut().collect(),
        _ => return None,
    };
    for child in children {
        let n = nodes(child);
        if k < n {
            return node_mut(child, k);
        }
        k -= n;
    }
    None
}

/// One structural change at a random node of `v`.
fn mutate_json(rng: &mut Rng, v: &mut Value, keys: &[&'static str], donor: Option<&Value>) {
    let total = nodes(v);
    let k = rng.below(total);
    // A subtree of the other input, to graft.
    let graft = donor.and_then(|d| {
        let mut d = d.clone();
        let n = nodes(&d);
        let j = rng.below(n);
        node_mut(&mut d, j).map(|x| x.clone())
    });
    let Some(node) = node_mut(v, k) else {
        return;
    };
    match (rng.below(6), node) {
        (0, Value::Object(map)) if !map.is_empty() => {
            let i = rng.below(map.len());
            if let Some(key) = map.keys().nth(i).cloned() {
                map.remove(&key);
            }
        }
        (1, Value::Object(map)) if !keys.is_empty() => {
            let key = keys[rng.below(keys.len())];
            let value = match &graft {
                Some(g) if rng.chance(2) => g.clone(),
                _ => interesting_json(rng),
            };
            map.insert(key.to_string(), value);
        }
        (2, Value::Array(items)) => {
            if !items.is_empty() && rng.chance(2) {
                let i = rng.below(items.len());
                items.remove(i);
            } else {
                let item = match (&graft, items.first()) {
                    (Some(g), _) if rng.chance(2) => g.clone(),
                    (_, Some(first)) => first.clone(),
                    _ => interesting_json(rng),
                };
                let most = if rng.chance(8) { 200 } else { 2 };
                for _ in 0..1 + rng.below(most) {
                    items.push(item.clone());
                }
            }
        }
        (3, node) if graft.is_some() => {
            if let Some(g) = graft {
                *node = g;
            }
        }
        (_, node) => *node = interesting_json(rng),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_inputs_forever() {
        let mut rng = Rng::new(42);
        // Fixed: changing the generator would lose every recorded finding's reproduction.
        assert_eq!(rng.next(), 0xbdd7_3226_2feb_6e95);
        let m = Mutator {
            dictionary: vec![b"{}".to_vec()],
            region: None,
            max_len: 1 << 20,
            json_keys: None,
        };
        let a = m.mutate(&mut Rng::new(7), b"hello world", b"other");
        let b = m.mutate(&mut Rng::new(7), b"hello world", b"other");
        assert_eq!(a, b);
        assert_ne!(a, b"hello world".to_vec());
    }

    #[test]
    fn structural_mutants_of_json_still_parse() {
        let m = Mutator {
            dictionary: Vec::new(),
            region: None,
            max_len: 1 << 20,
            json_keys: Some(vec!["n", "stop"]),
        };
        let seed = br#"{"messages": [{"role": "user", "content": "hi"}], "n": 2}"#;
        let mut rng = Rng::new(3);
        let parsed = (0..200)
            .filter(|_| {
                let out = m.mutate(&mut rng, seed, seed);
                serde_json::from_slice::<Value>(&out).is_ok()
            })
            .count();
        // Half the mutants are structural (all parse); byte-level ones mostly do not.
        assert!(parsed > 80, "{parsed} of 200 parsed");
    }
}
