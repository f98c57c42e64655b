//! `SDK-HMAC-SHA256` request signing, as the official Huawei Cloud SDKs do it (auth.md).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but `A-Z a-z 0-9 - _ . ~` is percent-encoded (upper-case hex).
const SIGNING_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, SIGNING_SET).to_string()
}

/// Pairs sorted by key then value, both encoded, joined with `&`: the signed form, which is
/// also what goes on the wire.
pub fn canonical_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    encoded.sort();
    let mut out = String::new();
    for (i, (k, v)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_query_matches_vector_c() {
        let q = canonical_query([
            ("instance_name", "ddm a/b~中"),
            ("backup_name", "x+y*z"),
            ("offset", "0"),
            ("limit", "10"),
        ]);
        assert_eq!(
            q,
            "backup_name=x%2By%2Az&instance_name=ddm%20a%2Fb~%E4%B8%AD&limit=10&offset=0"
        );
    }
}
