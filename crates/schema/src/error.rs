//! Schema errors: every one is fatal to the component that hit it (an operator must fix the
//! schema map or the database), and each message says which object and what to do.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SchemaError {
    #[error("could not read the catalog of database `{database}`: {source}")]
    Introspection {
        database: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("database `{0}` has no tables; check the database name in the configuration")]
    EmptyDatabase(String),
    #[error("schema map {path}: {message}")]
    Policy { path: String, message: String },
    #[error(
        "column `{table}.{column}` refers to table `{target}`, which has no uuid and no \
         inherited identity, so the reference cannot travel as an identity; exclude `{table}` \
         or the column in the schema map"
    )]
    UnidentifiableTarget {
        table: String,
        column: String,
        target: String,
    },
    #[error("schema map names `{table}.{column}` as a reference, but {problem}")]
    BadReference {
        table: String,
        column: String,
        problem: String,
    },
}
