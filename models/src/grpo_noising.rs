//! Which completion tokens UniGRPO masks at each inner gradient step (spec §5.1).
//!
//! **Structured noising** (the paper's, the default): the prompt is never masked. For the μ
//! inner steps over one rollout batch, each completion draws `r₁ ~ U(0,1)` once and gets the
//! timesteps `t₁ = ⌊r₁·T⌋`, `tₙ = ⌊(n−1)/(μ−1)·(T − t₁) + t₁⌋` (n = 2…μ, uniformly spaced from t₁
//! up to T), T = 1000; inner step n masks the ratio `pₙ = tₙ/T` of its completion tokens.
//!
//! The paper's worked example (start 100, five iterations → 300, 500, 700, 900) does not match
//! its own formula, which gives 100, 325, 550, 775, 1000. We follow the formula: it is the one
//! stated as the method, it reaches the fully masked state T (the example never does), and it
//! is what "uniformly spaced between t₁ and T" says; the example reads as an illustration with
//! rounded numbers.
//!
//! A ratio becomes a count: exactly `k = clamp(round(p·A), 1, A)` of the A completion tokens
//! are masked, a uniformly random subset (ranks of Philox scores). A count rather than an
//! i.i.d. coin per token makes the ratio exact and never leaves a completion with nothing
//! masked (eq. 4 averages over the masked tokens). The mask positions are keyed by the gradient
//! step, so every gradient step sees a fresh mask; `r₁` is keyed by the rollout.
//!
//! The alternatives, as options:
//! - [`Noising::D1`] (d1's diffu-GRPO): every completion token masked, and each prompt token
//!   with probability 0.15 (the only scheme here that masks the prompt — in the input only: the
//!   objective scores completion tokens, [`Masks::scored`]);
//! - [`Noising::Random`] (dLLM-RL's random masking): per gradient step and completion a ratio
//!   `t ~ U(lo, hi)` (0.1, 0.9 there), each completion token masked with probability t (at
//!   least one).

use mmada_ir::philox;
use mmada_ir::RngDist;

/// T: the number of diffusion timesteps the schedule is written in.
pub const T_TOTAL: usize = 1000;

/// Philox streams of the draws (distinct from the samplers' and the pretraining masks').
const STREAM_R1: u32 = 20;
const STREAM_SCORE: u32 = 21;
const STREAM_RATIO: u32 = 22;
const STREAM_PROMPT: u32 = 23;

/// How completions are masked for the objective.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "scheme")]
pub enum Noising {
    /// The paper's structured noising (the default).
    Structured,
    /// d1: all completion tokens, and prompt tokens with probability `prompt_p`.
    D1 {
        /// Masking probability of a prompt token (0.15 in d1).
        prompt_p: f64,
    },
    /// dLLM-RL: a ratio `U(lo, hi)` per gradient step and completion, i.i.d. per token.
    Random {
        /// Lower bound of the ratio (0.1 in dLLM-RL).
        lo: f64,
        /// Upper bound of the ratio (0.9 in dLLM-RL).
        hi: f64,
    },
}

impl Noising {
    /// Parses `structured`, `d1` or `random` (with the reference values).
    pub fn parse(s: &str) -> Result<Noising, String> {
        match s {
            "structured" => Ok(Noising::Structured),
            "d1" => Ok(Noising::D1 { prompt_p: 0.15 }),
            "random" => Ok(Noising::Random { lo: 0.1, hi: 0.9 }),
            _ => Err(format!(
                "--noising must be structured, d1 or random, got '{s}'"
            )),
        }
    }
}

/// The timesteps `t₁ … t_μ` of structured noising for `r₁` in [0, 1): `t₁ = ⌊r₁T⌋`, then
/// `tₙ = ⌊(n−1)/(μ−1)·(T − t₁) + t₁⌋`. For μ = 1 only `t₁`.
pub fn structured_timesteps(r1: f64, mu: usize, t_total: usize) -> Vec<usize> {
    let t = t_total as f64;
    let t1 = (r1 * t).floor();
    (1..=mu)
        .map(|n| {
            if n == 1 || mu == 1 {
                t1 as usize
            } else {
                let frac = (n - 1) as f64 / (mu - 1) as f64;
                (frac * (t - t1) + t1).floor() as usize
            }
        })
        .collect()
}

