//! The console's pages: plain HTML with a little CSS, readable on a small laptop screen, no
//! script. Every text from HQ goes through [`escape`].

use std::fmt::Write;

use tributary_apply::{ConflictDetail, ConflictEntry, ParkedEntry, RejectedBatch, SiteStatus};

use crate::parked::human_age;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2733}\
header{background:#1f4e5f;color:#fff;padding:8px 16px}header a{color:#fff;margin-right:16px}\
main{padding:12px 16px}table{border-collapse:collapse;width:100%}\
th,td{border-bottom:1px solid #d5dde3;padding:4px 6px;text-align:left;vertical-align:top}\
th{background:#eef3f6}.said{background:#fff6d6;padding:6px 10px;margin-bottom:10px}\
.side{display:flex;gap:16px}.side>div{flex:1}.diff{background:#ffe3e3}\
form.inline{display:inline}button{margin-right:6px}";

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(title: &str, said: Option<&str>, body: &str) -> String {
    let said = said.map_or(String::new(), |s| {
        format!("<p class=\"said\" id=\"said\">{}</p>", escape(s))
    });
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title} · Tributary</title><style>{STYLE}</style></head><body>\
         <header><strong>Tributary HQ</strong> &nbsp; <a href=\"/\">Sites</a>\
         <a href=\"/parked\">Parked rows</a><a href=\"/conflicts\">Conflicts</a>\
         <a href=\"/rejected\">Rejected batches</a></header>\
         <main><h1>{title}</h1>{said}{body}</main></body></html>",
        title = escape(title)
    )
}

pub fn login(problem: Option<&str>) -> String {
    layout(
        "Sign in",
        problem,
        "<form method=\"post\" action=\"/login\"><label>Console token \
         <input type=\"password\" name=\"token\" autofocus></label> \
         <button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
    )
}

pub fn error(problem: &str) -> String {
    layout("Something went wrong", Some(problem), "")
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or("-".to_owned(), |v| v.to_string())
}

pub fn sites(statuses: &[SiteStatus], silent_after_s: u64) -> String {
    let mut body = String::from(
        "<table><tr><th>site</th><th>state</th><th>epoch</th><th>batch</th>\
         <th>rows applied</th><th>parked</th><th>conflicts</th><th>rejected</th>\
         <th>lag</th><th>last heard</th><th>health</th></tr>",
    );
    for s in statuses {
        let state = match s.unseeded_after_epoch {
            // The console has no "below": say the remedy here.
            Some(earlier) if s.waiting_for_sequence.is_none() => format!(
                "not seeded since epoch {earlier}: run 'tributary seed --restart-stream' at the site"
            ),
            _ => crate::report::site_state(s, silent_after_s),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.site_id),
            escape(&state),
            s.epoch,
            s.last_sequence,
            s.rows_applied,
            s.rows_parked_now,
            s.conflicts_open,
            s.rejected_batches,
            or_dash(s.lag_seconds.map(|l| format!("{l} s"))),
            or_dash(
                s.silent_seconds
                    .map(|l| format!("{} ago", human_age(l.max(0).unsigned_abs())))
            ),
            escape(&crate::report::health_summary(s)),
        );
    }
    body.push_str("</table>");
    if statuses.is_empty() {
        body.push_str("<p>No site has delivered a batch yet.</p>");
    }
    layout("Sites", None, &body)
}

/// The form field a merge's ticked column is posted as: this prefix, then the column's name.
pub const MERGE_FIELD_PREFIX: &str = "take:";

fn action(path: &str, session: &str, fields: &str, label: &str, id: &str) -> String {
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{path}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{session}\">{fields}\
         <button type=\"submit\" id=\"{id}\">{label}</button></form>"
    )
}

pub fn parked(entries: &[ParkedEntry], session: &str, said: Option<&str>) -> String {
    let mut body = String::from(
        "<table><tr><th>id</th><th>site</th><th>batch</th><th>row</th><th>parked</th>\
         <th>waits for</th><th></th></tr>",
    );
    for e in entries {
        let id = e.parked_id;
        let retry = action(
            &format!("/parked/{id}/retry"),
            session,
            "",
            "Retry",
            &format!("retry-{id}"),
        );
        let drop = action(
            &format!("/parked/{id}/drop"),
            session,
            "<input name=\"reason\" placeholder=\"why it is dropped\" required>",
            "Drop",
            &format!("drop-{id}"),
        );
        let _ = write!(
            body,
            "<tr id=\"parked-{id}\"><td>{id}</td><td>{}</td><td>{}</td><td>{} {}</td>\
             <td>{} ago</td><td>{}</td><td>{retry}{drop}</td></tr>",
            escape(&e.site_id),
            e.sequence,
            escape(&e.table),
            escape(&e.identity),
            human_age(e.age_seconds),
            escape(&e.reason),
        );
    }
    body.push_str("</table>");
    if entries.is_empty() {
        body.push_str("<p>No row is parked.</p>");
    }
    layout("Parked rows", said, &body)
}

