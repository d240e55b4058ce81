//! The stable fuzz runner (every CI run): for each target in `hopgate::fuzz::TARGETS`, replay every file of
//! fuzz/corpus/NAME/ (seeds and the regressions of past findings), then run a seeded mutation loop over them
//! (fuzz/dict/NAME.dict as its tokens) for a fixed number of inputs. Deterministic: the same seed makes the same
//! inputs. A failing input is shrunk, written to target/fuzz-failures/NAME/ and printed; an input that runs for
//! more than HOPGATE_FUZZ_HANG_SECS aborts the run with the input written out.
//!
//! Settings (environment): HOPGATE_FUZZ_ITERS (inputs per target, default 100000), HOPGATE_FUZZ_SECS (a time cap
//! per target, default 60: the loop stops early, says so, and passes), HOPGATE_FUZZ_SEED (default 0x5eed),
//! HOPGATE_FUZZ_HANG_SECS (default 10), HOPGATE_FUZZ_REPLAY=FILE (run only that file, for the target named on
//! the command line). docs/fuzzing.md has the commands.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use hopgate::fuzz::mutate::{Mutator, fnv1a, parse_dict, shrink};
use hopgate::fuzz::{TARGETS, Target, target};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        }
        Err(_) => default,
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Seeds a target shares with another test: the HTTP/1 framing targets start from tests/h1_differential.rs's
/// corpus (libFuzzer takes the same directories after the target's own: docs/fuzzing.md).
fn shared_seeds(name: &str) -> &'static [&'static str] {
    match name {
        "h1_request_head" | "h1_chunked" => &["tests/corpus/h1/requests"],
        "h1_response_head" => &["tests/corpus/h1/responses"],
        _ => &[],
    }
}

/// Every file of fuzz/corpus/NAME/ (sorted by name), then those of its shared seed directories.
fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root().join("fuzz/corpus").join(name);
    let list = |dir: &Path| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target has a seed corpus)", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "py"))
            .collect();
        files.sort();
        files
    };
    let mut files = list(&dir);
    assert!(!files.is_empty(), "{} is empty", dir.display());
    for shared in shared_seeds(name) {
        files.extend(list(&root().join(shared)));
    }
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("read corpus file"))).collect()
}

fn dict(name: &str) -> Vec<Vec<u8>> {
    let path = root().join("fuzz/dict").join(format!("{name}.dict"));
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_dict(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        Err(_) => Vec::new(),
    }
}

thread_local! {
    /// Set while shrinking: the thousands of expected panics are not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
}