/// The number of tokens a ratio masks among `a`: `clamp(round(p·a), 1, a)` (0 when `a` is 0).
pub fn masked_count(p: f64, a: usize) -> usize {
    if a == 0 {
        return 0;
    }
    ((p * a as f64).round() as usize).clamp(1, a)
}

fn uniform(seed: u64, offset: i64, stream: u32, i: u64) -> f64 {
    philox::sample(RngDist::Uniform, seed as i64, offset, stream, i) as f64
}

/// `r₁` of completion `row` of rollout batch `rollout`.
pub fn r1(seed: u64, rollout: usize, row: usize) -> f64 {
    uniform(seed, (rollout as i64) << 32, STREAM_R1, row as u64)
}

/// The masks of one gradient step, row after row (`Σ len` entries each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Masks {
    /// Positions replaced by `[MASK]` in the input.
    pub input: Vec<bool>,
    /// The masked completion positions the objective reads (within `input`): d1's masked
    /// prompt tokens and the always-masked padding after a trimmed completion are not scored.
    pub scored: Vec<bool>,
}

/// One row of a batch to mask: its length, where its completion starts and ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowSpan {
    /// Tokens before the completion (never masked by the structured and random schemes).
    pub prompt_len: usize,
    /// Where the completion ends (≤ `len`): the positions after it are padding, masked in the
    /// input (as dLLM-RL does) and never scored (`len`: the whole generated span is the
    /// completion, d1's choice).
    pub end: usize,
    /// Tokens in the row.
    pub len: usize,
}

impl RowSpan {
    /// A row whose completion runs to its end.
    pub fn full(prompt_len: usize, len: usize) -> RowSpan {
        RowSpan {
            prompt_len,
            end: len,
            len,
        }
    }
}

/// The masks of one gradient step. `rollout` keys `r₁`, `inner` (0-based, < μ) picks the
/// timestep and `grad_step` keys the positions.
pub fn masks(
    scheme: Noising,
    seed: u64,
    rollout: usize,
    inner: usize,
    mu: usize,
    grad_step: usize,
    rows: &[RowSpan],
) -> Masks {
    let off = (grad_step as i64) << 32;
    let mut out = Vec::new();
    let mut base = 0u64;
    for (b, r) in rows.iter().enumerate() {
        let end = r.end.min(r.len);
        let start = r.prompt_len.min(end);
        let a = end - start;
        let idx = |i: usize| base + i as u64;
        match scheme {
            Noising::Structured => {
                let t = structured_timesteps(r1(seed, rollout, b), mu, T_TOTAL);
                let p = t[inner.min(t.len() - 1)] as f64 / T_TOTAL as f64;
                let k = masked_count(p, a);
                out.extend(std::iter::repeat_n(false, start));
                out.extend(lowest_k(seed, off, start, a, k, &idx));
            }
            Noising::D1 { prompt_p } => {
                for i in 0..start {
                    out.push(uniform(seed, off, STREAM_PROMPT, idx(i)) < prompt_p);
                }
                out.extend(std::iter::repeat_n(true, a));
            }
            Noising::Random { lo, hi } => {
                let t = lo + (hi - lo) * uniform(seed, off, STREAM_RATIO, b as u64);
                out.extend(std::iter::repeat_n(false, start));
                let mut m: Vec<bool> = (start..end)
                    .map(|i| uniform(seed, off, STREAM_SCORE, idx(i)) < t)
                    .collect();
                if a > 0 && !m.iter().any(|&x| x) {
                    // At least one: the position with the smallest score.
                    let best = (0..a)
                        .min_by(|&i, &j| {
                            let si = uniform(seed, off, STREAM_SCORE, idx(start + i));
                            let sj = uniform(seed, off, STREAM_SCORE, idx(start + j));
                            si.total_cmp(&sj)
                        })
                        .unwrap_or(0);
                    m[best] = true;
                }
                out.extend(m);
            }
        }
        out.extend(std::iter::repeat_n(false, r.len - end));
        base += r.len as u64;
    }
    // `out` holds the drawn positions (completion, and d1's prompt tokens). Scored: the drawn
    // completion tokens; input: the drawn positions and the padding after each completion.
    let (completion, padding) = regions(rows);
    let scored = out.iter().zip(&completion).map(|(&m, &c)| m && c).collect();
    let input = out.iter().zip(&padding).map(|(&m, &p)| m || p).collect();
    Masks { input, scored }
}

