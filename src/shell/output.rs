//! What the shell client writes: rows of backups or targets, as an aligned table for people, a
//! JSON object a line, or CSV (RFC 4180, header first). Sizes are human-readable in tables and
//! in KiB elsewhere; times are RFC 3339, UTC.

use std::io::Write;

use serde::Serialize;

use super::ShellError;
use super::rows::{BackupRow, ReportRow, TargetRow};

/// A project as tables show it: `account/project` for a member account's.
fn in_account(account: &str, project: &str) -> String {
    if account.is_empty() {
        project.to_owned()
    } else {
        format!("{account}/{project}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

pub struct Writer<W: Write> {
    format: Format,
    csv: Option<csv::Writer<W>>,
    out: Option<W>,
    /// A table is aligned once every row is known.
    table: Vec<Vec<String>>,
    header: Option<Vec<&'static str>>,
}

impl<W: Write> Writer<W> {
    /// A writer of rows with these CSV `columns` (written first, even when no row follows).
    pub fn new(format: Format, out: W, columns: &[&str]) -> Result<Self, ShellError> {
        let (csv, out) = match format {
            Format::Csv => {
                let mut csv = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(out);
                csv.write_record(columns).map_err(output_error)?;
                (Some(csv), None)
            }
            _ => (None, Some(out)),
        };
        Ok(Writer {
            format,
            csv,
            out,
            table: Vec::new(),
            header: None,
        })
    }

    fn write<R: Serialize>(
        &mut self,
        row: &R,
        cells: impl FnOnce() -> (Vec<&'static str>, Vec<String>),
    ) -> Result<(), ShellError> {
        match self.format {
            Format::Csv => self
                .csv
                .as_mut()
                .expect("a CSV writer")
                .serialize(row)
                .map_err(output_error),
            Format::Json => {
                let out = self.out.as_mut().expect("an output");
                serde_json::to_writer(&mut *out, row)
                    .map_err(|e| output_error(std::io::Error::from(e)))?;
                out.write_all(b"\n").map_err(output_error)
            }
            Format::Table => {
                let (header, cells) = cells();
                self.header.get_or_insert(header);
                self.table.push(cells);
                Ok(())
            }
        }
    }

    pub fn backup(&mut self, row: &BackupRow) -> Result<(), ShellError> {
        self.write(row, || {
            let project = in_account(
                &row.account_name,
                if row.project_name.is_empty() {
                    &row.project_id
                } else {
                    &row.project_name
                },
            );
            (
                vec![
                    "CREATED (UTC)",
                    "REGION",
                    "PROJECT",
                    "INSTANCE",
                    "BACKUP",
                    "TYPE",
                    "STATUS",
                    "SIZE",
                ],
                vec![
                    table_time(&row.created),
                    row.region.clone(),
                    project,
                    row.instance_name.clone(),
                    row.backup_name.clone(),
                    row.backup_type.clone(),
                    row.status.clone(),
                    human_size(row.size_kb),
                ],
            )
        })
    }

    pub fn instance(&mut self, row: &ReportRow) -> Result<(), ShellError> {
        self.write(row, || {
            let project = in_account(
                &row.account_name,
                if row.project_name.is_empty() {
                    &row.project_id
                } else {
                    &row.project_name
                },
            );
            let instance = if row.instance_name.is_empty() {
                row.instance_id.clone()
            } else {
                row.instance_name.clone()
            };
            (
                vec![
                    "PROTECTION",
                    "REGION",
                    "PROJECT",
                    "INSTANCE",
                    "STATUS",
                    "BACKUPS",
                    "SIZE",
                    "NEWEST (UTC)",
                    "NEWEST AUTO (UTC)",
                ],
                vec![
                    row.protection.clone(),
                    row.region.clone(),
                    project,
                    instance,
                    row.instance_status.clone(),
                    row.backup_count.to_string(),
                    human_size(row.total_size_kb),
                    table_time(&row.newest_backup_time),
                    table_time(&row.newest_auto_backup_time),
                ],
            )
        })
    }

    pub fn target(&mut self, row: &TargetRow) -> Result<(), ShellError> {
        self.write(row, || {
            (
                vec![
                    "PROJECT ID",
                    "NAME",
                    "ACCOUNT",
                    "REGION",
                    "CREDENTIAL",
                    "SOURCE",
                    "LAST SUCCESS (UTC)",
                    "LAST ERROR",
                ],
                vec![
                    row.project_id.clone(),
                    row.project_name.clone(),
                    match row.account_status.as_str() {
                        "" | "active" => row.account_name.clone(),
                        status => format!("{} ({status})", row.account_name),
                    },
                    row.region.clone(),
                    row.credential.clone(),
                    row.source.clone(),
                    table_time(&row.last_success),
                    row.last_error.clone(),
                ],
            )
        })
    }

    pub fn finish(mut self) -> Result<(), ShellError> {
        let failed = output_error;
        if let Some(mut csv) = self.csv.take() {
            csv.flush().map_err(failed)?;
        }
        let Some(mut out) = self.out.take() else {
            return Ok(());
        };
        if let Some(header) = &self.header {
            let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
            for row in &self.table {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |cells: &mut dyn Iterator<Item = &str>| {
                let mut text = String::new();
                for (i, (cell, w)) in cells.zip(&widths).enumerate() {
                    if i > 0 {
                        text.push_str("  ");
                    }
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
                }
                text.trim_end().to_owned()
            };
            writeln!(out, "{}", line(&mut header.iter().copied())).map_err(failed)?;
            for row in &self.table {
                writeln!(out, "{}", line(&mut row.iter().map(String::as_str))).map_err(failed)?;
            }
        }
        out.flush().map_err(failed)
    }
}

/// A closed pipe (`| head`) is the reader saying it has enough, not an error.
fn output_error(e: impl Into<OutputError>) -> ShellError {
    match e.into() {
        OutputError(Some(io)) if io.kind() == std::io::ErrorKind::BrokenPipe => {
            ShellError::OutputClosed
        }
        OutputError(Some(io)) => ShellError::Output(io.to_string()),
        OutputError(None) => ShellError::Output("a row could not be written".into()),
    }
}

/// An output failure, with its I/O cause when it has one.
pub struct OutputError(Option<std::io::Error>);

impl From<std::io::Error> for OutputError {
    fn from(e: std::io::Error) -> Self {
        OutputError(Some(e))
    }
}

impl From<csv::Error> for OutputError {
    fn from(e: csv::Error) -> Self {
        match e.into_kind() {
            csv::ErrorKind::Io(io) => OutputError(Some(io)),
            _ => OutputError(None),
        }
    }
}

/// A time as a table shows it: `2026-11-29 08:00:00`, UTC, to the second.
fn table_time(t: &str) -> String {
    let t = t.trim_end_matches('Z');
    let whole = t.split_once('.').map_or(t, |(seconds, _)| seconds);
    whole.replace('T', " ")
}

/// `5.4 KiB`, `12.0 MiB`.
pub fn human_size(kb: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = kb;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Targets done and backups so far, on stderr (only made on a terminal).
pub struct Progress {
    bar: indicatif::ProgressBar,
    backups: std::cell::Cell<u64>,
}

impl Progress {
    pub fn new(targets: u64) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(targets),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} targets, {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Progress {
            bar,
            backups: std::cell::Cell::new(0),
        }
    }

    pub fn advance(&self, targets: u64, backups: u64) {
        self.bar.inc(targets);
        self.backups.set(self.backups.get() + backups);
        self.bar
            .set_message(format!("{} backups", self.backups.get()));
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::rows::TARGET_COLUMNS;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(5.419922), "5.4 KiB");
        assert_eq!(human_size(2048.0), "2.0 MiB");
        assert_eq!(human_size(3.5 * 1024.0 * 1024.0), "3.5 GiB");
    }

    #[test]
    fn a_table_is_aligned() {
        let mut buf = Vec::new();
        let mut w = Writer::new(Format::Table, &mut buf, &TARGET_COLUMNS).unwrap();
        for (region, name) in [("cn-north-4", "a"), ("ap-southeast-1", "a-longer-name")] {
            w.target(&TargetRow {
                project_id: "p".into(),
                project_name: name.into(),
                region: region.into(),
                endpoint: String::new(),
                credential: "c".into(),
                source: "config".into(),
                last_success: "2026-11-29T08:00:00Z".into(),
                last_error: String::new(),
                account_id: String::new(),
                account_name: String::new(),
                account_status: String::new(),
            })
            .unwrap();
        }
        w.finish().unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str| l.find("c  ").unwrap();
        assert!(lines[1..].iter().all(|l| col(l) == col(lines[1])), "{text}");
        assert!(lines[1].contains("2026-11-29 08:00:00"), "{text}");
        assert_eq!(
            table_time("2026-11-29T08:00:00.123456789Z"),
            "2026-11-29 08:00:00"
        );
    }
}
