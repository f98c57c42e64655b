//! The upstream's JSON (`GET /v3/{project_id}/backups`), shared by our client and our simulator.
//!
//! Every item field is optional (as in the official SDK), unknown fields are ignored, and
//! `file_size` may be an integer or a float. Items are decoded one by one so that a single bad
//! item is reported and skipped instead of failing the whole page.

use std::borrow::Cow;

use prost_types::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::time::parse_upstream_time;
use crate::wire::{EncodedPage, Owner, PageBuilder};

/// A page of `ListBackups` with its items still raw: to find which item is bad.
#[derive(Debug, Deserialize)]
struct RawPage<'a> {
    #[serde(borrow, default)]
    backups: Option<Vec<&'a RawValue>>,
    total: Option<u64>,
}

/// The upstream's `BackupInfo`. Strings borrow from the body unless they hold escapes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupInfo<'a> {
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_id: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_name: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_status: Option<Cow<'a, str>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_size"
    )]
    pub file_size: Option<f64>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub created: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub backup_type: Option<Cow<'a, str>>,
}

/// An optional string that borrows from the body when it can. (serde's own `Option<Cow<str>>`
/// always copies: a `String` per field, ten per backup.)
fn borrowed<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }
    d.deserialize_option(Visit)
}

/// The upstream writes whole sizes as integers (`5`), others as floats (`5.419922`).
fn serialize_size<S: serde::Serializer>(size: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match size {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => s.serialize_i64(*v as i64),
        Some(v) => s.serialize_f64(*v),
        None => s.serialize_none(),
    }
}

/// The body the simulator sends for a page.
#[derive(Debug, Serialize)]
pub struct PageBody<'a> {
    pub backups: Vec<BackupInfo<'a>>,
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
}

/// Why a page could not be decoded at all.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PageDecodeError(pub String);

/// Decodes a page body. Fails only when the page as a whole is unreadable; bad items are
/// skipped and described in `skipped`.
pub fn decode_page(body: &[u8], owner: Owner<'_>) -> Result<EncodedPage, PageDecodeError> {
    // One pass when the page is well formed (the usual case): items go straight from the body
    // to the builder, and the body's UTF-8 is checked once rather than string by string…
    if let Ok(text) = std::str::from_utf8(body) {
        let mut builder = PageBuilder::new(owner, 0);
        let mut items = 0;
        let mut de = serde_json::Deserializer::from_str(text);
        let decoded = serde::de::DeserializeSeed::deserialize(
            PageSeed {
                builder: &mut builder,
                items: &mut items,
            },
            &mut de,
        )
        .and_then(|total| de.end().map(|()| total));
        if let Ok(total) = decoded {
            let total = total.ok_or_else(no_total)?;
            return Ok(builder.finish(total, items));
        }
    }
    // …else item by item, to keep the readable ones and say what is wrong with the others.
    let raw: RawPage<'_> = serde_json::from_slice(body)
        .map_err(|e| PageDecodeError(format!("the body is not a ListBackups page: {e}")))?;
    let total = raw.total.ok_or_else(no_total)?;
    let items = raw.backups.unwrap_or_default();
    let mut builder = PageBuilder::new(owner, items.len());
    for (index, item) in items.iter().enumerate() {
        let pushed = serde_json::from_str::<BackupInfo<'_>>(item.get())
            .map_err(|e| e.to_string())
            .and_then(|info| builder.push(&info));
        if let Err(why) = pushed {
            builder.skip(format!("item {index}: {why}"));
        }
    }
    Ok(builder.finish(total, items.len()))
}

/// A page's top level: `backups` are pushed to the builder as they are read (no list of them
/// is built), `total` is returned, anything else is skipped.
struct PageSeed<'b, 'p> {
    builder: &'b mut PageBuilder<'p>,
    items: &'b mut usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for PageSeed<'_, '_> {
    type Value = Option<u64>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PageSeed<'_, '_> {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a ListBackups page")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
        use serde::de::Error as _;
        let (mut total, mut seen_backups, mut seen_total) = (None, false, false);
        while let Some(key) = map.next_key::<PageKey>()? {
            match key {
                PageKey::Backups if seen_backups => {
                    return Err(A::Error::duplicate_field("backups"));
                }
                PageKey::Total if seen_total => return Err(A::Error::duplicate_field("total")),
                PageKey::Backups => {
                    seen_backups = true;
                    map.next_value_seed(ItemsSeed {
                        builder: &mut *self.builder,
                        items: &mut *self.items,
                    })?;
                }
                PageKey::Total => {
                    seen_total = true;
                    total = map.next_value::<Option<u64>>()?;
                }
                PageKey::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(total)
    }
}

enum PageKey {
    Backups,
    Total,
    Other,
}

impl<'de> Deserialize<'de> for PageKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = PageKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, v: &str) -> Result<PageKey, E> {
                Ok(match v {
                    "backups" => PageKey::Backups,
                    "total" => PageKey::Total,
                    _ => PageKey::Other,
                })
            }
        }
        d.deserialize_identifier(Visit)
    }
}

