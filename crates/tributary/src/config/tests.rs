use super::*;
use std::time::Duration;
use tributary_apply::{
    DEFAULT_PARKED_REPORT_AGE, DEFAULT_REFRESH_BATCH_SIZE, DEFAULT_REFRESH_FLUSH_INTERVAL,
    DEFAULT_REFRESH_MAX_ATTEMPTS, Endpoint,
};
use tributary_capture::ResumeBy;
use tributary_transport::SpoolFormat;

/// An `[hq]` part with only what is required.
const MINIMAL_HQ: &str = "[hq]\nkey_dir = \"k\"\n[hq.database]\nurl = \"mysql://u@h/db\"\n";

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("tributary.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_password_in_the_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        r#"
        [site]
        id = "clinic-a"
        state_dir = "state"
        key_file = "k.key"
        [site.database]
        url = "mysql://u:secret@127.0.0.1:3306/openmrs"
        "#,
    );
    let err = Config::load(&path)
        .unwrap()
        .site_database()
        .unwrap_err()
        .to_string();
    assert!(err.contains("contains a password"), "{err}");
    assert!(
        !err.contains("secret"),
        "the password itself is never echoed"
    );
}

#[test]
fn unknown_fields_and_missing_sections_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "[hq]\nkey_dirr = \"x\"\n");
    let err = format!("{:#}", Config::load(&path).unwrap_err());
    assert!(err.contains("key_dirr"), "{err}");
    let path = write(dir.path(), "schema_map = \"x.toml\"\n");
    let err = Config::load(&path)
        .unwrap()
        .capture_settings()
        .unwrap_err()
        .to_string();
    assert!(err.contains("no [site] section"), "{err}");
}

#[test]
fn resume_by_defaults_to_gtid_and_a_wrong_value_names_the_field_and_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let site = |extra: &str| {
        format!(
            "[site]\nid = \"clinic-a\"\nstate_dir = \"state\"\nkey_file = \"k.key\"\n{extra}\n\
             [site.database]\nurl = \"mysql://u@127.0.0.1:3306/openmrs\"\n"
        )
    };
    let config = Config::load(&write(dir.path(), &site(""))).unwrap();
    assert_eq!(config.resume_by().unwrap(), ResumeBy::Gtid);
    let config = Config::load(&write(dir.path(), &site("resume_by = \"file_position\""))).unwrap();
    assert_eq!(config.resume_by().unwrap(), ResumeBy::FilePosition);
    let config = Config::load(&write(dir.path(), &site("resume_by = \"position\""))).unwrap();
    let err = config.resume_by().unwrap_err().to_string();
    for part in [
        "site.resume_by",
        "'position'",
        "\"gtid\"",
        "\"file_position\"",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    let err = format!(
        "{:#}",
        Config::load(&write(dir.path(), &site("resume = \"gtid\""))).unwrap_err()
    );
    assert!(err.contains("unknown field `resume`"), "{err}");
}

#[test]
fn parked_report_age_defaults_to_a_day_and_is_read_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let hq = MINIMAL_HQ;
    let config = Config::load(&write(dir.path(), hq)).unwrap();
    assert_eq!(
        config.parked_report_age().unwrap(),
        DEFAULT_PARKED_REPORT_AGE
    );
    let config = Config::load(&write(
        dir.path(),
        &hq.replace("[hq]\n", "[hq]\nparked_report_age_s = 0\n"),
    ))
    .unwrap();
    assert_eq!(config.parked_report_age().unwrap(), Duration::ZERO);
    let err = format!(
        "{:#}",
        Config::load(&write(
            dir.path(),
            &hq.replace("[hq]\n", "[hq]\nparked_report_age = 5\n")
        ))
        .unwrap_err()
    );
    assert!(err.contains("parked_report_age"), "{err}");
}

