//! The command line, parsed by hand (`--name value` or `--name=value`).

use std::path::PathBuf;

pub const USAGE: &str = "usage: loadgen --url http://HOST:PORT/PATH --tokens FILE --rate R \
--connections C --duration SECS [--warmup SECS (default 1)] [--seed N] \
[--timeout-ms MS (default 2000)]";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Help,
    Run(Args),
}

#[derive(Debug, PartialEq)]
pub struct Args {
    pub url: Url,
    pub tokens: PathBuf,
    /// Target rate, requests per second (mean of the Poisson arrivals).
    pub rate: f64,
    pub connections: usize,
    /// Measured seconds, after the warm-up.
    pub duration: f64,
    pub warmup: f64,
    /// None: seeded from the clock.
    pub seed: Option<u64>,
    pub timeout_ms: u64,
}

/// An `http://` URL, split the way wrk uses it.
#[derive(Debug, PartialEq)]
pub struct Url {
    /// `HOST[:PORT]` as written: the `Host` header.
    pub authority: String,
    /// `HOST:PORT` to resolve (port 80 when none is written).
    pub connect: String,
    /// The path (and query), `/` when the URL has none.
    pub path: String,
}

const MAX_CONNECTIONS: usize = 100_000;

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut url = None;
    let mut tokens = None;
    let mut rate = None;
    let mut connections = None;
    let mut duration = None;
    let mut warmup = None;
    let mut seed = None;
    let mut timeout_ms = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let slot: &mut Option<String> = match name.as_str() {
            "--url" => &mut url,
            "--tokens" => &mut tokens,
            "--rate" => &mut rate,
            "--connections" => &mut connections,
            "--duration" => &mut duration,
            "--warmup" => &mut warmup,
            "--seed" => &mut seed,
            "--timeout-ms" => &mut timeout_ms,
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?,
        };
        if slot.replace(value).is_some() {
            return Err(format!("{name} given twice"));
        }
    }
    let required =
        |v: Option<String>, name: &str| v.ok_or_else(|| format!("missing {name}\n{USAGE}"));
    let url = parse_url(&required(url, "--url")?)?;
    let tokens = PathBuf::from(required(tokens, "--tokens")?);
    let rate = positive("--rate", &required(rate, "--rate")?)?;
    let connections = required(connections, "--connections")?;
    let connections = match connections.parse::<usize>() {
        Ok(c) if (1..=MAX_CONNECTIONS).contains(&c) => c,
        _ => {
            return Err(format!(
                "--connections {connections:?}: want a whole number from 1 to {MAX_CONNECTIONS}"
            ));
        }
    };
    let duration = positive("--duration", &required(duration, "--duration")?)?;
    let warmup = match warmup {
        None => 1.0,
        Some(w) => match w.parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => v,
            _ => return Err(format!("--warmup {w:?}: want seconds, 0 or more")),
        },
    };
    if duration > 86_400.0 {
        return Err(format!("--duration {duration}: at most a day"));
    }
    let seed = match seed {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| format!("--seed {s:?}: want a whole number"))?,
        ),
    };
    let timeout_ms = match timeout_ms {
        None => 2000,
        Some(t) => match t.parse::<u64>() {
            Ok(v) if (1..=3_600_000).contains(&v) => v,
            _ => return Err(format!("--timeout-ms {t:?}: want milliseconds, 1 or more")),
        },
    };
    Ok(Command::Run(Args {
        url,
        tokens,
        rate,
        connections,
        duration,
        warmup,
        seed,
        timeout_ms,
    }))
}

fn positive(name: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{name} {v:?}: want a number greater than 0")),
    }
}