/// Runs one input; the panic message when it fails.
fn run_one(t: &Target, data: &[u8]) -> Result<(), String> {
    panic::catch_unwind(AssertUnwindSafe(|| (t.run)(data))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

fn escaped(data: &[u8], max: usize) -> String {
    let mut s: String = data.iter().take(max).flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect();
    if data.len() > max {
        s.push_str(&format!("... ({} bytes)", data.len()));
    }
    s
}

fn failure_dir(name: &str) -> PathBuf {
    root().join("target/fuzz-failures").join(name)
}

/// Shrinks and records a failing input, then fails the test naming it.
fn report(t: &Target, data: &[u8], message: &str, origin: &str) -> ! {
    QUIET.with(|q| q.set(true));
    let small = shrink(data, 4000, |d| run_one(t, d).is_err());
    QUIET.with(|q| q.set(false));
    let small_message = run_one(t, &small).err().unwrap_or_else(|| message.to_string());
    let dir = failure_dir(t.name);
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("crash-{:016x}", fnv1a(data)));
    let small_file = dir.join(format!("crash-{:016x}-min", fnv1a(data)));
    let _ = std::fs::write(&file, data);
    let _ = std::fs::write(&small_file, &small);
    panic!(
        "fuzz target {} failed on {origin}: {small_message}\n  input (shrunk, {} bytes): b\"{}\"\n  written to {} \
         (original: {})\n  replay: HOPGATE_FUZZ_REPLAY={} cargo test --release --test fuzz -- --exact {}\n  \
         once fixed, keep it as a regression: cp {} fuzz/corpus/{}/regress-NAME",
        t.name,
        small.len(),
        escaped(&small, 600),
        small_file.display(),
        file.display(),
        small_file.display(),
        t.name,
        small_file.display(),
        t.name,
    );
}

/// Aborts the process when one input runs longer than `limit`: a hang is a finding too.
struct Watchdog {
    epoch: Instant,
    current: Arc<Mutex<Vec<u8>>>,
    started_ms: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(name: &'static str, limit: Duration) -> Watchdog {
        let current = Arc::new(Mutex::new(Vec::new()));
        let started_ms = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (c, s, d) = (current.clone(), started_ms.clone(), done.clone());
        // Stops when the target's test is done (bounded by the test), checking twice a second.
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let started = s.load(Ordering::Relaxed);
                if started != 0 && epoch.elapsed().as_millis() as u64 > started + limit.as_millis() as u64 {
                    let data = c.lock().map(|d| d.clone()).unwrap_or_default();
                    let dir = failure_dir(name);
                    let _ = std::fs::create_dir_all(&dir);
                    let file = dir.join(format!("hang-{:016x}", fnv1a(&data)));
                    let _ = std::fs::write(&file, &data);
                    eprintln!(
                        "fuzz target {name}: one input ran for more than {limit:?}: b\"{}\"\n  written to {}",
                        escaped(&data, 600),
                        file.display()
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog { epoch, current, started_ms, done }
    }

    fn begin(&self, data: &[u8]) {
        if let Ok(mut c) = self.current.lock() {
            c.clear();
            c.extend_from_slice(data);
        }
        self.started_ms.store(self.epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    fn end(&self) {
        self.started_ms.store(0, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

fn fuzz(name: &'static str) {
    install_quiet_hook();
    let t = target(name).unwrap_or_else(|| panic!("no fuzz target {name}"));
    if let Ok(file) = std::env::var("HOPGATE_FUZZ_REPLAY") {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        if let Err(m) = run_one(t, &data) {
            report(t, &data, &m, &file);
        }
        return;
    }
    let iters = env_u64("HOPGATE_FUZZ_ITERS", 100_000);
    let cap = Duration::from_secs(env_u64("HOPGATE_FUZZ_SECS", 60));
    let seed = env_u64("HOPGATE_FUZZ_SEED", 0x5eed);
    let hang = Duration::from_secs(env_u64("HOPGATE_FUZZ_HANG_SECS", 10));

    let files = corpus(name);
    let watchdog = Watchdog::start(t.name, hang);
    let start = Instant::now();
    for (path, data) in &files {
        watchdog.begin(data);
        if let Err(m) = run_one(t, data) {
            report(t, data, &m, &path.display().to_string());
        }
        watchdog.end();
    }
    let seeds: Vec<Vec<u8>> = files.into_iter().map(|(_, d)| d).collect();
    let longest = seeds.iter().map(Vec::len).max().unwrap_or(0);
    let mut m = Mutator::new(seed ^ fnv1a(name.as_bytes()), t.max_len.max(longest), dict(name));
    let mut done = 0u64;
    while done < iters {
        if start.elapsed() > cap {
            println!("fuzz {name}: time cap of {cap:?} reached after {done} of {iters} inputs");
            break;
        }
        let data = m.generate(&seeds);
        watchdog.begin(&data);
        if let Err(msg) = run_one(t, &data) {
            report(t, &data, &msg, &format!("generated input {done} (seed {seed:#x})"));
        }
        watchdog.end();
        done += 1;
    }
    println!(
        "fuzz {name}: {} corpus files and {done} generated inputs in {:.1} s (seed {seed:#x})",
        seeds.len(),
        start.elapsed().as_secs_f64()
    );
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { fuzz(stringify!($name)); })*

        /// Every target in the library's list has a test here, a cargo-fuzz target and a corpus.
        #[test]
        fn every_target_is_run() {
            let here = [$(stringify!($name)),*];
            for t in TARGETS {
                assert!(here.contains(&t.name), "tests/fuzz.rs does not run {}", t.name);
                let bin = root().join("fuzz/fuzz_targets").join(format!("{}.rs", t.name));
                assert!(bin.is_file(), "{} is missing", bin.display());
                let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
                assert!(manifest.contains(&format!("name = \"{}\"", t.name)), "fuzz/Cargo.toml lacks {}", t.name);
                assert!(Path::new(&root().join("fuzz/corpus").join(t.name)).is_dir());
            }
            assert_eq!(here.len(), TARGETS.len());
        }
    };
}

targets!(
    ftp_reply,
    ftp_listing,
    cgi_head,
    fastcgi_record,
    scgi_netstring,
    htpasswd,
    range,
    http_fields,
    host,
    config_load,
    config_values,
    url_paths,
    proxy_protocol,
    client_hello,
    h1_request_head,
    h1_chunked,
    h1_response_head,
    h1_round_trip,
);
