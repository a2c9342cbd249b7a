//! Typed reports: one [`Report`] per run, from which both `report.json` and the printed tables are rendered (and the
//! `reproduce all` index page), with a verdict that is a list of named [`Check`]s. Tests read reports back through
//! these types ([`read`]), not through string paths into JSON.

use crate::HarnessError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::Path;

/// Which side of its bound a check's value must be on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `value <= bound`.
    AtMost,
    /// `value >= bound`.
    AtLeast,
}

/// One named criterion of a verdict: `value` against `bound` by `rule`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Short machine-readable name, e.g. `loss_vs_gd`.
    pub name: String,
    /// What it measures, in words.
    pub what: String,
    /// The measured value (NaN is written as `null` and fails).
    #[serde(serialize_with = "nan_as_null", deserialize_with = "null_as_nan")]
    pub value: f64,
    /// The bound.
    pub bound: f64,
    /// How value and bound compare.
    pub rule: Rule,
    /// Whether the value is on the right side of the bound.
    pub passed: bool,
}

fn nan_as_null<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Check {
    /// Passes when `value <= bound`.
    pub fn at_most(name: &str, what: &str, value: f64, bound: f64) -> Self {
        Self { name: name.into(), what: what.into(), value, bound, rule: Rule::AtMost, passed: value <= bound }
    }

    /// Passes when `value >= bound`.
    pub fn at_least(name: &str, what: &str, value: f64, bound: f64) -> Self {
        Self { name: name.into(), what: what.into(), value, bound, rule: Rule::AtLeast, passed: value >= bound }
    }

    /// `what value (needs <= bound)`.
    pub fn line(&self) -> String {
        let op = match self.rule {
            Rule::AtMost => "<=",
            Rule::AtLeast => ">=",
        };
        format!("{} {} (needs {op} {})", self.what, fmt_num(self.value), fmt_num(self.bound))
    }
}

/// `sentence`, followed by the names of the checks that failed, if any: "SENTENCE (failed: a, b)".
pub fn naming_failures(sentence: String, checks: &[Check]) -> String {
    let failed: Vec<&str> = checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
    if failed.is_empty() {
        sentence
    } else {
        format!("{sentence} (failed: {})", failed.join(", "))
    }
}

/// A number with four significant decimals, or in scientific notation when small or large.
pub fn fmt_num(v: f64) -> String {
    if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

/// The outcome in one sentence, and whether every check passed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Every check passed.
    pub passed: bool,
    /// The sentence printed and stored.
    pub text: String,
}

/// A table of results: a title, column headers, rows of cells.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Title line.
    pub title: String,
    /// Column headers.
    pub columns: Vec<String>,
    /// Rows of cells (as many as columns).
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers and no rows.
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Self {
        Self { title: title.into(), columns: columns.iter().map(|c| c.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row (as many cells as columns; the experiments' tests check that every table is rectangular).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Aligned plain text: the first column left-aligned, the rest right-aligned.
    pub fn text(&self) -> String {
        let cols = self.columns.len();
        let mut width = vec![0usize; cols];
        for row in std::iter::once(&self.columns).chain(&self.rows) {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |row: &Vec<String>| -> String {
            let cells: Vec<String> = row
                .iter()
                .zip(&width)
                .enumerate()
                .map(|(i, (c, w))| if i == 0 { format!("{c:<w$}") } else { format!("{c:>w$}") })
                .collect();
            format!("  {}", cells.join("  ").trim_end())
        };
        let mut t = format!("{}\n", self.title);
        t.push_str(&line(&self.columns));
        t.push('\n');
        for r in &self.rows {
            t.push_str(&line(r));
            t.push('\n');
        }
        t
    }

    /// The table as CSV (the title left out): the header, then one line per row; a cell holding a comma, a quote
    /// or a line break is quoted.
    pub fn csv(&self) -> String {
        let line = |row: &Vec<String>| {
            let cells: Vec<String> = row
                .iter()
                .map(|c| {
                    if c.contains([',', '"', '\n', '\r']) {
                        format!("\"{}\"", c.replace('"', "\"\""))
                    } else {
                        c.clone()
                    }
                })
                .collect();
            cells.join(",") + "\n"
        };
        std::iter::once(&self.columns).chain(&self.rows).map(line).collect()
    }

    /// An HTML table with a caption.
    pub fn html(&self) -> String {
        let esc = html_escape;
        let mut h = format!("<table>\n<caption>{}</caption>\n<tr>", esc(&self.title));
        for c in &self.columns {
            h.push_str(&format!("<th>{}</th>", esc(c)));
        }
        h.push_str("</tr>\n");
        for r in &self.rows {
            h.push_str("<tr>");
            for c in r {
                h.push_str(&format!("<td>{}</td>", esc(c)));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
        h
    }
}

/// A table row from values that display: `cells![k, "trained", loss.mean]` is
/// `vec![k.to_string(), "trained".to_string(), loss.mean.to_string()]` (numbers in Rust's shortest form that reads
/// back to the same value).
#[macro_export]
macro_rules! cells {
    ($($cell:expr),* $(,)?) => {
        vec![$($cell.to_string()),*]
    };
}

/// Escapes `&`, `<`, `>` and `"` for HTML.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Results that can show themselves as tables.
pub trait Tables {
    /// The tables, in reading order.
    fn tables(&self) -> Vec<Table>;
}

/// Everything one run found: the settings it ran with, its own results, the checks and the verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report<S, R> {
    /// The experiment's name.
    pub experiment: String,
    /// The settings (also the command-line arguments and their defaults).
    pub config: S,
    /// The experiment's results.
    pub results: R,
    /// The named criteria of the verdict.
    pub checks: Vec<Check>,
    /// The verdict.
    pub verdict: Verdict,
    /// Wall time of the whole run in seconds.
    pub wall_seconds: f64,
    /// The vector unit the training kernels ran on (`portable` or `avx2`, see `net::simd`): it changes the
    /// times, never the results.
    #[serde(default)]
    pub simd: String,
    /// The files written beside the report.
    pub files: Vec<String>,
}

impl<S, R: Tables> Report<S, R> {
    /// The printed form: the tables, the checks, the verdict.
    pub fn text(&self) -> String {
        let mut t = String::new();
        for table in self.results.tables() {
            t.push_str(&table.text());
        }
        if !self.checks.is_empty() {
            t.push_str("checks\n");
            for c in &self.checks {
                t.push_str(&format!("  [{}] {}\n", if c.passed { "pass" } else { "FAIL" }, c.line()));
            }
        }
        t.push_str(&format!("verdict: {}\n", self.verdict.text));
        t
    }
}

/// Reads a report written by the runner.
pub fn read<S: DeserializeOwned, R: DeserializeOwned>(path: &Path) -> Result<Report<S, R>, HarnessError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| HarnessError::Io(format!("reading {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| HarnessError::Io(format!("{}: not a report of this kind: {e}", path.display())))
}

/// Writes a report as pretty JSON.
pub fn write<S: Serialize, R: Serialize>(report: &Report<S, R>, path: &Path) -> Result<(), HarnessError> {
    let text = serde_json::to_string_pretty(report).map_err(|e| HarnessError::Io(e.to_string()))?;
    crate::output::staged::write(path, &text)
}