pub fn conflicts(entries: &[ConflictEntry]) -> String {
    let mut body = String::from(
        "<table><tr><th>id</th><th>site</th><th>row</th><th>change</th><th>met</th>\
         <th>differs in</th><th>reason</th></tr>",
    );
    for e in entries {
        let _ = write!(
            body,
            "<tr><td><a href=\"/conflicts/{id}\" id=\"conflict-{id}\">{id}</a></td><td>{}</td>\
             <td>{} {}</td><td>{}</td><td>{} ago</td><td>{}</td><td>{}</td></tr>",
            escape(&e.site_id),
            escape(&e.table),
            escape(&e.identity),
            escape(&e.op),
            human_age(e.age_seconds),
            escape(&e.differing_columns.join(", ")),
            escape(&e.reason),
            id = e.conflict_id,
        );
    }
    body.push_str("</table>");
    if entries.is_empty() {
        body.push_str("<p>No conflict waits for a person.</p>");
    }
    layout("Open conflicts", None, &body)
}

pub fn conflict(detail: &ConflictDetail, session: &str, said: Option<&str>) -> String {
    let e = &detail.entry;
    let id = e.conflict_id;
    let mut body = format!(
        "<p>Site <strong>{}</strong> (epoch {}, batch {}) changed <strong>{} {}</strong> ({}), \
         which {}. Policy: {}.</p>",
        escape(&e.site_id),
        e.epoch,
        e.sequence,
        escape(&e.table),
        escape(&e.identity),
        escape(&e.op),
        escape(&e.reason),
        escape(&e.policy),
    );
    let mut columns: Vec<&String> = detail
        .hq_row
        .iter()
        .chain(detail.site_row.iter())
        .flat_map(|row| row.keys())
        .collect();
    columns.sort();
    columns.dedup();
    let cell = |row: &Option<std::collections::BTreeMap<String, Option<String>>>, column: &str| {
        match row {
            None => "(deleted)".to_owned(),
            Some(row) => match row.get(column) {
                Some(Some(v)) => escape(v),
                Some(None) => "NULL".to_owned(),
                None => "-".to_owned(),
            },
        }
    };
    body.push_str(
        "<table id=\"versions\"><tr><th>column</th><th>HQ's row</th><th>the site's version</th></tr>",
    );
    for column in columns {
        let class = if e.differing_columns.iter().any(|c| c == column) {
            " class=\"diff\""
        } else {
            ""
        };
        let _ = write!(
            body,
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(column),
            cell(&detail.hq_row, column),
            cell(&detail.site_row, column),
        );
    }
    body.push_str("</table>");
    match (&e.resolution, &e.resolved_by) {
        (Some(how), Some(by)) => {
            let _ = write!(
                body,
                "<p id=\"resolution\">Resolved: {} by {}.</p>",
                escape(how),
                escape(by)
            );
        }
        _ => {
            body.push_str("<p id=\"resolution\">Open. Decide:</p><p>");
            let by = "<input name=\"by\" placeholder=\"your name\">";
            body.push_str(&action(
                &format!("/conflicts/{id}/resolve"),
                session,
                &format!("<input type=\"hidden\" name=\"choice\" value=\"keep-hq\">{by}"),
                "Keep HQ's row",
                "keep-hq",
            ));
            body.push_str(&action(
                &format!("/conflicts/{id}/resolve"),
                session,
                &format!("<input type=\"hidden\" name=\"choice\" value=\"take-site\">{by}"),
                "Take the site's version",
                "take-site",
            ));
            body.push_str("</p>");
            if detail.site_row.is_some() && !e.differing_columns.is_empty() {
                // A merge: the ticked columns from the site, the rest as HQ has them.
                let ticks: String = e
                    .differing_columns
                    .iter()
                    .map(|column| {
                        let column = escape(column);
                        format!(
                            "<label><input type=\"checkbox\" name=\"{MERGE_FIELD_PREFIX}{column}\" \
                             id=\"take-{column}\" value=\"1\"> {column}</label> "
                        )
                    })
                    .collect();
                body.push_str("<p>Or take only some columns from the site:</p><p>");
                body.push_str(&action(
                    &format!("/conflicts/{id}/resolve"),
                    session,
                    &format!("<input type=\"hidden\" name=\"choice\" value=\"merge\">{ticks}{by}"),
                    "Merge the ticked columns",
                    "merge",
                ));
                body.push_str("</p>");
            }
        }
    }
    layout(&format!("Conflict {id}"), said, &body)
}

pub fn rejected(batches: &[RejectedBatch]) -> String {
    let mut body = String::from(
        "<table><tr><th>site</th><th>epoch</th><th>batch</th><th>reason</th><th>detail</th></tr>",
    );
    for b in batches {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&b.site_id),
            b.epoch,
            b.sequence,
            escape(&b.reason_code),
            escape(&b.detail),
        );
    }
    body.push_str("</table>");
    if batches.is_empty() {
        body.push_str("<p>No batch was rejected.</p>");
    }
    layout("Rejected batches", None, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_hq_is_escaped() {
        assert_eq!(
            escape("<b>\"O'Neil\" & co</b>"),
            "&lt;b&gt;&quot;O&#39;Neil&quot; &amp; co&lt;/b&gt;"
        );
        let page = error("<script>alert(1)</script>");
        assert!(!page.contains("<script>"), "{page}");
    }
}
