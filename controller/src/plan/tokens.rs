//! Token lengths: a local Hugging Face `tokenizer.json` (the `tokenizers` crate, pure Rust: no
//! download, no C), length distributions (fixed, uniform, normal, lognormal; seeded), and prompts
//! made to have exactly N tokens by that tokenizer, or about N (4 characters a token) without one.
//! All of it runs while the plan compiles, never on a request's path.

use std::path::Path;
use tokengun_common::schedule::SplitMix64;

/// Most tokens a made prompt or output may have.
pub const MAX_TOKENS: u32 = 1_000_000;

/// Common English words: those the tokenizer reads as one token (with a space before them) make
/// the prompts.
const WORD_POOL: &[&str] = &[
    "time", "river", "memory", "signal", "garden", "theory", "engine", "winter", "language",
    "number", "city", "light", "question", "pattern", "ocean", "history", "machine", "forest",
    "music", "silence", "bridge", "orbit", "harvest", "mirror", "water", "house", "paper", "world",
    "stone", "green", "story", "table", "north", "south", "field", "market", "money", "night",
    "morning", "letter", "school", "window", "family", "animal", "power", "voice",
];

/// A length distribution or tokenizer that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read tokenizer {path}: {reason}; give a Hugging Face tokenizer.json")]
    Load { path: String, reason: String },
    #[error("tokenizer {path} cannot encode text: {reason}")]
    Encode { path: String, reason: String },
    #[error(
        "tokenizer {path}: none of tokengun's {} prompt words is one token in it, so it cannot make prompts of exact lengths",
        WORD_POOL.len()
    )]
    NoWords { path: String },
    #[error(
        "{0:?} is not a token length: give N, uniform:MIN-MAX, normal:MEAN,SD or lognormal:MEDIAN,SIGMA (tokens from 1 to {MAX_TOKENS})"
    )]
    Dist(String),
}

