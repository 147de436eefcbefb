//! Finding the token in a request (`extract`) and reading its compact-JWS form without
//! trusting it (`jws`).

pub mod extract;
pub mod jws;

/// The `.`-separated segments of a compact JWS or JWE, as `str::split('.')` gives them,
/// the dots found by SIMD search (a token is mostly base64 between four dots at most).
pub fn segments(token: &str) -> impl Iterator<Item = &str> {
    let mut dots = memchr::memchr_iter(b'.', token.as_bytes());
    let mut start = 0;
    std::iter::from_fn(move || {
        let from = start;
        if from > token.len() {
            return None;
        }
        let end = dots.next().unwrap_or(token.len());
        start = end + 1;
        token.get(from..end)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_split_at_every_dot_like_str_split() {
        for t in [
            "",
            ".",
            "a",
            "a.b",
            "a..b",
            ".a.",
            "h.p.s",
            "h.k.i.c.t",
            "é.ü",
        ] {
            let ours: Vec<&str> = super::segments(t).collect();
            let std: Vec<&str> = t.split('.').collect();
            assert_eq!(ours, std, "{t:?}");
        }
    }
}
