//! Hostile configuration files (issue 8): whatever the bytes, loading a configuration and
//! resolving every part a command reads from the file alone ends in a value or an error, never
//! a panic. Inputs are arbitrary text and the two deploy examples with every option switched
//! on, cut, with bytes changed and with lines dropped; 2,000 cases each, so CI runs a fixed
//! amount of fuzzing every time.

use super::tests::every_option_on;
use super::*;
use proptest::prelude::*;

const SITE_EXAMPLE: &str = include_str!("../../../../deploy/examples/site.toml");
const HQ_EXAMPLE: &str = include_str!("../../../../deploy/examples/hq.toml");

/// Parses `text` and asks for everything that does not need the files it names.
fn exercise(text: &str) {
    let Ok(config) = Config::parse(text, Path::new("/nonexistent/tributary.toml")) else {
        return;
    };
    let _ = config.policy();
    let _ = config.metrics_listen(None);
    let _ = config.resume_by();
    let _ = config.site_id();
    let _ = config.site_database();
    let _ = config.hq_database();
    let _ = config.conflict_policies();
    let _ = config.parked_report_age();
    let _ = config.site_silent_after_s();
    let _ = config.integration_enabled();
    let _ = config.transport_kind();
    let _ = config.spool_format();
    let _ = config.capture_settings();
    let _ = config.kafka_settings();
    let _ = config.consumer_settings();
    let _ = config.shipper_settings();
    let _ = config.refresh_settings();
    let _ = config.console_settings();
    let _ = config.integration_settings();
}

fn example() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(every_option_on(SITE_EXAMPLE)),
        Just(every_option_on(HQ_EXAMPLE)),
        Just(SITE_EXAMPLE.to_owned()),
        Just(HQ_EXAMPLE.to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        exercise(&text);
    }

    #[test]
    fn examples_cut_anywhere_never_panic(text in example(), cut in any::<prop::sample::Index>()) {
        let mut end = cut.index(text.len() + 1);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        exercise(&text[..end]);
    }

    #[test]
    fn examples_with_bytes_changed_never_panic(
        text in example(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = text.into_bytes();
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        exercise(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn examples_with_lines_dropped_or_values_swapped_never_panic(
        text in example(),
        dropped in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        value in prop_oneof![
            Just("0"), Just("-1"), Just("\"\""), Just("18446744073709551616"), Just("[]"),
            Just("{}"), Just("\"\\u0000\""), Just("true"), Just("1e400"),
        ],
        swapped in any::<prop::sample::Index>(),
    ) {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for index in dropped {
            if !lines.is_empty() {
                let at = index.index(lines.len());
                lines.remove(at);
            }
        }
        let options: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.starts_with('#') && l.contains(" = "))
            .map(|(i, _)| i)
            .collect();
        if !options.is_empty() {
            let at = options[swapped.index(options.len())];
            if let Some((key, _)) = lines[at].split_once(" = ") {
                lines[at] = format!("{key} = {value}");
            }
        }
        exercise(&lines.join("\n"));
    }
}
