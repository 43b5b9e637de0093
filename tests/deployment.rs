//! The deployment files: every systemd unit in `deploy/systemd` passes `systemd-analyze verify`
//! without a warning (with its binary path pointed at the built `tributary`), and the command
//! line each one starts is one `tributary` accepts: it gets as far as reading the
//! configuration file the unit names. `deploy/compose` passes docker-compose's schema check
//! and promtool's checks (scrape configuration, alert rules), and every metric its dashboard
//! and alerts use is documented in METRICS.md and registered by a component.

use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;
use tributary_suite::tributary_bin;

const INSTALLED_BINARY: &str = "/usr/local/bin/tributary";

fn units() -> Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    units.retain(|p| p.extension().is_some_and(|e| e == "service"));
    units.sort();
    Ok(units)
}

/// `name@.service` is verified as the instance `name@clinic-a.service`.
fn instance_name(unit: &Path) -> String {
    let name = unit.file_name().unwrap_or_default().to_string_lossy();
    name.replace("@.service", "@clinic-a.service")
}

#[test]
fn every_unit_verifies_cleanly_with_the_built_binary() -> Result<()> {
    let units = units()?;
    ensure!(units.len() >= 3, "capture, ship and apply units: {units:?}");
    let dir = tempfile::tempdir()?;
    let binary = tributary_bin();
    for unit in &units {
        let text = std::fs::read_to_string(unit)?;
        ensure!(
            text.contains(&format!("ExecStart={INSTALLED_BINARY} ")),
            "{} starts {INSTALLED_BINARY}",
            unit.display()
        );
        let copy = dir.path().join(unit.file_name().context("unit name")?);
        std::fs::write(
            &copy,
            text.replace(INSTALLED_BINARY, &binary.display().to_string()),
        )?;
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(instance_name(unit)))
            .output()
            .context("running systemd-analyze (deploy/test.sh installs it)")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && stderr.trim().is_empty(),
            "{}: {}\n{stderr}",
            unit.display(),
            out.status
        );
    }
    Ok(())
}

#[test]
fn every_unit_starts_a_command_line_tributary_accepts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for unit in units()? {
        let text = std::fs::read_to_string(&unit)?;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .with_context(|| format!("{} has no ExecStart", unit.display()))?;
        let missing = dir.path().join("missing.toml");
        let args: Vec<String> = line
            .split_whitespace()
            .skip(1)
            .map(|a| {
                if a.starts_with("/etc/tributary/") {
                    missing.display().to_string()
                } else {
                    a.replace("%i", "clinic-a")
                }
            })
            .collect();
        let out = Command::new(tributary_bin()).args(&args).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            stderr.contains("cannot read configuration file"),
            "{}: `tributary {}` did not get to the configuration:\n{stderr}",
            unit.display(),
            args.join(" ")
        );
    }
    Ok(())
}

fn compose_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose")
}

/// Runs `program args` in `dir`; its output when it succeeds, else an error with all of it.
fn run_in(dir: &Path, program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {program} (deploy/test.sh installs it)"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}\n{text}",
        out.status
    );
    Ok(text)
}

#[test]
fn the_compose_file_passes_the_compose_schema() -> Result<()> {
    run_in(
        &compose_dir(),
        "docker-compose",
        &["-f", "compose.yaml", "config", "-q"],
    )?;
    Ok(())
}

#[test]
fn the_prometheus_configuration_and_alert_rules_pass_promtool() -> Result<()> {
    let dir = compose_dir();
    let config = run_in(&dir, "promtool", &["check", "config", "prometheus.yml"])?;
    ensure!(config.contains("1 rule files found"), "{config}");
    run_in(&dir, "promtool", &["check", "rules", "alerts.yml"])?;
    Ok(())
}

/// Every `tributary_...` metric name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tributary_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_the_dashboard_and_alerts_use_is_documented_and_registered() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let documented = metric_names(&std::fs::read_to_string(root.join("METRICS.md"))?);
    let mut registered = String::new();
    for file in [
        "crates/apply/src/metrics.rs",
        "crates/capture/src/metrics.rs",
        "crates/kafka/src/metrics.rs",
    ] {
        registered.push_str(&std::fs::read_to_string(root.join(file))?);
    }
    let registered = metric_names(&registered);
    let dashboard_text =
        std::fs::read_to_string(compose_dir().join("grafana/dashboards/tributary.json"))?;
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard_text)?;
    let panels = dashboard["panels"].as_array().context("panels")?;
    ensure!(panels.len() >= 10, "{} panels", panels.len());
    for panel in panels {
        let targets = panel["targets"].as_array().context("targets")?;
        ensure!(
            !targets.is_empty() && targets.iter().all(|t| t["expr"].is_string()),
            "panel {} has no query",
            panel["title"]
        );
    }
    let used: Vec<String> = metric_names(&dashboard_text)
        .into_iter()
        .chain(metric_names(&std::fs::read_to_string(
            compose_dir().join("alerts.yml"),
        )?))
        .collect();
    ensure!(used.len() > 15, "{used:?}");
    for name in used {
        ensure!(
            documented.contains(&name),
            "{name} is used but not in METRICS.md"
        );
        ensure!(
            registered.contains(&name),
            "{name} is used but no component registers it"
        );
    }
    Ok(())
}
