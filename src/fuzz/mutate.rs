//! The stable fuzzer's input generator: a seeded xorshift RNG and byte-level mutations of seed inputs (bit flips,
//! interesting bytes and numbers, insertions, deletions, duplicated runs, splices of two seeds, dictionary tokens),
//! the same kinds libFuzzer applies, without its coverage feedback. Deterministic: one seed, one sequence.

/// xorshift64*: small, fast, and the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Never 0 (xorshift stays at 0), and nearby seeds start far apart.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// FNV-1a: a stable 64-bit hash of a name or an input (per-target seeds, failure file names).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Bytes that parsers branch on.
const INTERESTING_BYTES: &[u8] = b"\0\r\n \t:;,=\"'\\/%-+.()[]|@#<>*?{}\x7f\x80\xff0123456789";

/// Numbers at the edges of the types and limits hopgate's parsers use.
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "7",
    "8",
    "127",
    "128",
    "255",
    "256",
    "999",
    "1024",
    "65535",
    "65536",
    "65528",
    "1048576",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "00000000",
];

/// How a failing input can be shrunk: remove one chunk, keep it if `still_fails`. Greedy, bounded by `budget`
/// calls of `still_fails`.
pub fn shrink(input: &[u8], budget: usize, mut still_fails: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut best = input.to_vec();
    let mut calls = 0;
    let mut chunk = best.len().max(1).next_power_of_two();
    while chunk >= 1 && calls < budget {
        let mut at = 0;
        while at < best.len() && calls < budget {
            let end = (at + chunk).min(best.len());
            let mut candidate = best[..at].to_vec();
            candidate.extend_from_slice(&best[end..]);
            calls += 1;
            if still_fails(&candidate) {
                best = candidate;
            } else {
                at += chunk;
            }
        }
        chunk /= 2;
    }
    best
}

/// Mutates seed inputs.
#[derive(Debug, Clone)]
pub struct Mutator {
    pub rng: Rng,
    /// Largest input produced.
    pub max_len: usize,
    /// Tokens from the target's dictionary (fuzz/dict/NAME.dict).
    pub dict: Vec<Vec<u8>>,
}

impl Mutator {
    pub fn new(seed: u64, max_len: usize, dict: Vec<Vec<u8>>) -> Mutator {
        Mutator { rng: Rng::new(seed), max_len, dict }
    }

    /// A new input: a seed from `corpus` (or nothing) with 1 to 8 mutations stacked; `corpus` also gives the
    /// second parent of splices.
    pub fn generate(&mut self, corpus: &[Vec<u8>]) -> Vec<u8> {
        let mut data = if corpus.is_empty() || self.rng.chance(50) {
            Vec::new()
        } else {
            corpus[self.rng.below(corpus.len())].clone()
        };
        let rounds = 1 + self.rng.below(8);
        for _ in 0..rounds {
            self.mutate(&mut data, corpus);
        }
        data.truncate(self.max_len);
        data
    }