/// Per position of every row: whether it is in the completion (`prompt_len..end`) and whether
/// it is padding after it (`end..len`).
fn regions(rows: &[RowSpan]) -> (Vec<bool>, Vec<bool>) {
    let mut completion = Vec::new();
    let mut padding = Vec::new();
    for r in rows {
        let end = r.end.min(r.len);
        let start = r.prompt_len.min(end);
        completion.extend((0..r.len).map(|i| i >= start && i < end));
        padding.extend((0..r.len).map(|i| i >= end));
    }
    (completion, padding)
}

/// The `a` completion flags of a row starting at `start`: true for the `k` positions with the
/// smallest Philox scores (ties by position), a uniformly random subset of size k.
fn lowest_k(
    seed: u64,
    off: i64,
    start: usize,
    a: usize,
    k: usize,
    idx: &dyn Fn(usize) -> u64,
) -> Vec<bool> {
    let scores: Vec<f64> = (0..a)
        .map(|i| uniform(seed, off, STREAM_SCORE, idx(start + i)))
        .collect();
    let mut order: Vec<usize> = (0..a).collect();
    order.sort_by(|&i, &j| scores[i].total_cmp(&scores[j]).then(i.cmp(&j)));
    let mut m = vec![false; a];
    for &i in order.iter().take(k) {
        m[i] = true;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_follow_the_formula_not_the_papers_example() {
        // Start 100, five iterations: the formula gives 325, 550, 775, 1000.
        assert_eq!(
            structured_timesteps(0.1, 5, 1000),
            vec![100, 325, 550, 775, 1000]
        );
        // By hand: t1 = ⌊0.4567·1000⌋ = 456; t2 = ⌊(1/3)·544 + 456⌋ = ⌊637.33⌋ = 637;
        // t3 = ⌊(2/3)·544 + 456⌋ = ⌊818.67⌋ = 818; t4 = 1000.
        assert_eq!(
            structured_timesteps(0.4567, 4, 1000),
            vec![456, 637, 818, 1000]
        );
        // μ = 2: t1 and T. μ = 1: t1 only. r1 = 0: from 0.
        assert_eq!(structured_timesteps(0.73, 2, 1000), vec![730, 1000]);
        assert_eq!(structured_timesteps(0.73, 1, 1000), vec![730]);
        assert_eq!(structured_timesteps(0.0, 3, 1000), vec![0, 500, 1000]);
        // Another T: 128 steps, r1 = 0.5 → 64, 85 (⌊85.33⌋), 106 (⌊106.67⌋), 128.
        assert_eq!(structured_timesteps(0.5, 4, 128), vec![64, 85, 106, 128]);
    }

    #[test]
    fn mask_counts_are_the_ratio_of_the_completion() {
        // The second row's completion ends at 20: its last 5 positions are padding.
        let rows = [
            RowSpan::full(5, 25),
            RowSpan {
                prompt_len: 9,
                end: 20,
                len: 25,
            },
            RowSpan::full(0, 13),
        ];
        let mu = 4;
        for rollout in 0..30 {
            for inner in 0..mu {
                let ms = masks(
                    Noising::Structured,
                    7,
                    rollout,
                    inner,
                    mu,
                    rollout * mu + inner,
                    &rows,
                );
                let m = &ms.scored;
                let mut base = 0;
                for (b, r) in rows.iter().enumerate() {
                    let row = &m[base..base + r.len];
                    let input = &ms.input[base..base + r.len];
                    assert!(input[..r.prompt_len].iter().all(|&x| !x), "prompt masked");
                    assert!(row[r.end..].iter().all(|&x| !x), "padding scored");
                    assert!(input[r.end..].iter().all(|&x| x), "padding visible");
                    assert_eq!(&input[..r.end], &row[..r.end]);
                    let t = structured_timesteps(r1(7, rollout, b), mu, T_TOTAL)[inner];
                    let a = r.end - r.prompt_len;
                    let want = ((t as f64 / 1000.0 * a as f64).round() as usize).clamp(1, a);
                    assert_eq!(row.iter().filter(|&&x| x).count(), want);
                    base += r.len;
                }
            }
        }
    }

    #[test]
    fn the_prompt_is_never_masked_and_each_step_draws_fresh_positions() {
        let rows = [RowSpan::full(11, 40); 3];
        let mut seen = std::collections::HashSet::new();
        let mut masked_total = 0usize;
        let mut partial = 0usize;
        for step in 0..2000 {
            for scheme in [Noising::Structured, Noising::Random { lo: 0.1, hi: 0.9 }] {
                let ms = masks(scheme, 3, step / 4, step % 4, 4, step, &rows);
                assert_eq!(ms.input, ms.scored, "{scheme:?}: nothing to trim");
                let m = ms.scored;
                for r in 0..3 {
                    let row = &m[r * 40..(r + 1) * 40];
                    assert!(
                        row[..11].iter().all(|&x| !x),
                        "{scheme:?} step {step}: prompt masked"
                    );
                    assert!(
                        row[11..].iter().any(|&x| x),
                        "{scheme:?} step {step}: nothing masked"
                    );
                    masked_total += row.iter().filter(|&&x| x).count();
                }
                // The last inner step of structured noising is t = T: all masked, the same
                // every time. Every other draw must be fresh.
                let full = (0..3).all(|r| m[r * 40 + 11..(r + 1) * 40].iter().all(|&x| x));
                if !full {
                    partial += 1;
                    seen.insert(m);
                }
            }
        }
        assert!(partial > 3400, "{partial} partial masks");
        assert!(
            seen.len() + 5 > partial,
            "{} distinct masks of {partial}",
            seen.len()
        );
        assert!(masked_total > 0);
        // d1 masks the whole completion and ~15 % of the prompt.
        let mut prompt_hits = 0usize;
        for step in 0..500 {
            let ms = masks(Noising::D1 { prompt_p: 0.15 }, 3, 0, 0, 1, step, &rows);
            for r in 0..3 {
                let row = &ms.input[r * 40..(r + 1) * 40];
                let scored = &ms.scored[r * 40..(r + 1) * 40];
                assert!(row[11..].iter().all(|&x| x));
                assert!(scored[11..].iter().all(|&x| x));
                assert!(
                    scored[..11].iter().all(|&x| !x),
                    "d1: a prompt token is scored"
                );
                prompt_hits += row[..11].iter().filter(|&&x| x).count();
            }
        }
        let frac = prompt_hits as f64 / (500.0 * 3.0 * 11.0);
        // 16,500 coins at p = 0.15: standard error 0.0028.
        assert!((frac - 0.15).abs() < 0.012, "d1 prompt fraction {frac}");
    }

    #[test]
    fn structured_ratios_are_uniform_at_the_first_step() {
        // r1 ~ U(0,1): over many rollouts the mean of t1/T is 1/2 (s.e. 0.29/√n).
        let n = 4000;
        let mean: f64 = (0..n).map(|i| r1(11, i, 0)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean r1 {mean}");
    }
}
