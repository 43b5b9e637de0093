//! Creating `tributary_row_state_by_id`, once, and moving into it the states an earlier HQ kept
//! by `SHA1(table ':' identity)` for rows now kept by id (see [`crate::row_state`]).
//!
//! The table is filled under another name and renamed when complete, so its existence says the
//! move is done: a move cut short (a crash, a lost connection) starts over at the next start.
//! Appliers and operator commands starting together take turns (a named lock per database),
//! and the one that finds the table made does nothing. The copy goes in key ranges of the
//! synced table, so HQ's own writers wait for at most one range's row locks. The moved states
//! (those now in the new table) are then deleted from `tributary_row_state`; one left there
//! after a crash is never read again (rows kept by id are looked up by id only).

use crate::row_state::{BY_ID, BY_IDENTITY, Keeping, ROW};
use mysql_async::prelude::*;
use mysql_async::{Conn, Value};
use tributary_schema::{IdentityRule, SchemaMap, TableMap, quote_ident};

/// Where the table is filled before it is renamed.
const FILLING: &str = "tributary_row_state_by_id_filling";

/// Rows per copy statement.
const RANGE: u64 = 50_000;

/// How long a start waits for another one's move to finish.
const LOCK_WAIT_S: u32 = 3_600;

/// The table of states kept by id, named `name`. `hq_id` is DECIMAL(20,0) so that any signed
/// or unsigned 64-bit key fits.
fn create_table(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (
            table_name VARCHAR(64) NOT NULL,
            hq_id DECIMAL(20,0) NOT NULL COMMENT 'the row''s integer key at HQ',
            site_id VARCHAR(64) NOT NULL,
            state_hash BINARY(20) NOT NULL,
            written_at DATETIME(3) NOT NULL,
            PRIMARY KEY (table_name, hq_id, site_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    )
}

/// Makes sure `tributary_row_state_by_id` exists, moving earlier states into it the first time.
/// Run at start, after Tributary's other tables exist.
pub async fn prepare(conn: &mut Conn, schema: &SchemaMap) -> mysql_async::Result<()> {
    if table_exists(conn, BY_ID).await? {
        return Ok(());
    }
    let lock = "CONCAT(DATABASE(), '.tributary_row_state_by_id')";
    let locked: Option<Option<u8>> = conn
        .query_first(format!("SELECT GET_LOCK({lock}, {LOCK_WAIT_S})"))
        .await?;
    if locked.flatten() != Some(1) {
        return Err(mysql_async::Error::Other(
            format!(
                "another Tributary process has been moving row states into {BY_ID} for over \
                 {LOCK_WAIT_S} s; let it finish, then start again"
            )
            .into(),
        ));
    }
    let moved = move_states(conn, schema).await;
    let released = conn.query_drop(format!("DO RELEASE_LOCK({lock})")).await;
    moved?;
    released
}

async fn move_states(conn: &mut Conn, schema: &SchemaMap) -> mysql_async::Result<()> {
    if table_exists(conn, BY_ID).await? {
        return Ok(()); // made by another process meanwhile
    }
    conn.query_drop(format!("DROP TABLE IF EXISTS {FILLING}"))
        .await?;
    conn.query_drop(create_table(FILLING)).await?;
    let earlier: Option<u8> = conn
        .query_first(format!("SELECT 1 FROM {BY_IDENTITY} LIMIT 1"))
        .await?;
    let movable: Vec<(&TableMap, &str, String)> = match earlier {
        Some(_) => schema.tables().filter_map(identity_join).collect(),
        None => Vec::new(),
    };
    if !movable.is_empty() {
        tracing::info!(
            tables = movable.len(),
            "moving row states to tributary_row_state_by_id (once)"
        );
    }
    let mut ranged: Vec<Ranged> = Vec::with_capacity(movable.len());
    for (map, key, join) in &movable {
        ranged.push((
            *map,
            quote_ident(key),
            join,
            key_ranges(conn, map, key).await?,
        ));
    }
    let moved = in_ranges(conn, &ranged, |key, join| {
        format!(
            "INSERT INTO {FILLING} (table_name, hq_id, site_id, state_hash, written_at)
             SELECT ?, {ROW}.{key}, s.site_id, s.state_hash, s.written_at {join}
             WHERE {ROW}.{key} BETWEEN ? AND ?"
        )
    })
    .await?;
    conn.query_drop(format!("RENAME TABLE {FILLING} TO {BY_ID}"))
        .await?;
    in_ranges(conn, &ranged, |key, join| {
        format!(
            "DELETE s {join}
             JOIN {BY_ID} m ON m.table_name = ? AND m.hq_id = {ROW}.{key} AND m.site_id = s.site_id
             WHERE {ROW}.{key} BETWEEN ? AND ?"
        )
    })
    .await?;
    if !movable.is_empty() {
        tracing::info!(states = moved, "row states moved");
    }
    Ok(())
}

/// A table kept by id: its map, quoted key column, states join (see [`identity_join`]) and key
/// ranges.
type Ranged<'m> = (&'m TableMap, String, &'m String, Vec<(Value, Value)>);

/// Runs the statement `sql(key, join)` makes for every key range of every table, with the
/// parameters (table name, table name, range start, range end); returns the rows it affected.
async fn in_ranges(
    conn: &mut Conn,
    ranged: &[Ranged<'_>],
    sql: impl Fn(&str, &str) -> String,
) -> mysql_async::Result<u64> {
    let mut affected = 0;
    for (map, key, join, ranges) in ranged {
        let statement = sql(key, join);
        for (from, to) in ranges {
            let name = map.name.as_str();
            conn.exec_drop(&statement, (name, name, from.clone(), to.clone()))
                .await?;
            affected += conn.affected_rows();
        }
    }
    Ok(affected)
}

/// The table's key values in inclusive ranges of [`RANGE`] rows (the last one fewer), found by
/// walking the key.
async fn key_ranges(
    conn: &mut Conn,
    map: &TableMap,
    key: &str,
) -> mysql_async::Result<Vec<(Value, Value)>> {
    let (table, key) = (quote_ident(&map.name), quote_ident(key));
    let bounds: Option<(Option<String>, Option<String>)> = conn
        .query_first(format!(
            "SELECT CAST(MIN({key}) AS CHAR), CAST(MAX({key}) AS CHAR) FROM {table}"
        ))
        .await?;
    let Some((Some(low), Some(high))) = bounds else {
        return Ok(Vec::new());
    };
    let (Ok(mut from), Ok(high)) = (low.parse::<i128>(), high.parse::<i128>()) else {
        return Ok(Vec::new());
    };
    let mut ranges = Vec::new();
    loop {
        let next: Option<String> = conn
            .exec_first(
                format!(
                    "SELECT CAST({key} AS CHAR) FROM {table} WHERE {key} >= ?
                     ORDER BY {key} LIMIT 1 OFFSET {RANGE}"
                ),
                (key_value(from),),
            )
            .await?;
        match next.and_then(|n| n.parse::<i128>().ok()) {
            Some(to) if to > from => {
                ranges.push((key_value(from), key_value(to - 1)));
                from = to;
            }
            _ => {
                ranges.push((key_value(from), key_value(high)));
                return Ok(ranges);
            }
        }
    }
}

/// A key value bound as an integer of the width it needs (a string would be compared as a
/// floating-point number).
fn key_value(n: i128) -> Value {
    match (i64::try_from(n), u64::try_from(n)) {
        (Ok(signed), _) => Value::Int(signed),
        (_, Ok(unsigned)) => Value::UInt(unsigned),
        _ => Value::UInt(u64::MAX),
    }
}

/// For a table kept by id: its key column, and `FROM` the table `JOIN` its rows' earlier
/// states (alias `s`), whose one parameter is the table's name. The states' key is computed
/// the way identities are made from a uuid (trimmed, lower case).
fn identity_join(map: &TableMap) -> Option<(&TableMap, &str, String)> {
    let Keeping::ById(key) = Keeping::of(map) else {
        return None;
    };
    let table = quote_ident(&map.name);
    let (root_join, uuid) = match (&map.identity, &map.identity_source) {
        (IdentityRule::OwnUuid { column }, _) => {
            (String::new(), format!("{ROW}.{}", quote_ident(column)))
        }
        (IdentityRule::Inherited { .. }, Some(source)) => (
            format!(
                "JOIN {} AS identity_root ON identity_root.{} = {ROW}.{}",
                quote_ident(&source.root),
                quote_ident(&source.key_column),
                quote_ident(key)
            ),
            format!("identity_root.{}", quote_ident(&source.uuid_column)),
        ),
        _ => return None,
    };
    let join = format!(
        "FROM {table} AS {ROW} {root_join}
         JOIN {BY_IDENTITY} s ON s.entity_key = UNHEX(SHA1(CONCAT(?, ':', LOWER(TRIM({uuid})))))"
    );
    Some((map, key, join))
}

async fn table_exists(conn: &mut Conn, name: &str) -> mysql_async::Result<bool> {
    let found: Option<u8> = conn
        .exec_first(
            "SELECT 1 FROM information_schema.tables
             WHERE table_schema = DATABASE() AND table_name = ?",
            (name,),
        )
        .await?;
    Ok(found.is_some())
}