    /// One mutation of `data` in place.
    pub fn mutate(&mut self, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        let r = &mut self.rng;
        let len = data.len();
        match r.below(13) {
            // flip one bit
            0 if len > 0 => {
                let i = r.below(len);
                data[i] ^= 1 << r.below(8);
            }
            // a random byte
            1 if len > 0 => {
                let i = r.below(len);
                data[i] = r.next_u64() as u8;
            }
            // an interesting byte, replacing or inserted
            2 => {
                let b = INTERESTING_BYTES[r.below(INTERESTING_BYTES.len())];
                let i = r.below(len + 1);
                if i < len && r.chance(2) {
                    data[i] = b;
                } else {
                    data.insert(i, b);
                }
            }
            // insert random bytes
            3 => {
                let n = 1 + r.below(16);
                let i = r.below(len + 1);
                let bytes: Vec<u8> = (0..n).map(|_| r.next_u64() as u8).collect();
                data.splice(i..i, bytes);
            }
            // delete a range
            4 if len > 0 => {
                let i = r.below(len);
                let n = 1 + r.below((len - i).min(64));
                data.drain(i..i + n);
            }
            // duplicate a range, sometimes many times (reaches size limits)
            5 if len > 0 => {
                let i = r.below(len);
                let n = 1 + r.below((len - i).min(256));
                let times = if r.chance(8) { 1 + r.below(2048) } else { 1 + r.below(4) };
                let run: Vec<u8> = data[i..i + n].to_vec();
                let at = r.below(len + 1);
                let mut ins = Vec::with_capacity(run.len() * times);
                for _ in 0..times {
                    ins.extend_from_slice(&run);
                }
                data.splice(at..at, ins);
            }
            // splice: a piece of another seed
            6 if !corpus.is_empty() => {
                let other = &corpus[r.below(corpus.len())];
                if !other.is_empty() {
                    let from = r.below(other.len());
                    let n = 1 + r.below(other.len() - from);
                    let at = r.below(len + 1);
                    if r.chance(2) {
                        // cross-over: this input's head, the other's tail
                        data.truncate(at);
                        data.extend_from_slice(&other[from..]);
                    } else {
                        data.splice(at..at, other[from..from + n].iter().copied());
                    }
                }
            }
            // a dictionary token, inserted or overwriting
            7 | 8 if !self.dict.is_empty() => {
                let token = self.dict[r.below(self.dict.len())].clone();
                let at = r.below(len + 1);
                if r.chance(3) && at + token.len() <= len {
                    data[at..at + token.len()].copy_from_slice(&token);
                } else {
                    data.splice(at..at, token);
                }
            }
            // replace a run of digits by an interesting number
            9 => {
                let n = INTERESTING_NUMBERS[r.below(INTERESTING_NUMBERS.len())].as_bytes();
                let starts: Vec<usize> = (0..len)
                    .filter(|&i| data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit()))
                    .collect();
                if starts.is_empty() {
                    let at = r.below(len + 1);
                    data.splice(at..at, n.iter().copied());
                } else {
                    let s = starts[r.below(starts.len())];
                    let e = (s..len).find(|&i| !data[i].is_ascii_digit()).unwrap_or(len);
                    data.splice(s..e, n.iter().copied());
                }
            }
            // truncate
            10 if len > 0 => data.truncate(r.below(len)),
            // swap two bytes
            11 if len > 1 => {
                let (i, j) = (r.below(len), r.below(len));
                data.swap(i, j);
            }
            // change the case of an ASCII letter
            12 if len > 0 => {
                let i = r.below(len);
                if data[i].is_ascii_alphabetic() {
                    data[i] ^= 0x20;
                }
            }
            // the chosen mutation does not fit this input: add one random byte instead
            _ => {
                let i = r.below(len + 1);
                data.insert(i, r.next_u64() as u8);
            }
        }
    }
}

/// Reads a libFuzzer dictionary (`name="value"` or `"value"` per line, `#` comments, `\\`, `\"` and `\xNN`
/// escapes), so that both fuzzers share fuzz/dict/*.dict. Lines that are not entries are errors naming the line.
pub fn parse_dict(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}", n + 1);
        let start = line.find('"').ok_or_else(|| bad("no opening quote"))?;
        let name = &line[..start];
        if !(name.is_empty()
            || name.ends_with('=') && name[..name.len() - 1].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(bad("expected \"value\" or name=\"value\""));
        }
        let body = line[start + 1..].strip_suffix('"').ok_or_else(|| bad("no closing quote"))?;
        let b = body.as_bytes();
        let mut value = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' => {
                    match b.get(i + 1) {
                        Some(b'\\') => value.push(b'\\'),
                        Some(b'"') => value.push(b'"'),
                        Some(b'x') => {
                            let hex = b
                                .get(i + 2..i + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                                .ok_or_else(|| bad("bad \\x escape"))?;
                            value.push(hex);
                            i += 2;
                        }
                        _ => return Err(bad("bad escape")),
                    }
                    i += 2;
                }
                b'"' => return Err(bad("unescaped quote inside the value")),
                c => {
                    value.push(c);
                    i += 1;
                }
            }
        }
        out.push(value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_fixed_by_the_seed() {
        let corpus = vec![b"220 hello\r\n".to_vec(), b"150 ok\r\n226 done\r\n".to_vec()];
        let mut a = Mutator::new(7, 4096, vec![b"(|||".to_vec()]);
        let mut b = Mutator::new(7, 4096, vec![b"(|||".to_vec()]);
        for _ in 0..1000 {
            let x = a.generate(&corpus);
            assert!(x.len() <= 4096);
            assert_eq!(x, b.generate(&corpus));
        }
        let mut c = Mutator::new(8, 4096, Vec::new());
        assert_ne!((0..10).map(|_| c.generate(&corpus)).collect::<Vec<_>>(), {
            let mut a = Mutator::new(7, 4096, Vec::new());
            (0..10).map(|_| a.generate(&corpus)).collect::<Vec<_>>()
        });
    }

    #[test]
    fn dictionaries() {
        let d = parse_dict("# c\n\nkw=\"227 \"\n\"\\x00\\\\\\\"\"\n").unwrap();
        assert_eq!(d, vec![b"227 ".to_vec(), b"\0\\\"".to_vec()]);
        for bad in ["abc", "\"open", "x y=\"v\"", "\"\\q\"", "\"\\x4\"", "\"a\"b\""] {
            assert!(parse_dict(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shrinking_keeps_the_failure() {
        let input = b"aaaaaaaaaXbbbbbbbbbbbbbYccccc".to_vec();
        let small = shrink(&input, 10_000, |d| d.contains(&b'X') && d.contains(&b'Y'));
        assert_eq!(small, b"XY");
    }
}