#[test]
fn refreshing_hq_openmrs_is_off_by_default_and_its_section_is_checked_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let hq = MINIMAL_HQ;
    let config = Config::load(&write(dir.path(), hq)).unwrap();
    assert!(
        config.refresh_settings().unwrap().is_none(),
        "off by default"
    );

    std::fs::write(dir.path().join("openmrs.pw"), "Admin123\n").unwrap();
    let with = |section: &str| format!("{hq}[hq.refresh]\n{section}\n");
    let base = "base_url = \"http://127.0.0.1:8080/openmrs/\"\nusername = \"tributary\"\n\
                password_file = \"openmrs.pw\"";
    let config = Config::load(&write(dir.path(), &with(base))).unwrap();
    let settings = config.refresh_settings().unwrap().unwrap();
    assert_eq!(settings.password, "Admin123");
    assert_eq!(
        settings.endpoints,
        [Endpoint::SearchIndex, Endpoint::DbCache]
    );
    assert_eq!(settings.batch_size, DEFAULT_REFRESH_BATCH_SIZE);
    assert_eq!(settings.flush_interval, DEFAULT_REFRESH_FLUSH_INTERVAL);
    assert_eq!(settings.max_attempts, DEFAULT_REFRESH_MAX_ATTEMPTS);
    assert!(!format!("{settings:?}").contains("Admin123"));

    let tuned = format!(
        "{base}\nsearch_index = false\nbatch_size = 7\nflush_interval_ms = 100\n\
         timeout_ms = 500\nmax_attempts = 2\nmax_queued_entities = 9\n\
         full_refresh_min_interval_s = 0"
    );
    let settings = Config::load(&write(dir.path(), &with(&tuned)))
        .unwrap()
        .refresh_settings()
        .unwrap()
        .unwrap();
    assert_eq!(settings.endpoints, [Endpoint::DbCache]);
    assert_eq!(
        (
            settings.batch_size,
            settings.max_queued_entities,
            settings.max_attempts
        ),
        (7, 9, 2)
    );
    assert_eq!(settings.timeout, Duration::from_millis(500));
    assert_eq!(settings.full_refresh_min_interval, Duration::ZERO);

    for (section, expected) in [
        (
            "base_url = \"http://h/openmrs\"\nusername = \"u\"".to_owned(),
            "password_file",
        ),
        (base.replace("http://", "ftp://"), "hq.refresh.base_url"),
        (
            base.replace("http://", "http://admin:Secret9@"),
            "contains credentials",
        ),
        (format!("{base}\nbatch_size = 0"), "hq.refresh.batch_size"),
        (
            format!("{base}\nsearch_index = false\ndb_cache = false"),
            "nothing to ask",
        ),
    ] {
        let err = format!(
            "{:#}",
            Config::load(&write(dir.path(), &with(&section)))
                .unwrap()
                .refresh_settings()
                .unwrap_err()
        );
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(!err.contains("Secret9"), "{err}");
    }
    let err = format!(
        "{:#}",
        Config::load(&write(dir.path(), &with(&format!("{base}\nbatch = 3")))).unwrap_err()
    );
    assert!(err.contains("batch"), "{err}");
}

const KAFKA_SITE: &str = r#"
    [transport]
    kind = "kafka"
    directory = "spool"
    [transport.kafka]
    brokers = "127.0.0.1:9092"
    partitions = 6
    [transport.kafka.librdkafka]
    "security.protocol" = "SASL_SSL"
    "sasl.mechanism" = "SCRAM-SHA-512"
    "sasl.username" = "clinic-a"
    "socket.keepalive.enable" = true
    [transport.kafka.secrets]
    "sasl.password" = { file = "kafka.pw" }
    "#;

#[test]
fn kafka_settings_pass_properties_through_and_read_secrets_from_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kafka.pw"), "s3cret\n").unwrap();
    let config = Config::load(&write(dir.path(), KAFKA_SITE)).unwrap();
    assert_eq!(config.transport_kind(), TransportKind::Kafka);
    let kafka = config.kafka_settings().unwrap();
    assert_eq!(kafka.topic, "tributary.batches");
    assert_eq!(kafka.partitions, 6);
    assert_eq!(kafka.properties["sasl.mechanism"], "SCRAM-SHA-512");
    assert_eq!(kafka.properties["socket.keepalive.enable"], "true");
    assert_eq!(kafka.secrets["sasl.password"], "s3cret");
    assert!(!format!("{kafka:?}").contains("s3cret"));
    assert_eq!(
        config.transport_directory().unwrap(),
        dir.path().join("spool")
    );
}