/// A loaded tokenizer and the words that are one token each in it.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: String,
    /// Words that encode to exactly one token with a space before them.
    words: Vec<String>,
    /// One of `words` that is one token without a space too (a prompt's first word).
    first: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl Tokenizer {
    /// Reads a `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let p = path.display().to_string();
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| TokenError::Load {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        let mut t = Self {
            inner,
            path: p.clone(),
            words: Vec::new(),
            first: String::new(),
        };
        let mut words = Vec::new();
        for w in WORD_POOL {
            if t.count(&format!(" {w}"))? == 1 && !words.iter().any(|x: &String| x == w) {
                words.push((*w).to_string());
            }
        }
        let mut first = None;
        for w in &words {
            if t.count(w)? == 1 {
                first = Some(w.clone());
                break;
            }
        }
        match first {
            Some(f) if !words.is_empty() => {
                t.words = words;
                t.first = f;
                Ok(t)
            }
            _ => Err(TokenError::NoWords { path: p }),
        }
    }

    /// Where it was read from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Tokens of `text` (no special tokens added: a server's template adds its own).
    pub fn count(&self, text: &str) -> Result<usize, TokenError> {
        self.inner
            .encode(text, false)
            .map(|e| e.len())
            .map_err(|e| TokenError::Encode {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// A prompt of exactly `n` tokens by this tokenizer (words drawn with `rng`); None when the
    /// tokenizer would not settle on `n` (then the caller says the lengths are approximate).
    pub fn exact(&self, n: u32, rng: &mut SplitMix64) -> Result<Option<String>, TokenError> {
        let n = n as usize;
        let pick = |rng: &mut SplitMix64| {
            self.words[(rng.next_u64() % self.words.len() as u64) as usize].as_str()
        };
        let mut parts: Vec<&str> = vec![self.first.as_str()];
        while parts.len() < n {
            parts.push(pick(rng));
        }
        // Each " word" is one token whatever its neighbours with a byte-level pre-tokenizer;
        // others may merge across words, so the count is checked and the prompt trimmed or grown.
        for _ in 0..64 {
            let text = join(&parts);
            let c = self.count(&text)?;
            if c == n {
                return Ok(Some(text));
            }
            if c > n && parts.len() > 1 {
                let drop = (c - n).min(parts.len() - 1);
                parts.truncate(parts.len() - drop);
            } else {
                for _ in 0..(n.saturating_sub(c)).max(1) {
                    parts.push(pick(rng));
                }
            }
        }
        Ok(None)
    }
}

fn join(parts: &[&str]) -> String {
    parts.join(" ")
}

/// A prompt of about `n` tokens at 4 characters a token (the usual estimate, and the
/// simulator's), for runs without a tokenizer.
pub fn approximate(n: u32, rng: &mut SplitMix64) -> String {
    let target = n as usize * 4;
    let mut text = String::with_capacity(target + 12);
    while text.len() < target {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(WORD_POOL[(rng.next_u64() % WORD_POOL.len() as u64) as usize]);
    }
    text.truncate(target.max(1));
    text
}

/// A block of `n` tokens drawn from `seed`, made so that the first `m` tokens of it are
/// [`prefix_of`] it: one pool word a token with a tokenizer, 4 characters a token without.
pub fn block_text(t: Option<&Tokenizer>, n: u32, seed: u64) -> String {
    let mut rng = SplitMix64::new(seed);
    match t {
        Some(t) => {
            let mut parts: Vec<&str> = Vec::with_capacity(n as usize);
            parts.push(t.first.as_str());
            while parts.len() < n as usize {
                parts.push(t.words[(rng.next_u64() % t.words.len() as u64) as usize].as_str());
            }
            join(&parts)
        }
        None => approximate(n, &mut rng),
    }
}

/// The first `n` tokens of a [`block_text`].
pub fn prefix_of(t: Option<&Tokenizer>, block: &str, n: u32) -> String {
    match t {
        Some(_) => block
            .split(' ')
            .take(n as usize)
            .collect::<Vec<_>>()
            .join(" "),
        None => block.chars().take(n as usize * 4).collect(),
    }
}

/// How token lengths are spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LengthDist {
    Fixed(u32),
    /// Uniform in `min..=max`.
    Uniform {
        min: u32,
        max: u32,
    },
    Normal {
        mean: f64,
        sd: f64,
    },
    /// `exp(N(ln median, sigma))`.
    LogNormal {
        median: f64,
        sigma: f64,
    },
}

impl LengthDist {
    /// Parses `N`, `uniform:MIN-MAX`, `normal:MEAN,SD` or `lognormal:MEDIAN,SIGMA`.
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let bad = || TokenError::Dist(s.to_string());
        let num = |x: &str| x.trim().parse::<f64>().ok().filter(|v| v.is_finite());
        let count = |x: &str| {
            x.trim()
                .parse::<u32>()
                .ok()
                .filter(|v| (1..=MAX_TOKENS).contains(v))
        };
        let pair = |rest: &str, sep: char| {
            let (a, b) = rest.split_once(sep)?;
            Some((num(a)?, num(b)?))
        };
        let d = match s.split_once(':') {
            None => LengthDist::Fixed(count(s).ok_or_else(bad)?),
            Some(("uniform", rest)) => {
                let (a, b) = rest.split_once('-').ok_or_else(bad)?;
                let (min, max) = (count(a).ok_or_else(bad)?, count(b).ok_or_else(bad)?);
                if min > max {
                    return Err(bad());
                }
                LengthDist::Uniform { min, max }
            }
            Some(("normal", rest)) => {
                let (mean, sd) = pair(rest, ',').ok_or_else(bad)?;
                if !(1.0..=f64::from(MAX_TOKENS)).contains(&mean) || sd < 0.0 {
                    return Err(bad());
                }
                LengthDist::Normal { mean, sd }
            }
            Some(("lognormal", rest)) => {
                let (median, sigma) = pair(rest, ',').ok_or_else(bad)?;
                if !(1.0..=f64::from(MAX_TOKENS)).contains(&median) || sigma < 0.0 {
                    return Err(bad());
                }
                LengthDist::LogNormal { median, sigma }
            }
            Some(_) => return Err(bad()),
        };
        Ok(d)
    }

    /// One length, from 1 to [`MAX_TOKENS`].
    pub fn sample(&self, rng: &mut SplitMix64) -> u32 {
        let v = match *self {
            LengthDist::Fixed(n) => return n,
            LengthDist::Uniform { min, max } => {
                return min + (rng.next_u64() % u64::from(max - min + 1)) as u32;
            }
            LengthDist::Normal { mean, sd } => mean + sd * std_normal(rng),
            LengthDist::LogNormal { median, sigma } => median * (sigma * std_normal(rng)).exp(),
        };
        v.round().clamp(1.0, f64::from(MAX_TOKENS)) as u32
    }
}

/// A standard normal draw (Box-Muller).
fn std_normal(rng: &mut SplitMix64) -> f64 {
    let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Tokenizer {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tokenizers/tiny-bpe/tokenizer.json");
        Tokenizer::load(&p).unwrap()
    }

    #[test]
    fn distributions_parse_and_sample_in_range_with_the_seed() {
        assert_eq!(LengthDist::parse("64").unwrap(), LengthDist::Fixed(64));
        for bad in [
            "0",
            "x",
            "uniform:9-3",
            "normal:5",
            "lognormal:0,1",
            "gamma:1,2",
        ] {
            assert!(LengthDist::parse(bad).is_err(), "{bad}");
        }
        let d = LengthDist::parse("uniform:10-20").unwrap();
        let mut r = SplitMix64::new(1);
        assert!((0..500).all(|_| (10..=20).contains(&d.sample(&mut r))));
        let d = LengthDist::parse("normal:500,50").unwrap();
        let mut r = SplitMix64::new(2);
        let xs: Vec<f64> = (0..4000).map(|_| f64::from(d.sample(&mut r))).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
        assert!(
            (mean - 500.0).abs() < 5.0 && (sd - 50.0).abs() < 5.0,
            "{mean} {sd}"
        );
        let d = LengthDist::parse("lognormal:200,0.5").unwrap();
        let mut r = SplitMix64::new(3);
        let mut xs: Vec<u32> = (0..4001).map(|_| d.sample(&mut r)).collect();
        xs.sort_unstable();
        assert!((180..=220).contains(&xs[2000]), "median {}", xs[2000]);
        let mut a = SplitMix64::new(9);
        let mut b = SplitMix64::new(9);
        assert_eq!(d.sample(&mut a), d.sample(&mut b));
    }

    #[test]
    fn prompts_have_exactly_the_tokens_asked_for() {
        let t = tiny();
        let mut r = SplitMix64::new(4);
        for n in [1, 2, 7, 100, 1000] {
            let text = t.exact(n, &mut r).unwrap().unwrap();
            assert_eq!(t.count(&text).unwrap(), n as usize, "{text}");
        }
        let a = approximate(50, &mut r);
        assert_eq!(a.len(), 200);
    }

    #[test]
    fn a_file_that_is_not_a_tokenizer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, "{\"not\": \"a tokenizer\"}").unwrap();
        let e = Tokenizer::load(&p).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
        assert!(Tokenizer::load(&dir.path().join("missing.json")).is_err());
    }

    /// SmolLM2's 49,152-token BPE, where the machine has it (/work/shared/fixtures).
    #[test]
    fn smollm2_lengths_are_exact_where_its_tokenizer_is_present() {
        let p = Path::new("/work/shared/fixtures/tokenizers/smollm2-135m/tokenizer.json");
        if !p.exists() {
            eprintln!("skipped: {} not present", p.display());
            return;
        }
        let t = Tokenizer::load(p).unwrap();
        let mut r = SplitMix64::new(5);
        for n in [3, 128, 2048] {
            let text = t.exact(n, &mut r).unwrap().unwrap();
            assert_eq!(t.count(&text).unwrap(), n as usize);
        }
    }
}
