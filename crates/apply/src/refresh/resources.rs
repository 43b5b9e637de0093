//! Which OpenMRS REST resource names the rows of an HQ table, and whether OpenMRS keeps those
//! entities in its search index.
//!
//! The two refresh endpoints of the REST module (`searchindexupdate`, `cleardbcache`) take a
//! resource name as OpenMRS's REST API spells it (`patient`, or `person` with the sub-resource
//! `name`) and look the entity up by uuid through that resource. A table missing here has no
//! REST resource that can name its rows (join tables, audit tables, Tributary's own), so its
//! changes ask for nothing.
//!
//! `indexed` follows the classes OpenMRS 2.x annotates `@Indexed` for Hibernate Search:
//! `PersonName`, `PatientIdentifier`, `PersonAttribute`, `ConceptName` and `Drug`. Asking the
//! search index to update an entity of any other class fails at OpenMRS, so only these go to
//! `searchindexupdate`; every mapped table goes to `cleardbcache`.

/// One table's REST resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceSpec {
    /// The HQ table whose rows this resource serves.
    pub table: &'static str,
    /// REST resource name (`patient`); for a sub-resource, its parent's (`person`).
    pub resource: &'static str,
    /// Sub-resource path under `resource` (`name` for `person/name`).
    pub sub_resource: Option<&'static str>,
    /// Whether OpenMRS indexes these entities for search.
    pub indexed: bool,
}

const fn spec(
    table: &'static str,
    resource: &'static str,
    sub_resource: Option<&'static str>,
    indexed: bool,
) -> ResourceSpec {
    ResourceSpec {
        table,
        resource,
        sub_resource,
        indexed,
    }
}

/// OpenMRS core tables with a REST resource, by table name. Subtype tables (`patient`,
/// `drug_order`, `concept_numeric`) carry their parent's uuid as their identity, which is
/// also the uuid their resource finds them by.
pub const RESOURCES: &[ResourceSpec] = &[
    spec("person", "person", None, false),
    spec("person_name", "person", Some("name"), true),
    spec("person_address", "person", Some("address"), false),
    spec("person_attribute", "person", Some("attribute"), true),
    spec("patient", "patient", None, false),
    spec("patient_identifier", "patient", Some("identifier"), true),
    spec("allergy", "patient", Some("allergy"), false),
    spec("relationship", "relationship", None, false),
    spec("visit", "visit", None, false),
    spec("encounter", "encounter", None, false),
    spec("obs", "obs", None, false),
    spec("orders", "order", None, false),
    spec("drug_order", "order", None, false),
    spec("test_order", "order", None, false),
    spec("referral_order", "order", None, false),
    spec("patient_program", "programenrollment", None, false),
    spec("conditions", "condition", None, false),
    spec("cohort", "cohort", None, false),
    spec("users", "user", None, false),
    spec("provider", "provider", None, false),
    spec("location", "location", None, false),
    spec("concept", "concept", None, false),
    spec("concept_numeric", "concept", None, false),
    spec("concept_complex", "concept", None, false),
    spec("concept_name", "concept", Some("name"), true),
    spec("drug", "drug", None, true),
    spec("encounter_type", "encountertype", None, false),
    spec("visit_type", "visittype", None, false),
    spec(
        "patient_identifier_type",
        "patientidentifiertype",
        None,
        false,
    ),
    spec("person_attribute_type", "personattributetype", None, false),
    spec("relationship_type", "relationshiptype", None, false),
    spec("program", "program", None, false),
    spec("form", "form", None, false),
];

/// The REST resource of an HQ table, if it has one.
pub fn resource_of(table: &str) -> Option<&'static ResourceSpec> {
    RESOURCES.iter().find(|r| r.table == table)
}

impl ResourceSpec {
    /// `person/name`, as logs and metrics name it (never with an entity's uuid).
    pub fn path(&self) -> String {
        match self.sub_resource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_table_is_mapped_once_and_only_indexed_classes_go_to_the_search_index() {
        let tables: BTreeSet<&str> = RESOURCES.iter().map(|r| r.table).collect();
        assert_eq!(tables.len(), RESOURCES.len(), "a table is listed twice");
        let indexed: BTreeSet<String> = RESOURCES
            .iter()
            .filter(|r| r.indexed)
            .map(|r| r.path())
            .collect();
        let expected: BTreeSet<String> = [
            "person/name",
            "person/attribute",
            "patient/identifier",
            "concept/name",
            "drug",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(indexed, expected);
        assert_eq!(resource_of("patient").unwrap().path(), "patient");
        assert_eq!(resource_of("drug_order").unwrap().path(), "order");
        assert!(resource_of("tributary_parked_row").is_none());
        assert!(resource_of("user_role").is_none(), "no uuid, no resource");
    }
}