#[test]
fn kafka_properties_that_break_guarantees_or_hold_secrets_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (line, name) in [
        ("\"enable.idempotence\" = false", "enable.idempotence"),
        ("\"acks\" = 1", "acks"),
        ("\"enable.auto.commit\" = true", "enable.auto.commit"),
        ("\"sasl.password\" = \"inline-secret\"", "sasl.password"),
    ] {
        let text = format!(
            "[transport]\nkind = \"kafka\"\ndirectory = \"d\"\n[transport.kafka]\n\
             brokers = \"b:9092\"\n[transport.kafka.librdkafka]\n{line}\n"
        );
        let err = format!(
            "{:#}",
            Config::load(&write(dir.path(), &text))
                .unwrap()
                .kafka_settings()
                .unwrap_err()
        );
        assert!(err.contains(name), "{err}");
        assert!(!err.contains("inline-secret"), "{err}");
    }
    let text = "[transport]\ndirectory = \"d\"\n";
    let config = Config::load(&write(dir.path(), text)).unwrap();
    assert_eq!(config.transport_kind(), TransportKind::Directory);
    assert!(config.kafka_settings().is_err());
}

#[test]
fn sites_keep_one_file_per_batch_only_where_the_applier_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, format) in [
        ("directory", SpoolFormat::Files),
        ("kafka", SpoolFormat::Segments),
        ("carried", SpoolFormat::Segments),
    ] {
        let text = format!("[transport]\nkind = \"{kind}\"\ndirectory = \"d\"\n");
        let config = Config::load(&write(dir.path(), &text)).unwrap();
        assert_eq!(config.spool_format(), format, "{kind}");
    }
}

#[test]
fn the_example_kafka_configurations_are_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples");
    let site = Config::load(&examples.join("site-kafka.toml")).unwrap();
    assert_eq!(site.transport_kind(), TransportKind::Kafka);
    site.shipper_settings().unwrap();
    // The secret's variable is not set here: the error names it, nothing else is wrong.
    let err = format!("{:#}", site.kafka_settings().unwrap_err());
    assert!(err.contains("TRIBUTARY_KAFKA_PASSWORD"), "{err}");
    let metrics = Some("127.0.0.1:9464".parse().unwrap());
    assert_eq!(site.metrics_listen(None).unwrap(), metrics);
    let hq = Config::load(&examples.join("hq-kafka.toml")).unwrap();
    assert_eq!(hq.metrics_listen(None).unwrap(), metrics);
    let err = format!("{:#}", hq.kafka_settings().unwrap_err());
    assert!(err.contains("hq-client.key.password"), "{err}");
    hq.consumer_settings().unwrap();
    // The applier of deploy/compose.
    let compose = examples.join("../../deploy/compose/hq.toml");
    let compose = Config::load(&compose).unwrap();
    assert_eq!(compose.transport_kind(), TransportKind::Kafka);
    assert_eq!(compose.kafka_settings().unwrap().brokers, "kafka:9092");
    compose.consumer_settings().unwrap();
    assert!(compose.metrics_listen(None).unwrap().is_some());
}

#[test]
fn metrics_listen_comes_from_the_flag_then_the_file_and_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let flag: SocketAddr = "127.0.0.1:9999".parse().unwrap();
    let config = Config::load(&write(dir.path(), "")).unwrap();
    assert_eq!(config.metrics_listen(None).unwrap(), None);
    assert_eq!(config.metrics_listen(Some(flag)).unwrap(), Some(flag));
    let path = write(dir.path(), "[metrics]\nlisten = \"127.0.0.1:9464\"\n");
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.metrics_listen(None).unwrap(),
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert_eq!(config.metrics_listen(Some(flag)).unwrap(), Some(flag));

    let path = write(dir.path(), "[metrics]\nlisten = \"localhost\"\n");
    let err = format!(
        "{:#}",
        Config::load(&path)
            .unwrap()
            .metrics_listen(None)
            .unwrap_err()
    );
    assert!(
        err.contains("metrics.listen") && err.contains("127.0.0.1:9464"),
        "names the field and an example: {err}"
    );
    let path = write(
        dir.path(),
        "[metrics]\nlisten = \"127.0.0.1:9464\"\nport = 1\n",
    );
    let err = format!("{:#}", Config::load(&path).unwrap_err());
    assert!(err.contains("port"), "{err}");
}

