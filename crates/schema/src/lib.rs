//! Schema maps and identity: which tables sync, how their rows are identified across
//! databases, and which columns are references that travel as identities.
//!
//! Built from `information_schema` ([`Catalog`]) plus a policy file ([`Policy`]) that adds
//! only what the catalog cannot say. Capture, the applier and verification all read the same
//! [`SchemaMap`], so a row is identified the same way everywhere.

mod catalog;
mod column_value;
mod error;
mod map;
mod policy;

pub use catalog::{Catalog, CatalogColumn, CatalogTable, ColumnKind, ForeignKey};
pub use column_value::{quote_ident, to_value, write_json};
pub use error::SchemaError;
pub use map::{IdentityRule, IdentitySource, PolymorphicColumn, SchemaMap, TableMap};
pub use policy::{
    GLOBAL_PROPERTY, OPENMRS_CORE_POLICY, Policy, PolymorphicReference, RowFilter,
    UndeclaredReference,
};