/// `backups`: null, or a list whose items are checked and encoded one at a time.
struct ItemsSeed<'b, 'p> {
    builder: &'b mut PageBuilder<'p>,
    items: &'b mut usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for ItemsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ItemsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of backups or null")
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(info) = seq.next_element::<BackupInfo<'de>>()? {
            let index = *self.items;
            *self.items += 1;
            if let Err(why) = self.builder.push(&info) {
                self.builder.skip(format!("item {index}: {why}"));
            }
        }
        Ok(())
    }
}

fn no_total() -> PageDecodeError {
    PageDecodeError("the page has no \"total\"".into())
}

/// What of a `BackupInfo` is checked before it is accepted.
pub struct Checked {
    pub created: Option<Timestamp>,
    pub updated: Option<Timestamp>,
    pub file_size_kb: f64,
}

impl BackupInfo<'_> {
    /// Unknown `status`, `instance_status` and `backup_type` values are kept verbatim; a
    /// missing id, an unparseable timestamp or a size that is not a number make the item
    /// unreadable.
    pub fn check(&self) -> Result<Checked, String> {
        let id = match self.id.as_deref() {
            Some(id) if !id.is_empty() => id,
            _ => return Err("the backup has no id".into()),
        };
        let created = parse_time_field("created", self.created.as_deref())?;
        let updated = parse_time_field("updated", self.updated.as_deref())?;
        let file_size_kb = self.file_size.unwrap_or(0.0);
        if !file_size_kb.is_finite() {
            return Err(format!("backup {id}: file_size is not a number"));
        }
        Ok(Checked {
            created,
            updated,
            file_size_kb,
        })
    }
}

