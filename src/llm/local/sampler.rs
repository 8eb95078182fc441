//! Choosing the next token: greedy, or temperature with nucleus (top-p) sampling
//! from a seeded generator; an optional mask forbids tokens (constrained decoding).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How to pick tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass, in (0, 1]; 1 keeps every token.
    pub top_p: f32,
    /// Seed of the generator, so a run can be repeated.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, seed: 299_792_458 }
    }
}

/// Picks tokens and reports how likely the model thought each pick was.
pub struct Sampler {
    sampling: Sampling,
    rng: StdRng,
}

/// One picked token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pick {
    /// The token.
    pub token: u32,
    /// Its natural-log probability under the model's own distribution (temperature 1,
    /// before any mask): the confidence the router reads.
    pub logprob: f32,
}

impl Sampler {
    /// A sampler for `sampling`.
    pub fn new(sampling: Sampling) -> Sampler {
        Sampler { sampling, rng: StdRng::seed_from_u64(sampling.seed) }
    }

    /// Picks from `logits`; `allowed`, when given, says which tokens may be picked.
    /// Returns `None` when the mask allows nothing.
    pub fn pick(&mut self, logits: &[f32], allowed: Option<&[bool]>) -> Option<Pick> {
        let ok = |i: usize| allowed.is_none_or(|a| a.get(i).copied().unwrap_or(false));
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_z = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
        let token = if self.sampling.temperature <= 0.0 {
            let mut best: Option<(usize, f32)> = None;
            for (i, &l) in logits.iter().enumerate() {
                if ok(i) && best.is_none_or(|(_, b)| l > b) {
                    best = Some((i, l));
                }
            }
            best?.0
        } else {
            let t = self.sampling.temperature;
            let mut cand: Vec<(usize, f32)> =
                logits.iter().enumerate().filter(|&(i, _)| ok(i)).map(|(i, &l)| (i, ((l - max) / t).exp())).collect();
            if cand.is_empty() {
                return None;
            }
            cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
            let total: f32 = cand.iter().map(|c| c.1).sum();
            let mut keep = cand.len();
            let mut acc = 0.0;
            for (n, c) in cand.iter().enumerate() {
                acc += c.1 / total;
                if acc >= self.sampling.top_p {
                    keep = n + 1;
                    break;
                }
            }
            cand.truncate(keep);
            let kept: f32 = cand.iter().map(|c| c.1).sum();
            let mut r = self.rng.random::<f32>() * kept;
            let mut chosen = cand[cand.len() - 1].0;
            for c in &cand {
                if r < c.1 {
                    chosen = c.0;
                    break;
                }
                r -= c.1;
            }
            chosen
        };
        Some(Pick { token: token as u32, logprob: logits[token] - log_z })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_largest_and_reports_its_log_probability() {
        let mut s = Sampler::new(Sampling::default());
        let p = s.pick(&[0.0, 2.0, 1.0], None).expect("a pick");
        assert_eq!(p.token, 1);
        let z = (0f32.exp() + 2f32.exp() + 1f32.exp()).ln();
        assert!((p.logprob - (2.0 - z)).abs() < 1e-5);
    }

    #[test]
    fn the_mask_is_obeyed_and_an_empty_mask_picks_nothing() {
        let mut s = Sampler::new(Sampling { temperature: 0.8, top_p: 0.9, seed: 7 });
        for _ in 0..200 {
            let p = s.pick(&[5.0, 0.0, 1.0, 4.0], Some(&[false, true, true, false])).expect("a pick");
            assert!(p.token == 1 || p.token == 2);
        }
        assert!(s.pick(&[1.0, 2.0], Some(&[false, false])).is_none());
    }

    #[test]
    fn the_same_seed_repeats_and_top_p_cuts_the_tail() {
        let logits: Vec<f32> = (0..50).map(|i| -(i as f32) * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(Sampling { temperature: 1.0, top_p: 0.5, seed });
            (0..100).map(|_| s.pick(&logits, None).map(|p| p.token)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        // With p = 0.5 only the first few tokens (mass of e^{-0.3 i}) can come out.
        assert!(run(2).iter().flatten().all(|&t| t <= 3));
    }
}
