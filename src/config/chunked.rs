//! Reading a file that lists many `[[projects]]`. The TOML parser builds a tree of the whole
//! document first, about 3 KB for each project table: 100,000 projects would need 290 MiB for a
//! moment at start-up. The projects are parsed a thousand at a time instead, and the rest of
//! the file on its own. A file this does not read cleanly is parsed whole, as before, so that
//! every problem is reported with its key.

use serde::Deserialize;

use super::raw::{RawConfig, RawProject};

/// Projects parsed at once.
const CHUNK: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Projects {
    #[serde(default)]
    projects: Vec<RawProject>,
}

/// The file, its `[[projects]]` parsed in chunks; `None` when anything does not parse (or the
/// file is not laid out as plain `[[projects]]` tables).
pub(super) fn parse(text: &str) -> Option<RawConfig> {
    let (rest, chunks) = split(text)?;
    let mut raw: RawConfig = toml::from_str(&rest).ok()?;
    if chunks.is_empty() {
        return Some(raw);
    }
    if !raw.projects.is_empty() {
        return None;
    }
    for chunk in chunks {
        let parsed: Projects = toml::from_str(&chunk).ok()?;
        raw.projects.extend(parsed.projects);
    }
    Some(raw)
}

/// The file without its `[[projects]]` tables (their lines left empty), and those tables in
/// chunks of `CHUNK`.
fn split(text: &str) -> Option<(String, Vec<String>)> {
    let mut rest = String::with_capacity(text.len() / 4);
    let mut chunks = Vec::new();
    let (mut chunk, mut in_chunk) = (String::new(), 0usize);
    let mut in_projects = false;
    let mut in_string = false;
    for line in text.lines() {
        let header = !in_string && line.trim_start().starts_with('[');
        // A line that opens or closes a multi-line string toggles it.
        if (line.matches("\"\"\"").count() + line.matches("'''").count()) % 2 == 1 {
            in_string = !in_string;
        }
        if header {
            in_projects = line.trim() == "[[projects]]";
            if in_projects {
                if in_chunk == CHUNK {
                    chunks.push(std::mem::take(&mut chunk));
                    in_chunk = 0;
                }
                in_chunk += 1;
            }
        }
        if in_projects {
            chunk.push_str(line);
            chunk.push('\n');
        } else {
            rest.push_str(line);
        }
        rest.push('\n');
    }
    if in_string {
        return None;
    }
    if in_chunk > 0 {
        chunks.push(chunk);
    }
    Some((rest, chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn projects(n: usize) -> String {
        let mut text = String::from(
            "listen = \"127.0.0.1:1\"\n[credentials.ops]\nkind = \"token\"\ntoken_env = \"X\"\n",
        );
        for i in 0..n {
            text.push_str(&format!(
                "[[projects]]\nid = \"{i:032x}\"\nregion = \"cn-north-4\"\ncredential = \"ops\"\n\n"
            ));
            if i == 3 {
                text.push_str("[cache]\nttl_seconds = 7\n");
            }
        }
        text
    }

    #[test]
    fn chunks_read_as_the_whole_file_does() {
        let text = projects(2 * CHUNK + 5);
        let whole: RawConfig = toml::from_str(&text).unwrap();
        let chunked = parse(&text).unwrap();
        assert_eq!(chunked.projects.len(), 2 * CHUNK + 5);
        let ids = |r: &RawConfig| r.projects.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&chunked), ids(&whole));
        assert_eq!(
            chunked.cache.ttl_seconds, 7,
            "tables between projects are kept"
        );
    }

    #[test]
    fn anything_unusual_is_left_to_the_whole_parse() {
        let broken = format!("{}[[projects]]\nid = 5\n", projects(2));
        assert!(parse(&broken).is_none());
        let inline = "projects = [{id = \"a\", region = \"r\", credential = \"c\"}]\n[[projects]]\nid = \"b\"\n";
        assert!(parse(inline).is_none());
        let in_string = "description = \"\"\"\n[[projects]]\n\"\"\"\n";
        assert!(parse(in_string).is_none());
    }
}
