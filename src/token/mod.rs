//! Finding the token in a request (`extract`) and reading its compact-JWS form without
//! trusting it (`jws`).

pub mod extract;
pub mod jws;
pub mod memo;

/// The `.`-separated segments of a compact JWS or JWE, as `str::split('.')` gives them,
/// the dots found by SIMD search (a token is mostly base64 between four dots at most).
pub fn segments(token: &str) -> impl Iterator<Item = &str> {
    spans(token.as_bytes(), b'.').map(|r| token.get(r).unwrap_or_default())
}

/// The pieces of `bytes` between `sep`s, as `<[u8]>::split` gives them (separators found
/// by SIMD search: header values and tokens are long, separators few).
pub fn pieces(bytes: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    spans(bytes, sep).map(|r| bytes.get(r).unwrap_or_default())
}

/// The ranges of the pieces of `bytes` between `sep`s.
fn spans(bytes: &[u8], sep: u8) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut at = memchr::memchr_iter(sep, bytes);
    let mut start = 0;
    std::iter::from_fn(move || {
        let from = start;
        if from > bytes.len() {
            return None;
        }
        let end = at.next().unwrap_or(bytes.len());
        start = end + 1;
        Some(from..end)
    })
}

/// One segment decoded as strict unpadded base64url (RFC 7515 §2: no padding, no
/// whitespace, no other alphabet, no non-zero trailing bits), or None. SIMD: the
/// segments are most of what tokengate's own code reads of a token.
pub fn decode(segment: &str) -> Option<Vec<u8>> {
    base64_simd::URL_SAFE_NO_PAD.decode_to_vec(segment).ok()
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
            let ours: Vec<&[u8]> = super::pieces(t.as_bytes(), b'.').collect();
            let std: Vec<&[u8]> = t.as_bytes().split(|b| *b == b'.').collect();
            assert_eq!(ours, std, "{t:?}");
        }
    }

    /// The SIMD decoder accepts exactly what the strict `base64` engine accepts, with the
    /// same bytes: every string of up to five characters over an alphabet of edge cases
    /// (padding, the standard alphabet's `+` and `/`, whitespace, non-zero trailing bits).
    #[test]
    fn decode_is_strict_unpadded_base64url() {
        use base64::Engine as _;
        let strict = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let alphabet = [
            'A', 'Q', 'R', 'g', 'w', '_', '-', '9', '=', '+', '/', ' ', '.',
        ];
        let mut words = vec![String::new()];
        let mut checked = 0;
        for _ in 0..5 {
            let mut longer = Vec::new();
            for w in &words {
                assert_eq!(super::decode(w), strict.decode(w).ok(), "{w:?}");
                checked += 1;
                longer.extend(alphabet.iter().map(|c| format!("{w}{c}")));
            }
            words = longer;
        }
        for w in &words {
            assert_eq!(super::decode(w), strict.decode(w).ok(), "{w:?}");
        }
        assert!(checked + words.len() > 400_000);
        // Long inputs go through the vector path: a valid one, then one bad byte anywhere.
        let long = strict.encode((0..=255u8).cycle().take(3000).collect::<Vec<u8>>());
        assert_eq!(super::decode(&long), strict.decode(&long).ok());
        for at in [0, 31, 32, 100, long.len() - 1] {
            let mut bad = long.clone().into_bytes();
            bad[at] = b'+';
            let bad = String::from_utf8(bad).unwrap_or_default();
            assert_eq!(super::decode(&bad), None, "'+' at {at}");
        }
    }
}