#[test]
fn relative_paths_resolve_against_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
    let path = write(
        dir.path(),
        r#"
        [site]
        id = "clinic-a"
        state_dir = "state"
        key_file = "k.key"
        [site.database]
        url = "mysql://u@127.0.0.1:3306/openmrs"
        password_file = "pw"
        [transport]
        directory = "batches"
        "#,
    );
    let settings = Config::load(&path).unwrap().capture_settings().unwrap();
    assert_eq!(settings.state_dir, dir.path().join("state"));
    assert_eq!(settings.outbox_dir, dir.path().join("batches"));
    assert_eq!(settings.database, "openmrs");
    assert_eq!(settings.source.pass(), Some("hunter2"));
}

#[test]
fn the_console_is_off_by_default_and_its_section_is_checked_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load(&write(dir.path(), MINIMAL_HQ)).unwrap();
    assert!(
        config.console_settings().unwrap().is_none(),
        "off by default"
    );
    std::fs::write(dir.path().join("token"), "0123456789abcdef-long-enough\n").unwrap();
    let with = |section: &str| format!("{MINIMAL_HQ}[hq.console]\n{section}\n");
    let config = Config::load(&write(dir.path(), &with("token_file = \"token\""))).unwrap();
    let settings = config.console_settings().unwrap().unwrap();
    assert_eq!(settings.listen.to_string(), "127.0.0.1:8470");
    assert_eq!(settings.token, "0123456789abcdef-long-enough");
    assert!(
        !format!("{settings:?}").contains("0123456789abcdef"),
        "Debug hides the token"
    );
    std::fs::write(dir.path().join("short"), "abc\n").unwrap();
    for (section, expected) in [
        ("token_file = \"short\"", "at least 16 characters"),
        ("token_file = \"missing\"", "hq.console.token_file"),
        (
            "token_file = \"token\"\nlisten = \"localhost\"",
            "hq.console.listen",
        ),
    ] {
        let config = Config::load(&write(dir.path(), &with(section))).unwrap();
        let err = format!("{:#}", config.console_settings().unwrap_err());
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

#[test]
fn sync_global_properties_add_to_the_policy_and_a_blank_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load(&write(
        dir.path(),
        "[sync]\nglobal_properties = [\"facility.*\"]\n",
    ))
    .unwrap();
    let policy = config.policy().unwrap();
    assert!(!policy.excludes_table("global_property"));
    assert_eq!(
        policy
            .row_filter("global_property")
            .and_then(|f| f.matching("facility.code").map(str::to_owned)),
        Some("facility.*".to_owned())
    );
    let config = Config::load(&write(dir.path(), "[sync]\nglobal_properties = [\" \"]\n")).unwrap();
    let err = format!("{:#}", config.policy().unwrap_err());
    assert!(err.contains("sync.global_properties"), "{err}");
    let default = Config::load(&write(dir.path(), MINIMAL_HQ)).unwrap();
    assert!(default.policy().unwrap().excludes_table("global_property"));
}

