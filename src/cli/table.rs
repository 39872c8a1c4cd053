//! Output for people: aligned tables whose state column is coloured when (and only when)
//! standard output is a terminal and `NO_COLOR` is not set, and "3 minutes ago" for datetimes.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// A table: a header row, then rows of cells; `state` is the index of the column to colour.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    state: Option<usize>,
}

impl Table {
    /// An empty table with these column names; `state` names the column that holds states.
    pub fn new(header: Vec<&'static str>, state: Option<&str>) -> Table {
        let state = state.and_then(|s| header.iter().position(|h| *h == s));
        Table {
            header,
            rows: Vec::new(),
            state,
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text; `colour` colours the state column.
    pub fn render(&self, colour: bool) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String], is_header: bool| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate().take(columns) {
                let last = i + 1 == columns;
                // Padding first, on the plain text, so colour codes do not disturb alignment.
                let pad = if last {
                    String::new()
                } else {
                    " ".repeat(widths[i] - cell.chars().count() + 2)
                };
                if colour && !is_header && Some(i) == self.state {
                    text.push_str(&paint(cell));
                } else {
                    text.push_str(cell);
                }
                text.push_str(&pad);
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        line(&header, true);
        for row in &self.rows {
            line(row, false);
        }
        out
    }

    /// Prints the table, coloured if standard output is a terminal.
    pub fn print(&self) {
        print!("{}", self.render(colour()));
    }
}

/// A column of a table of API objects: its name and how to show it from an object.
pub type Column = (&'static str, fn(&Value) -> String);

/// API objects as a table, one row each; `state` names the column to colour.
pub fn objects(list: &[Value], columns: &[Column], state: Option<&str>) -> Table {
    let mut t = Table::new(columns.iter().map(|c| c.0).collect(), state);
    for o in list {
        t.row(columns.iter().map(|c| (c.1)(o)).collect());
    }
    t
}

/// Whether to colour: standard output is a terminal and `NO_COLOR` is unset or empty.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A state in its colour: green when up, yellow while changing, red when down or failed.
fn paint(state: &str) -> String {
    let code = match state.to_ascii_lowercase().as_str() {
        "running" | "success" => "32",
        "partly running" | "starting" | "stopping" | "scaling" | "redeploying" | "draining"
        | "terminating" | "in progress" | "init" | "pending" => "33",
        "stopped" | "terminated" | "not running" | "failed" | "deleted" => "31",
        _ => return state.to_owned(),
    };
    format!("\x1b[{code}m{state}\x1b[0m")
}

/// A JSON value as a cell: strings bare, `null` empty.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first 8 characters of a UUID, as Tutum's tables show them.
pub fn short(v: &Value) -> String {
    cell(v).chars().take(8).collect()
}

/// "5 seconds ago" for an RFC 2822 (Tutum) or RFC 3339 (Unikraft) datetime; empty if absent.
pub fn ago(v: &Value) -> String {
    let Some(t) = v
        .as_str()
        .and_then(|s| parse_rfc2822(s).or_else(|| parse_rfc3339(s)))
    else {
        return cell(v);
    };
    let secs = SystemTime::now()
        .duration_since(t)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (n, unit) = match secs {
        0..60 => (secs, "second"),
        60..3_600 => (secs / 60, "minute"),
        3_600..86_400 => (secs / 3_600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn instant(y: i64, m: u32, d: u32, h: u64, min: u64, s: u64) -> Option<SystemTime> {
    let days = u64::try_from(days_from_civil(y, m, d)).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3_600 + min * 60 + s))
}

/// `Mon, 13 Oct 2014 11:01:43 +0000` (UTC only, as the server writes it).
fn parse_rfc2822(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = s.split_whitespace().skip(1);
    let d = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let m = MONTHS.iter().position(|x| *x == month)? as u32 + 1;
    let y = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|x| x.parse::<u64>().ok());
    let (h, min, sec) = (hms.next()??, hms.next()??, hms.next()??);
    (parts.next()? == "+0000").then_some(())?;
    instant(y, m, d, h, min, sec)
}

/// `2014-10-13T11:01:43.000Z`.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut ymd = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let mut hms = time.split(':');
    let h = hms.next()?.parse().ok()?;
    let min = hms.next()?.parse().ok()?;
    let sec: f64 = hms.next()?.parse().ok()?;
    instant(
        y,
        u32::try_from(m).ok()?,
        u32::try_from(d).ok()?,
        h,
        min,
        sec as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_colour_only_the_state_column() {
        let mut t = Table::new(vec!["NAME", "STATE", "IMAGE"], Some("STATE"));
        t.row(vec!["web-1".into(), "Running".into(), "hello".into()]);
        t.row(vec![
            "a-much-longer-name".into(),
            "Stopped".into(),
            "x".into(),
        ]);
        assert_eq!(
            t.render(false),
            "NAME                STATE    IMAGE\n\
             web-1               Running  hello\n\
             a-much-longer-name  Stopped  x\n"
        );
        let coloured = t.render(true);
        assert!(
            coloured.contains("\x1b[32mRunning\x1b[0m  hello"),
            "{coloured}"
        );
        assert!(!coloured.contains("\x1b[32mNAME"), "{coloured}");
    }

    #[test]
    fn datetimes_read_back() {
        let t = UNIX_EPOCH + Duration::from_secs(1_413_198_103);
        assert_eq!(parse_rfc2822("Mon, 13 Oct 2014 11:01:43 +0000"), Some(t));
        assert_eq!(parse_rfc3339("2014-10-13T11:01:43.000Z"), Some(t));
        assert_eq!(parse_rfc2822("yesterday"), None);
        assert_eq!(ago(&json!(null)), "");
        assert!(ago(&json!("Thu, 01 Jan 1970 00:00:00 +0000")).ends_with("days ago"));
    }
}
