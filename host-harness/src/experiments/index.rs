//! The `reproduce all` index page: one HTML file beside the experiments' folders that shows every experiment's
//! verdict, tables, checks and plots, with links to its report and files.

use super::Summary;
use crate::output::report::html_escape as esc;

const STYLE: &str = "body{font-family:sans-serif;max-width:1600px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0}caption{text-align:left;font-weight:bold;padding:.3em 0}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}\
.pass{color:#176617}.fail{color:#b00000}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}\
section{border-top:2px solid #444;margin-top:2em}figcaption{color:#555;font-size:.9em}";

/// The page for `summaries` (in run order).
pub fn page(summaries: &[Summary], quick: bool, total_seconds: f64) -> String {
    let mut h = String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str(&format!("<title>dualform: reproduce all{}</title>\n", if quick { " (quick)" } else { "" }));
    h.push_str(&format!("<style>{STYLE}</style>\n</head>\n<body>\n"));
    h.push_str(&format!(
        "<h1>dualform: reproduce all{}</h1>\n<p>In-context learning as gradient descent: every experiment of \
         <code>dualform reproduce</code>, trained and evaluated with the core's kernels. {} experiments in {:.0} s.{}</p>\n",
        if quick { " (quick)" } else { "" },
        summaries.len(),
        total_seconds,
        if quick { " <strong>Quick run</strong>: reduced steps and tasks, for CI; the figures are not the full runs'." } else { "" }
    ));
    h.push_str(
        "<table>\n<caption>Experiments</caption>\n<tr><th>experiment</th><th>verdict</th><th>seconds</th></tr>\n",
    );
    for s in summaries {
        h.push_str(&format!(
            "<tr><td><a href=\"#{n}\">{n}</a></td><td class=\"{c}\">{v}</td><td>{t:.1}</td></tr>\n",
            n = esc(s.name),
            c = if s.verdict.passed { "pass" } else { "fail" },
            v = if s.verdict.passed { "pass" } else { "FAIL" },
            t = s.wall_seconds
        ));
    }
    h.push_str("</table>\n");
    for s in summaries {
        let folder = s.dest.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        h.push_str(&format!("<section id=\"{}\">\n<h2>{}</h2>\n<p>{}</p>\n", esc(s.name), esc(s.name), esc(s.about)));
        h.push_str(&format!(
            "<p class=\"{}\"><strong>Verdict:</strong> {}</p>\n",
            if s.verdict.passed { "pass" } else { "fail" },
            esc(&s.verdict.text)
        ));
        for t in &s.tables {
            h.push_str(&t.html());
        }
        if !s.checks.is_empty() {
            h.push_str("<p><strong>Checks</strong></p>\n<ul>\n");
            for c in &s.checks {
                h.push_str(&format!(
                    "<li class=\"{}\">[{}] {}</li>\n",
                    if c.passed { "pass" } else { "fail" },
                    if c.passed { "pass" } else { "FAIL" },
                    esc(&c.line())
                ));
            }
            h.push_str("</ul>\n");
        }
        for (file, caption) in &s.images {
            h.push_str(&format!(
                "<figure><img src=\"{f}/{i}\" alt=\"{c}\"><figcaption>{c}</figcaption></figure>\n",
                f = esc(&folder),
                i = esc(file),
                c = esc(caption)
            ));
        }
        h.push_str(&format!(
            "<p>Files: <a href=\"{f}/report.json\">{f}/report.json</a> and the rest of <a href=\"{f}/\">{f}/</a>.</p>\n</section>\n",
            f = esc(&folder)
        ));
    }
    h.push_str("</body>\n</html>\n");
    h
}