fn parse_time_field(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, String> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => parse_upstream_time(v)
            .map(Some)
            .ok_or_else(|| format!("{field} {v:?} is not a yyyy-MM-ddTHH:mm:ss+hhmm time")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn owner() -> Owner<'static> {
        Owner {
            project_id: "p",
            project_name: "p-name",
            region: "r",
            account_id: "",
            account_name: "",
        }
    }

    #[test]
    fn decodes_the_documented_example_and_tolerates_variants() {
        let body = br#"{"backups":[
            {"id":"c131f9339****5cdebe350228br09","name":"Backup","description":"auto metadata backup",
             "status":"normal","instance_id":"169f4f2fd6****04385a18ain09","instance_name":"ddm-test",
             "instance_status":"normal","file_size":5.419922,"created":"2025-02-19T02:50:20+0000",
             "updated":"2025-02-19T02:50:37+0000","backup_type":"auto_metadata"},
            {"id":"b2","file_size":5,"backup_type":"incremental","status":"FROZEN","extra":{"x":1}},
            {"id":"b3","created":"yesterday"},
            {"name":"no id"},
            {"id":"b5","file_size":"big"}
        ],"total":5,"offset":0,"limit":10}"#;
        let page = decode_page(body, owner()).unwrap();
        assert_eq!(page.total, 5);
        assert_eq!(page.items, 5);
        let backups = page.backups();
        assert_eq!(backups.len(), 2);
        assert_eq!(page.meta(1).backup_type_name, "incremental");
        let first = &backups[0];
        assert_eq!(first.file_size_kb, 5.419922);
        assert_eq!(first.created.unwrap().seconds, 1_739_933_420);
        assert_eq!(first.backup_type(), pb::BackupType::AutoMetadata);
        assert_eq!(
            (
                first.project_id.as_str(),
                first.project_name.as_str(),
                first.region.as_str()
            ),
            ("p", "p-name", "r")
        );
        let second = &backups[1];
        assert_eq!(second.file_size_kb, 5.0);
        assert_eq!(second.backup_type(), pb::BackupType::Other);
        assert_eq!(second.backup_type_name, "incremental");
        assert_eq!(second.status, "FROZEN");
        assert_eq!(page.skipped.len(), 3, "{:?}", page.skipped);
        assert!(page.skipped[0].contains("created"), "{:?}", page.skipped);
    }

    #[test]
    fn unreadable_pages_fail_clearly() {
        for body in [
            &b"<html>502 Bad Gateway</html>"[..],
            b"{\"backups\":[]}",
            b"{\"total\":\"3\"}",
            b"",
            b"{\"total\":-1}",
            b"{\"backups\":[{\"id\":\"a\"}],\"backups\":[{\"id\":\"a\"}],\"total\":1}",
        ] {
            assert!(
                decode_page(body, owner()).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(decode_page(b"{\"total\":0}", owner()).unwrap().items, 0);
    }

    /// A random JSON value, nested up to `depth`.
    fn random_json(rng: &mut fastrand::Rng, depth: u32) -> serde_json::Value {
        use serde_json::{Value, json};
        match rng.u8(..if depth == 0 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => json!(rng.bool()),
            2 => json!(rng.i64(..)),
            3 => json!(rng.f64() * 1e300),
            4 => json!(
                [
                    "2025-02-19T02:50:20+0800",
                    "",
                    "x",
                    "9999-99-99T99:99:99+9999",
                    "2025-02-19T02:50:20+08:00"
                ][rng.usize(..5)]
            ),
            5 => json!(String::from_utf8_lossy(
                &(0..rng.usize(..20)).map(|_| rng.u8(..)).collect::<Vec<_>>()
            )),
            6 => Value::Array(
                (0..rng.usize(..4))
                    .map(|_| random_json(rng, depth - 1))
                    .collect(),
            ),
            _ => {
                let keys = [
                    "id",
                    "name",
                    "file_size",
                    "created",
                    "updated",
                    "backup_type",
                    "status",
                    "total",
                    "backups",
                    "x",
                ];
                Value::Object(
                    (0..rng.usize(..6))
                        .map(|_| {
                            (
                                keys[rng.usize(..keys.len())].to_owned(),
                                random_json(rng, depth - 1),
                            )
                        })
                        .collect(),
                )
            }
        }
    }

    #[test]
    fn decoding_never_panics_on_any_input() {
        let valid = br#"{"backups":[{"id":"a","name":"n","file_size":5.4,"created":"2025-02-19T02:50:20+0000","updated":"2025-02-19T02:50:37+0800","backup_type":"auto_metadata"}],"total":1,"offset":0,"limit":10}"#;
        let mut rng = fastrand::Rng::with_seed(0xbacc);
        for _ in 0..20_000 {
            let mut body = valid.to_vec();
            match rng.u8(..5) {
                0 => body.truncate(rng.usize(..body.len())),
                1 => {
                    for _ in 0..rng.usize(1..8) {
                        let i = rng.usize(..body.len());
                        body[i] = rng.u8(..);
                    }
                }
                2 => {
                    let i = rng.usize(..body.len());
                    let junk: Vec<u8> = (0..rng.usize(1..16)).map(|_| rng.u8(..)).collect();
                    body.splice(i..i, junk);
                }
                3 => body = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect(),
                _ => {
                    // Right syntax, any shape: every field of any type.
                    let item = random_json(&mut rng, 3);
                    let page = serde_json::json!({"backups": [item, random_json(&mut rng, 2)], "total": random_json(&mut rng, 1)});
                    body = page.to_string().into_bytes();
                }
            }
            if let Ok(page) = decode_page(&body, owner()) {
                assert_eq!(page.len() + page.skipped.len(), page.items);
                assert_eq!(page.backups().len(), page.len(), "what is encoded decodes");
            }
        }
    }

    #[test]
    fn strings_borrow_from_the_body_unless_escaped() {
        let json = r#"{"id":"plain","name":"with \"quote\"","status":null}"#;
        let info: BackupInfo<'_> = serde_json::from_str(json).unwrap();
        assert!(matches!(info.id, Some(Cow::Borrowed("plain"))));
        assert!(matches!(info.name.as_deref(), Some("with \"quote\"")));
        assert_eq!(info.status, None);
        assert!(serde_json::from_str::<BackupInfo<'_>>(r#"{"id":5}"#).is_err());
    }

    #[test]
    fn sizes_serialize_like_the_upstream() {
        let info = BackupInfo {
            file_size: Some(5.0),
            ..Default::default()
        };
        assert_eq!(serde_json::to_string(&info).unwrap(), r#"{"file_size":5}"#);
        let info = BackupInfo {
            file_size: Some(5.25),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"file_size":5.25}"#
        );
    }
}
