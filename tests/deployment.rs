//! The deployment files: every systemd unit in `deploy/systemd` passes `systemd-analyze verify`
//! without a warning (with its binary path pointed at the built `tributary`), and the command
//! line each one starts is one `tributary` accepts: it gets as far as reading the
//! configuration file the unit names.

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
