//! Reading uploaded CSV files, shared by member lists and user lists: the byte-order mark,
//! line numbers, unreadable rows, empty lines, the row limit and the collected row errors.

use serde::{Deserialize, Serialize};

use crate::directory::fold;

/// At most this many row errors are reported (the count of all of them is always given).
pub const MAX_ROW_ERRORS: usize = 1000;
/// At most this many rows per upload.
pub const MAX_ROWS: usize = 1_000_000;

/// One problem with one row (line 1 is the header of a CSV file; JSON members count from 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RowError {
    pub line: u64,
    pub column: Option<String>,
    pub reason: String,
}

/// Collects row errors, keeping the first [`MAX_ROW_ERRORS`] and counting all.
#[derive(Debug, Default)]
pub struct RowErrors {
    pub errors: Vec<RowError>,
    pub total: usize,
}

impl RowErrors {
    pub fn push(&mut self, line: u64, column: Option<&str>, reason: impl Into<String>) {
        self.total += 1;
        if self.errors.len() < MAX_ROW_ERRORS {
            self.errors.push(RowError {
                line,
                column: column.map(str::to_owned),
                reason: reason.into(),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Turns byte offsets into 1-based line numbers, for offsets that only grow.
pub struct LineCounter<'a> {
    body: &'a [u8],
    offset: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        LineCounter {
            body,
            offset: 0,
            line: 1,
        }
    }

    /// The line a record starting at `byte` is on. The reader may place a record's start on
    /// the line ends before it (after a CR, or on skipped empty lines); those are stepped over.
    pub fn line_at(&mut self, byte: u64) -> u64 {
        let mut to = (byte as usize).min(self.body.len());
        while to < self.body.len() && matches!(self.body[to], b'\r' | b'\n') {
            to += 1;
        }
        if to > self.offset {
            self.line += self.body[self.offset..to]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            self.offset = to;
        }
        self.line
    }
}

/// A CSV file with a header row (UTF-8, optional BOM, CRLF or LF, RFC 4180 quoting).
pub struct CsvFile<'a> {
    reader: csv::Reader<&'a [u8]>,
    lines: LineCounter<'a>,
    /// The header's names, trimmed and folded.
    pub headers: Vec<String>,
}

impl<'a> CsvFile<'a> {
    /// Reads the header; an unreadable one is an error at line 1.
    pub fn open(body: &'a [u8], errors: &mut RowErrors) -> Option<Self> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(body);
        let headers = match reader.headers() {
            Ok(h) => h.iter().map(|h| fold(h.trim())).collect(),
            Err(e) => {
                errors.push(1, None, format!("unreadable header: {e}"));
                return None;
            }
        };
        Some(CsvFile {
            reader,
            // Line numbers are counted from byte offsets: the csv crate's own count is off by
            // one after a CRLF header.
            lines: LineCounter::new(body),
            headers,
        })
    }

    /// Calls `each` with the line number of every record that is not empty. A record that is
    /// not UTF-8 is an error and skipped; any other unreadable record, or more than
    /// [`MAX_ROWS`] records, is an error and ends the file.
    pub fn for_each(
        mut self,
        errors: &mut RowErrors,
        mut each: impl FnMut(u64, &csv::StringRecord),
    ) {
        let mut record = csv::StringRecord::new();
        let mut rows = 0usize;
        loop {
            let at = self.reader.position().byte();
            match self.reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let line = self.lines.line_at(e.position().map_or(at, |p| p.byte()));
                    errors.push(line, None, format!("unreadable row: {e}"));
                    if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                        continue;
                    }
                    break;
                }
            }
            let line = self
                .lines
                .line_at(record.position().map_or(at, |p| p.byte()));
            if record.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            if rows >= MAX_ROWS {
                errors.push(
                    line,
                    None,
                    format!("a file may hold at most {MAX_ROWS} rows"),
                );
                break;
            }
            rows += 1;
            each(line, &record);
        }
    }
}