#[test]
fn the_integration_topics_are_off_by_default_and_their_section_is_checked_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load(&write(dir.path(), MINIMAL_HQ)).unwrap();
    assert!(config.integration_settings().unwrap().is_none());
    assert!(!config.integration_enabled(), "off by default");
    std::fs::write(dir.path().join("mask.key"), "0123456789abcdef-masking\n").unwrap();
    std::fs::write(dir.path().join("short.key"), "abc\n").unwrap();
    let with =
        |section: &str| format!("{MINIMAL_HQ}[hq.integration]\nbrokers = \"b:9092\"\n{section}\n");
    let config = Config::load(&write(
        dir.path(),
        &with(
            "hash_key_file = \"mask.key\"\n[hq.integration.mask]\n\
             \"person_name.given_name\" = \"hash\"\n\"person.birthdate\" = \"drop\"",
        ),
    ))
    .unwrap();
    assert!(config.integration_enabled());
    let settings = config.integration_settings().unwrap().unwrap();
    assert_eq!(settings.kafka.topic, "tributary.transaction");
    assert_eq!(settings.kafka.partitions, 1);
    assert_eq!(settings.envelope.database, "db");
    assert_eq!(
        settings.envelope.masking.action("person", "birthdate"),
        Some(tributary_apply::integration::MaskAction::Drop)
    );
    assert!(
        !format!("{settings:?}").contains("0123456789abcdef"),
        "Debug hides the masking key"
    );
    for (section, expected) in [
        (
            "[hq.integration.mask]\n\"given_name\" = \"hash\"",
            "\"table.column\"",
        ),
        (
            "[hq.integration.mask]\n\"person_name.given_name\" = \"hash\"",
            "hash_key_file is not set",
        ),
        (
            "hash_key_file = \"short.key\"\n[hq.integration.mask]\n\"person.gender\" = \"hash\"",
            "at least 16 characters",
        ),
        ("topic_prefix = \"no spaces\"", "topic_prefix"),
        ("poll_interval_ms = 0", "hq.integration.poll_interval_ms"),
    ] {
        let config = Config::load(&write(dir.path(), &with(section))).unwrap();
        let err = format!("{:#}", config.integration_settings().unwrap_err());
        assert!(err.contains(expected), "{expected}: {err}");
    }
    let err = format!(
        "{:#}",
        Config::load(&write(
            dir.path(),
            &with("[hq.integration.mask]\n\"person.gender\" = \"scramble\"")
        ))
        .unwrap_err()
    );
    assert!(err.contains("scramble"), "{err}");
}

/// The field names a struct deserializes, as serde's derive declares them.
fn fields_of<T: serde::de::DeserializeOwned>() -> Vec<&'static str> {
    use serde::de::{Error as _, Visitor};
    struct Recorder<'a>(&'a mut Vec<&'static str>);
    impl<'de> serde::Deserializer<'de> for Recorder<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.extend(fields);
            Err(Self::Error::custom("recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields = Vec::new();
    let _ = T::deserialize(Recorder(&mut fields));
    fields
}

/// An example with every option line (`#option = ...`, `#[section]`) switched on.
pub(super) fn every_option_on(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with([' ', '#']) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_deploy_examples_hold_every_option_and_parse_as_they_are_and_with_every_option_on() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
    let dir = tempfile::tempdir().unwrap();
    let mut everything = String::new();
    for name in ["site.toml", "hq.toml"] {
        let text = std::fs::read_to_string(root.join(name)).unwrap();
        Config::load(&write(dir.path(), &text))
            .unwrap_or_else(|e| panic!("deploy/examples/{name}: {e:#}"));
        let on = every_option_on(&text);
        let config = Config::load(&write(dir.path(), &on))
            .unwrap_or_else(|e| panic!("deploy/examples/{name} with every option on: {e:#}"));
        // The values the file alone decides are valid too.
        config.metrics_listen(None).unwrap();
        if config.site.is_some() {
            config.resume_by().unwrap();
        }
        if config.has_hq() {
            config.conflict_policies().unwrap();
            config.parked_report_age().unwrap();
        }
        everything.push_str(&on);
    }
    let sections = [
        ("the file", fields_of::<Config>()),
        ("[site]", fields_of::<SiteSection>()),
        ("[*.database]", fields_of::<DatabaseSection>()),
        ("[hq]", fields_of::<HqSection>()),
        ("[hq.conflicts]", fields_of::<ConflictsSection>()),
        ("[hq.refresh]", fields_of::<RefreshSection>()),
        ("[hq.console]", fields_of::<ConsoleSection>()),
        ("[hq.integration]", fields_of::<IntegrationSection>()),
        ("[transport]", fields_of::<TransportSection>()),
        ("[transport.kafka]", fields_of::<KafkaSection>()),
        ("secrets", fields_of::<SecretSource>()),
        ("[metrics]", fields_of::<MetricsSection>()),
        ("[sync]", fields_of::<SyncSection>()),
    ];
    for (section, fields) in sections {
        assert!(!fields.is_empty(), "{section}: no fields recorded");
        for field in fields {
            assert!(
                everything.contains(&format!("{field} ="))
                    || everything.contains(&format!("{field}]"))
                    || everything.contains(&format!("{field} = {{")),
                "{section} {field} is not in deploy/examples"
            );
        }
    }
}