pub fn parse_url(s: &str) -> Result<Url, String> {
    let rest = s
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {s:?}: want http://HOST:PORT/PATH (plain http only)"))?;
    if rest.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("--url {s:?}: holds a space or control character"));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let path = match path.split_once('#') {
        Some((p, _)) => p.to_string(),
        None => path,
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("--url {s:?}: want http://HOST:PORT/PATH"));
    }
    let port = if let Some(v6) = authority.strip_prefix('[') {
        let (_, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("--url {s:?}: unclosed [ in the host"))?;
        match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("--url {s:?}: bad host"))?,
            ),
        }
    } else {
        authority.split_once(':').map(|(_, p)| p)
    };
    let connect = match port {
        None => format!("{authority}:80"),
        Some(p) => {
            if p.parse::<u16>().is_err() {
                return Err(format!("--url {s:?}: bad port {p:?}"));
            }
            authority.to_string()
        }
    };
    Ok(Url {
        authority: authority.to_string(),
        connect,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    const OK: &str = "--url http://127.0.0.1:8080/x --tokens t.txt --rate 1000 \
                      --connections 32 --duration 4";

    fn run_args(s: &str) -> Args {
        match parse(argv(s)) {
            Ok(Command::Run(a)) => a,
            Ok(Command::Help) => panic!("help"),
            Err(e) => panic!("{e}"),
        }
    }

    fn err(s: &str) -> String {
        match parse(argv(s)) {
            Ok(c) => panic!("accepted {s:?}: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_and_values() {
        let a = run_args(OK);
        assert_eq!(a.url.authority, "127.0.0.1:8080");
        assert_eq!(a.url.connect, "127.0.0.1:8080");
        assert_eq!(a.url.path, "/x");
        assert_eq!(a.tokens, PathBuf::from("t.txt"));
        assert_eq!(a.rate, 1000.0);
        assert_eq!(a.connections, 32);
        assert_eq!(a.duration, 4.0);
        assert_eq!(a.warmup, 1.0);
        assert_eq!(a.seed, None);
        assert_eq!(a.timeout_ms, 2000);
        let b = run_args(&format!("{OK} --warmup=0 --seed 7 --timeout-ms=150"));
        assert_eq!((b.warmup, b.seed, b.timeout_ms), (0.0, Some(7), 150));
    }

    #[test]
    fn errors() {
        assert!(err("--tokens t --rate 1 --connections 1 --duration 1").contains("missing --url"));
        assert!(err(&format!("{OK} --bogus 1")).contains("unknown argument"));
        assert!(err(&format!("{OK} --seed")).contains("needs a value"));
        assert!(err(&format!("{OK} --rate 5")).contains("twice"));
        let base = "--url http://h:1/ --tokens t --connections 1 --duration 1";
        assert!(err(&format!("{base} --rate abc")).contains("--rate"));
        assert!(err(&format!("{base} --rate 0")).contains("--rate"));
        assert!(err(&format!("{base} --rate -5")).contains("--rate"));
        assert!(err(&format!("{base} --rate inf")).contains("--rate"));
        let base = "--url http://h:1/ --tokens t --rate 1 --duration 1";
        assert!(err(&format!("{base} --connections 0")).contains("--connections"));
        assert!(err(&format!("{base} --connections 2.5")).contains("--connections"));
        assert!(err(&format!("{OK} --warmup -1")).contains("--warmup"));
        assert!(err(&format!("{OK} --timeout-ms 0")).contains("--timeout-ms"));
        assert!(err(&format!("{OK} --seed x")).contains("--seed"));
        let base = "--tokens t --rate 1 --connections 1 --duration 1";
        assert!(err(&format!("{base} --url https://h:1/")).contains("plain http"));
        assert!(err(&format!("{base} --url http://h:99999/")).contains("bad port"));
        assert!(err(&format!("{base} --url http:///x")).contains("--url"));
    }

    #[test]
    fn help() {
        assert_eq!(parse(argv("--help")), Ok(Command::Help));
    }

    #[test]
    fn urls() {
        let u = |s: &str| match parse_url(s) {
            Ok(u) => u,
            Err(e) => panic!("{e}"),
        };
        let a = u("http://localhost");
        assert_eq!(
            (a.authority.as_str(), a.connect.as_str(), a.path.as_str()),
            ("localhost", "localhost:80", "/")
        );
        let b = u("http://[::1]:9000/a/b?c=d#frag");
        assert_eq!(
            (b.authority.as_str(), b.connect.as_str(), b.path.as_str()),
            ("[::1]:9000", "[::1]:9000", "/a/b?c=d")
        );
        let c = u("http://h:1?q");
        assert_eq!(c.path, "/?q");
    }
}
