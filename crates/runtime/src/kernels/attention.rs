//! Attention's inner loops on the CPU, written once over [`Lanes`]: one query head's scores
//! against a run of keys, their softmax, and the weighted sum of the values. Every lane op is
//! one IEEE operation, so every path gives the scalar path's bits (as the matmul kernels do).

use std::ops::Range;

use super::lanes::Lanes;
use super::{Isa, OnLanes};

/// One query head against a run of its context: `q` (`head_dim` values, already scaled) and
/// the context's keys and values gathered as rows of `width` (all kv heads), this head's at
/// `offset` in each row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query<'a> {
    pub(crate) q: &'a [f32],
    pub(crate) keys: &'a [f32],
    pub(crate) values: &'a [f32],
    pub(crate) rows: (usize, usize),
    pub(crate) width: usize,
    pub(crate) offset: usize,
}

impl Isa {
    /// The attention of `query` over its run of rows, added to `out` (`head_dim` values);
    /// `scores` is scratch.
    pub(crate) fn attend(self, query: Query<'_>, scores: &mut Vec<f32>, out: &mut [f32]) {
        self.dispatch(Attend { query, scores, out });
    }
}

/// [`Query::attend`] with its buffers, as [`Isa::dispatch`] runs it.
struct Attend<'a, 'b> {
    query: Query<'a>,
    scores: &'b mut Vec<f32>,
    out: &'b mut [f32],
}

impl OnLanes for Attend<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lanes>(self, l: L) {
        self.query.attend(l, self.scores, self.out);
    }
}

impl Query<'_> {
    fn run(&self) -> Range<usize> {
        self.rows.0..self.rows.1
    }

    /// Context row `j` of this head in `rows` (keys or values).
    #[inline(always)]
    fn row<'r>(&self, rows: &'r [f32], j: usize, n: usize) -> &'r [f32] {
        let at = j * self.width + self.offset;
        rows.get(at..at + n).unwrap_or_default()
    }

    /// Scores (`q·k` in [`dot`]'s order), the softmax as burn computes it (`exp(s - max)`
    /// over their sum), and each value row added to `out` with its weight (one fused
    /// multiply-add per value).
    #[inline(always)]
    fn attend<L: Lanes>(&self, l: L, scores: &mut Vec<f32>, out: &mut [f32]) {
        let n = out.len();
        scores.clear();
        scores.resize(self.rows.1.saturating_sub(self.rows.0), 0.0);
        let mut max = f32::NEG_INFINITY;
        for (s, j) in scores.iter_mut().zip(self.run()) {
            *s = dot(l, self.q, self.row(self.keys, j, n));
            max = max.max(*s);
        }
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        for s in scores.iter_mut() {
            *s /= sum;
        }
        // Each output value sums its weighted values in key order, whichever way the loops
        // are nested: here a stretch of up to eight 16-value chunks stays in registers while
        // every key goes through it.
        let (o16, o_tail) = out.as_chunks_mut::<16>();
        let mut c0 = 0;
        for stretch in o16.chunks_mut(8) {
            let len = stretch.len();
            match stretch {
                [a, b, c, d, e, f, g, h] => {
                    self.weigh::<L, 8>(l, scores, c0, [a, b, c, d, e, f, g, h]);
                }
                [a, b, c, d] => self.weigh::<L, 4>(l, scores, c0, [a, b, c, d]),
                rest => {
                    for (i, o) in rest.iter_mut().enumerate() {
                        self.weigh::<L, 1>(l, scores, c0 + i, [o]);
                    }
                }
            }
            c0 += len;
        }
        let done = c0 * 16;
        for (t, o) in o_tail.iter_mut().enumerate() {
            for (&p, j) in scores.iter().zip(self.run()) {
                let v = self.row(self.values, j, n).get(done + t).copied();
                *o = p.mul_add(v.unwrap_or(0.0), *o);
            }
        }
    }

    /// Adds `Σⱼ pⱼ vⱼ` to `C` chunks of the output (chunk `c0` onwards of the head), kept in
    /// registers over the keys.
    #[inline(always)]
    fn weigh<L: Lanes, const C: usize>(
        &self,
        l: L,
        weights: &[f32],
        c0: usize,
        out: [&mut [f32; 16]; C],
    ) {
        let n = (c0 + C) * 16;
        let mut acc = out.each_ref().map(|o| l.load(o));
        for (&p, j) in weights.iter().zip(self.run()) {
            let row = self.row(self.values, j, n);
            let (chunks, _) = row.as_chunks::<16>();
            let p = l.splat(p);
            for (acc, v) in acc.iter_mut().zip(chunks.iter().skip(c0)) {
                *acc = l.fma(p, l.load(v), *acc);
            }
        }
        for (o, acc) in out.into_iter().zip(acc) {
            *o = l.store(acc);
        }
    }
}

/// `a·b`: two accumulators over alternate 16-value chunks (fused multiply-adds), their 32
/// lanes summed by [`Lanes::sum`]'s tree, then the tail past the last whole chunk in order.
#[inline(always)]
fn dot<L: Lanes>(l: L, a: &[f32], b: &[f32]) -> f32 {
    let (a16, a_tail) = a.as_chunks::<16>();
    let (b16, b_tail) = b.as_chunks::<16>();
    let zero = l.splat(0.0);
    let (mut even, mut odd) = (zero, zero);
    let mut pairs = a16.chunks_exact(2).zip(b16.chunks_exact(2));
    for (x, y) in pairs.by_ref() {
        if let ([x0, x1], [y0, y1]) = (x, y) {
            even = l.fma(l.load(x0), l.load(y0), even);
            odd = l.fma(l.load(x1), l.load(y1), odd);
        }
    }
    if let (Some(x), Some(y)) = (
        a16.chunks_exact(2).remainder().first(),
        b16.chunks_exact(2).remainder().first(),
    ) {
        even = l.fma(l.load(x), l.load(y), even);
    }
    a_tail
        .iter()
        .zip(b_tail)
        .fold(l.sum(even, odd), |s, (x, y)| x.mul_add(*y, s))
}

#[cfg(test)]
mod tests {
    use super::super::IsaImpl;
    use super::*;

    /// Every path gives the scalar path's bits, head sizes with and without tails.
    #[test]
    fn every_path_attends_with_the_scalar_bits() {
        let values = |n: usize, seed: f32| -> Vec<f32> {
            (0..n)
                .map(|i| (i as f32 * 0.37 + seed).sin() * 1.7)
                .collect()
        };
        for head_dim in [64, 20, 48, 7] {
            let (width, context) = (3 * head_dim, 9);
            let keys = values(width * context, 0.1);
            let vals = values(width * context, 0.2);
            let q = values(head_dim, 0.3);
            let query = Query {
                q: &q,
                keys: &keys,
                values: &vals,
                rows: (2, 9),
                width,
                offset: head_dim,
            };
            let mut expected = vec![0.5; head_dim];
            Isa(IsaImpl::Scalar).attend(query, &mut Vec::new(), &mut expected);
            for isa in Isa::available() {
                let mut got = vec![0.5; head_dim];
                isa.attend(query, &mut Vec::new(), &mut got);
                assert_eq!(got, expected, "{:?}, head_dim {head_dim}", isa.kind());
            }
        }
    }
}
