//! `tributary schema show`: the resolved schema map of a live database, as capture and the
//! applier will use it: for every synced table how its rows are identified and which columns
//! travel as references; the excluded tables; and a flag on every table whose rows cannot be
//! told apart reliably.

use std::fmt::Write as _;
use tributary_schema::{Catalog, GLOBAL_PROPERTY, IdentityRule, Policy, SchemaMap};

/// `settings`: the names in the table whose rows travel by name (`global_property`), read from
/// the database, for the per-row decisions.
/// Which `global_property` rows travel, one line each.
fn render_settings(out: &mut String, map: &SchemaMap, settings: &[String]) {
    let Some(filter) = map
        .table(GLOBAL_PROPERTY)
        .and_then(|t| t.row_filter.as_ref())
    else {
        let _ = writeln!(
            out,
            "\n{GLOBAL_PROPERTY}: no rows travel (name settings under [sync] global_properties \
             to send them)"
        );
        return;
    };
    let _ = writeln!(
        out,
        "\n{GLOBAL_PROPERTY} rows, by [sync] global_properties ({}):",
        filter.patterns.join(", ")
    );
    for name in settings {
        let decision = match filter.matching(name) {
            Some(pattern) => format!("travels (matches {pattern:?})"),
            None => "stays at the site".to_owned(),
        };
        let _ = writeln!(out, "    {name}: {decision}");
    }
}

pub fn render(catalog: &Catalog, map: &SchemaMap, policy: &Policy, settings: &[String]) -> String {
    let mut out = String::new();
    let mut flagged = 0;
    for table in map.tables() {
        let identity = match &table.identity {
            IdentityRule::OwnUuid { column } => format!("own uuid ({column})"),
            IdentityRule::Inherited { root } => format!("inherited from {root}"),
            IdentityRule::Natural { columns } if table.primary_key.is_empty() => {
                flagged += 1;
                format!(
                    "whole row ({} columns) -- FLAG: no primary key and no uuid, identical rows cannot be told apart",
                    columns.len()
                )
            }
            IdentityRule::Natural { columns } => format!("natural key ({})", columns.join(", ")),
        };
        let _ = writeln!(out, "{}: {identity}", table.name);
        if let Some(key) = &table.surrogate_key {
            let _ = writeln!(out, "    local key {key} (HQ assigns its own)");
        }
        if !table.references.is_empty() {
            let refs: Vec<String> = table
                .references
                .iter()
                .map(|(column, target)| format!("{column} -> {target}"))
                .collect();
            let _ = writeln!(out, "    references: {}", refs.join(", "));
        }
        let excluded: Vec<&str> = catalog
            .tables
            .get(&table.name)
            .map(|t| {
                t.columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .filter(|c| policy.excludes_column(&table.name, c))
                    .collect()
            })
            .unwrap_or_default();
        if !excluded.is_empty() {
            let _ = writeln!(out, "    columns kept at the site: {}", excluded.join(", "));
        }
        for fk in catalog
            .tables
            .get(&table.name)
            .map(|t| t.foreign_keys.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|fk| !fk.cascades.is_empty())
        {
            let _ = writeln!(
                out,
                "    cascade: {} -> {} {} (done inside InnoDB, never in the binlog: HQ needs the same rule)",
                fk.column,
                fk.parent_table,
                fk.cascades.join(" ")
            );
        }
    }
    render_settings(&mut out, map, settings);
    let excluded: Vec<&str> = catalog
        .tables
        .keys()
        .map(String::as_str)
        .filter(|t| map.table(t).is_none())
        .collect();
    let _ = writeln!(
        out,
        "\n{} tables synced, {} excluded ({}), {flagged} flagged",
        map.tables().count(),
        excluded.len(),
        excluded.join(", ")
    );
    out
}
