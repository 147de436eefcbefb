//! `loadgen`: the open-loop load generator of tokengate's load benchmark (`bench/run.sh`,
//! `bench/driver.py`), used for "p99 at half of saturation".
//!
//! # Why it exists
//!
//! The benchmark used to pace Debian's `wrk` for that measurement: each of its 32
//! closed-loop connections paused in `tokens.lua`'s `delay()` before each request. wrk's
//! timer counts whole milliseconds, so at ~16k req/s the connections all fire in clumps at
//! each millisecond tick, and the measured latency was the generator's clumping (p50
//! 370 µs for a 27 µs service at 50 % utilisation), not the server's. wrk2 (constant
//! rate, coordinated-omission-free) is not packaged in Debian, hence this small tool.
//!
//! # What it measures
//!
//! Open loop, Poisson arrivals: request `i` is scheduled at `t_i`, the inter-arrival
//! times drawn from an exponential distribution of mean `1/R` (its own xorshift64* RNG).
//! At `t_i` the request goes to an idle keep-alive connection, or waits in a FIFO queue
//! until one is free. Its latency runs from the *scheduled* time `t_i` to the moment its
//! complete response has been read, so time spent waiting for a connection (the
//! generator's or the server's backlog) counts against the server, as in wrk2: a slow
//! server cannot slow the arrivals down and hide its own stalls (coordinated omission).
//!
//! Timing: mio's poll timeout is in whole milliseconds, so when the next scheduled send
//! is less than 2 ms away the loop busy-polls (`Duration::ZERO`; the generator owns its
//! core, expect ~1.0 of it), otherwise it sleeps until about 1 ms before it.
//!
//! Requests are the bytes `wrk -s bench/tokens.lua` sends (`GET`, `Host`, `Authorization:
//! Bearer <token>`, the tokens taken in turn from a file), formatted once at start. The
//! result is one line on stdout, `BENCH_JSON {...}`, the shape `tokens.lua`'s `done()`
//! prints plus `target_rps`, `late_sends` and `max_queue`; diagnostics go to stderr.
//!
//! ```text
//! loadgen --url http://HOST:PORT/PATH --tokens FILE --rate R --connections C
//!         --duration SECS [--warmup SECS] [--seed N] [--timeout-ms MS]
//! ```

mod args;
mod http;
mod rng;
mod run;
mod stats;

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use args::{Command, Url};

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<(), String> {
    let args = match args::parse(std::env::args().skip(1))? {
        Command::Help => {
            eprintln!("{}", args::USAGE);
            return Ok(());
        }
        Command::Run(a) => a,
    };
    let requests = load_requests(&args.tokens, &args.url)?;
    let addr = args
        .url
        .connect
        .to_socket_addrs()
        .map_err(|e| format!("--url: cannot resolve {}: {e}", args.url.connect))?
        .next()
        .ok_or_else(|| format!("--url: {} resolves to no address", args.url.connect))?;
    let seed = args.seed.unwrap_or_else(clock_seed);
    let tokens = requests.len();
    let cfg = run::Config {
        addr,
        requests,
        rate: args.rate,
        connections: args.connections,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        timeout: Duration::from_millis(args.timeout_ms),
        seed,
    };
    eprintln!(
        "loadgen: {addr}{} at {} req/s (Poisson), {} connections, {} tokens, warm-up {} s, \
         {} s measured, seed {seed}",
        args.url.path, args.rate, args.connections, tokens, args.warmup, args.duration
    );
    let report = run::run(&cfg)?;
    eprintln!("{}", report.diagnostics());
    println!("BENCH_JSON {}", report.json());
    Ok(())
}

/// The request bytes, one per non-blank line of the token file, exactly as `wrk -s
/// bench/tokens.lua` formats them.
fn load_requests(path: &std::path::Path, url: &Url) -> Result<Vec<Vec<u8>>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--tokens {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let token = line.trim();
        if token.is_empty() {
            continue;
        }
        if token.bytes().any(|b| b.is_ascii_control()) {
            return Err(format!(
                "--tokens {}: line {} holds a control character",
                path.display(),
                n + 1
            ));
        }
        out.push(format_request(url, token));
    }
    if out.is_empty() {
        return Err(format!("--tokens {}: no token in the file", path.display()));
    }
    Ok(out)
}

fn format_request(url: &Url, token: &str) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
        url.path, url.authority
    )
    .into_bytes()
}

fn clock_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Truncation intended: only the fast-changing low bits matter.
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        match args::parse_url("http://127.0.0.1:47101/") {
            Ok(u) => u,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn request_bytes_are_wrks() {
        assert_eq!(
            format_request(&url(), "a.b.c"),
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:47101\r\nAuthorization: Bearer a.b.c\r\n\r\n"
        );
    }

    #[test]
    fn token_file_skips_blank_lines_and_rejects_empty() {
        let dir = std::env::temp_dir().join(format!("loadgen-test-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("{e}");
        }
        let good = dir.join("good.txt");
        let empty = dir.join("empty.txt");
        if let Err(e) = std::fs::write(&good, "a.b.c\n\n  \nd.e.f\r\n") {
            panic!("{e}");
        }
        if let Err(e) = std::fs::write(&empty, "\n \n") {
            panic!("{e}");
        }
        match load_requests(&good, &url()) {
            Ok(r) => {
                assert_eq!(r.len(), 2);
                assert!(r[1].ends_with(b"Bearer d.e.f\r\n\r\n"));
            }
            Err(e) => panic!("{e}"),
        }
        match load_requests(&empty, &url()) {
            Ok(_) => panic!("an empty token file was accepted"),
            Err(e) => assert!(e.contains("no token"), "{e}"),
        }
        assert!(load_requests(&dir.join("missing.txt"), &url()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
