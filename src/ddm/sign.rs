//! `SDK-HMAC-SHA256` request signing, as the official Huawei Cloud SDKs do it (auth.md). The
//! canonical pieces are shared by our signer and the simulator's verifier.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use prost_types::Timestamp;
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "SDK-HMAC-SHA256";

/// Everything but `A-Z a-z 0-9 - _ . ~` is percent-encoded (upper-case hex).
const SIGNING_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, SIGNING_SET).to_string()
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
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

/// The canonical form of a query as it arrived on the wire (`+` is a plus, not a space).
pub fn canonical_query_of_raw(raw: &str) -> String {
    let pairs: Vec<(String, String)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect();
    canonical_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Each path segment decoded then encoded, always ending with `/`.
pub fn canonical_uri(path: &str) -> String {
    let mut out = decode(path)
        .split('/')
        .map(encode)
        .collect::<Vec<_>>()
        .join("/");
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The headers that get signed: names lower-cased, values trimmed, sorted; never a name with `_`.
pub fn signable_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .into_iter()
        .filter(|(name, _)| !name.contains('_'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    out.sort();
    out
}

/// The request as it is signed.
pub struct Canonical<'a> {
    pub method: &'a str,
    /// The path as sent (may be percent-encoded).
    pub path: &'a str,
    /// The query as sent, without `?`.
    pub query: &'a str,
    /// From [`signable_headers`].
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Canonical<'_> {
    pub fn signed_headers(&self) -> String {
        self.headers
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(";")
    }

    pub fn request(&self) -> String {
        let mut out = String::new();
        out.push_str(self.method);
        out.push('\n');
        out.push_str(&canonical_uri(self.path));
        out.push('\n');
        out.push_str(&canonical_query_of_raw(self.query));
        out.push('\n');
        for (name, value) in self.headers {
            out.push_str(name);
            out.push(':');
            out.push_str(value);
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.signed_headers());
        out.push('\n');
        out.push_str(&hex::encode(Sha256::digest(self.body)));
        out
    }

    pub fn string_to_sign(&self, sdk_date: &str) -> String {
        format!(
            "{ALGORITHM}\n{sdk_date}\n{}",
            hex::encode(Sha256::digest(self.request().as_bytes()))
        )
    }
}

fn mac(secret_key: &[u8], string_to_sign: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret_key).expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    mac
}

/// Lower-case hex HMAC-SHA256 of the string to sign.
pub fn signature(secret_key: &[u8], string_to_sign: &str) -> String {
    hex::encode(mac(secret_key, string_to_sign).finalize().into_bytes())
}

/// Whether `signature_hex` is right, compared in constant time.
pub fn verify_signature(secret_key: &[u8], string_to_sign: &str, signature_hex: &str) -> bool {
    match hex::decode(signature_hex) {
        Ok(tag) => mac(secret_key, string_to_sign).verify_slice(&tag).is_ok(),
        Err(_) => false,
    }
}

/// The `Authorization` header value.
pub fn authorization(access_key: &str, signed_headers: &str, signature: &str) -> String {
    format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// The parts of an `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthorizationParts<'a> {
    pub access_key: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

pub fn parse_authorization(value: &str) -> Option<AuthorizationParts<'_>> {
    let rest = value.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
    let (mut access_key, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Access" => access_key = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return None,
        }
    }
    Some(AuthorizationParts {
        access_key: access_key.filter(|a| !a.is_empty())?,
        signed_headers: signed?.split(';').filter(|h| !h.is_empty()).collect(),
        signature: signature?,
    })
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
pub fn sdk_date(unix_seconds: i64) -> String {
    Timestamp {
        seconds: unix_seconds,
        nanos: 0,
    }
    .to_string()
    .replace(['-', ':'], "")
}

pub fn parse_sdk_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits =
        |r: std::ops::Range<usize>| s.get(r).filter(|d| d.bytes().all(|c| c.is_ascii_digit()));
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        digits(0..4)?,
        digits(4..6)?,
        digits(6..8)?,
        digits(9..11)?,
        digits(11..13)?,
        digits(13..15)?
    );
    rfc3339.parse::<Timestamp>().ok().map(|t| t.seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AK: &str = "HPUAEXAMPLEAKEXAMPLE";
    const SK: &str = "ExampleSecretKey0123456789abcdefghijklmn";
    const PID: &str = "0123456789abcdef0123456789abcdef";
    const DATE: &str = "20250219T025020Z";
    const HOST: &str = "ddm.cn-north-4.myhuaweicloud.com";

    /// Signs like the SDK and returns (sha256 of the canonical request, Authorization).
    fn sign(
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        ak: &str,
        sk: &str,
    ) -> (String, String) {
        let headers = signable_headers(headers.iter().copied());
        let c = Canonical {
            method,
            path,
            query,
            headers: &headers,
            body,
        };
        let date = &headers.iter().find(|(n, _)| n == "x-sdk-date").unwrap().1;
        let hashed = hex::encode(Sha256::digest(c.request().as_bytes()));
        let sig = signature(sk.as_bytes(), &c.string_to_sign(date));
        (hashed, authorization(ak, &c.signed_headers(), &sig))
    }

    fn path() -> String {
        format!("/v3/{PID}/backups")
    }

    #[test]
    fn vector_a() {
        let headers = [("Host", HOST), ("X-Project-Id", PID), ("X-Sdk-Date", DATE)];
        let c_headers = signable_headers(headers.iter().copied());
        let c = Canonical {
            method: "GET",
            path: &path(),
            query: "offset=0&limit=128",
            headers: &c_headers,
            body: b"",
        };
        assert_eq!(
            c.request(),
            format!(
                "GET\n/v3/{PID}/backups/\nlimit=128&offset=0\nhost:{HOST}\nx-project-id:{PID}\nx-sdk-date:{DATE}\n\nhost;x-project-id;x-sdk-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            )
        );
        let (hash, auth) = sign("GET", &path(), "offset=0&limit=128", &headers, b"", AK, SK);
        assert_eq!(
            hash,
            "3f5e2e6065e4a26b685025b9a8550cf39d4c7ff84659b1cb2ed2499335f2d8b2"
        );
        assert_eq!(
            auth,
            "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAKEXAMPLE, SignedHeaders=host;x-project-id;x-sdk-date, Signature=a9e5bd9e2eecd99ca5f7810c5f43b572932acc4ae543d77e37d40ab6e8abd1ba"
        );
    }

    fn sdk_headers() -> [(&'static str, &'static str); 5] {
        [
            ("Content-Type", "application/json"),
            ("User-Agent", "huaweicloud-usdk-python/3.0; test"),
            ("X-Project-Id", PID),
            ("X-Sdk-Date", DATE),
            ("Host", HOST),
        ]
    }

    #[test]
    fn vector_b() {
        let (hash, auth) = sign(
            "GET",
            &path(),
            "limit=128&offset=0",
            &sdk_headers(),
            b"",
            AK,
            SK,
        );
        assert_eq!(
            hash,
            "a07256bdb77aeb79c575d8edc47a3c37a4aaa069a0afb097a55b74ff27eec7e1"
        );
        assert_eq!(
            auth,
            "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAKEXAMPLE, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=2777b861ee2378f0b10536364397572ff7f9cb442a67b6ac92cce2069d7f6b8e"
        );
    }

    #[test]
    fn vector_c() {
        let wire = canonical_query([
            ("instance_name", "ddm a/b~中"),
            ("backup_name", "x+y*z"),
            ("offset", "0"),
            ("limit", "10"),
        ]);
        assert_eq!(
            wire,
            "backup_name=x%2By%2Az&instance_name=ddm%20a%2Fb~%E4%B8%AD&limit=10&offset=0"
        );
        assert_eq!(
            canonical_query_of_raw(&wire),
            wire,
            "the wire form is canonical"
        );
        let (_, auth) = sign("GET", &path(), &wire, &sdk_headers(), b"", AK, SK);
        assert_eq!(
            auth,
            "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAKEXAMPLE, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=5dd902c40fcc98fc9f93bc5dc3e7f59234c636ed655dbc17b867d8efc515fbbd"
        );
    }

    #[test]
    fn vector_d() {
        let headers = [
            ("Content-Type", "application/json"),
            ("Host", "service.region.example.com"),
            ("X-Sdk-Date", "20191115T033655Z"),
        ];
        let (hash, auth) = sign(
            "GET",
            "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs",
            "limit=2&marker=13551d6b-755d-4757-b956-536f674975c0",
            &headers,
            b"",
            "QTWAOYTTINDUT2QVKYUC",
            "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc",
        );
        assert_eq!(
            hash,
            "b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
        );
        assert!(auth.ends_with("SignedHeaders=content-type;host;x-sdk-date, Signature=7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"), "{auth}");
    }

    #[test]
    fn vector_e() {
        let headers = [("X-Sdk-Date", "20060102T150405Z"), ("TEST_UNDERSCORE", "x")];
        let (_, auth) = sign(
            "GET",
            "/path",
            "limit=1",
            &headers,
            b"",
            "AccessKey",
            "SecretKey",
        );
        assert_eq!(
            auth,
            "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=x-sdk-date, Signature=5a2ce64c865e0e6046321c6f3d5a77ba8413eeaf355c3166c03d58d02ac79624"
        );
    }

    #[test]
    fn vector_f() {
        let headers = [
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Host", "iam.cn-north-4.myhuaweicloud.com"),
            ("X-Sdk-Date", DATE),
        ];
        let (_, auth) = sign(
            "POST",
            "/v3/auth/tokens",
            "",
            &headers,
            br#"{"a":1}"#,
            "AK",
            "SK",
        );
        assert_eq!(
            auth,
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=content-type;host;x-sdk-date, Signature=3809b8442b658428744e426b99a7a70d25c3ff0e4719ec6d240639307db1e984"
        );
    }

    #[test]
    fn authorization_round_trips_and_signatures_verify() {
        let (_, auth) = sign(
            "GET",
            &path(),
            "limit=128&offset=0",
            &sdk_headers(),
            b"",
            AK,
            SK,
        );
        let parts = parse_authorization(&auth).unwrap();
        assert_eq!(parts.access_key, AK);
        assert_eq!(
            parts.signed_headers,
            [
                "content-type",
                "host",
                "user-agent",
                "x-project-id",
                "x-sdk-date"
            ]
        );
        assert!(verify_signature(
            SK.as_bytes(),
            "x",
            &signature(SK.as_bytes(), "x")
        ));
        assert!(!verify_signature(
            SK.as_bytes(),
            "x",
            &signature(b"other", "x")
        ));
        assert!(!verify_signature(SK.as_bytes(), "x", "not hex"));
        for bad in [
            "",
            "SDK-HMAC-SHA256",
            "AWS4 Access=a, SignedHeaders=b, Signature=c",
            "SDK-HMAC-SHA256 Access=, SignedHeaders=b, Signature=c",
        ] {
            assert_eq!(parse_authorization(bad), None, "{bad}");
        }
    }

    #[test]
    fn sdk_dates() {
        assert_eq!(sdk_date(1_739_933_420), DATE);
        assert_eq!(parse_sdk_date(DATE), Some(1_739_933_420));
        for bad in [
            "",
            "20250219025020Z",
            "20250219T025020",
            "2025-219T025020Z",
            "20251319T025020Z",
        ] {
            assert_eq!(parse_sdk_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn canonical_uris() {
        assert_eq!(canonical_uri("/v3/a%20b/backups"), "/v3/a%20b/backups/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/a/"), "/a/");
    }
}
