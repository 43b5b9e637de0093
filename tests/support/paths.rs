//! Where things are: the repository, cargo's target directory, the services root and
//! the `tributary` binary.

use std::env;
use std::path::{Path, PathBuf};

/// The repository root. `tributary-suite` is the root package, so its manifest
/// directory is the repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (relative to the repository
/// root when relative), else the ancestor of the running test executable that holds
/// cargo's `CACHEDIR.TAG`, else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            repo_root().join(dir)
        };
    }
    if let Ok(exe) = env::current_exe()
        && let Some(dir) = exe
            .ancestors()
            .skip(1)
            .find(|a| a.join("CACHEDIR.TAG").is_file())
    {
        return dir.to_path_buf();
    }
    repo_root().join("target")
}

/// `<target>/tributary-services`: every MariaDB instance directory of the suite lives
/// below it (and the template cache, in `templates/`). `deploy/test.sh` stops everything
/// below it on exit.
pub fn services_root() -> PathBuf {
    target_dir().join("tributary-services")
}

/// The `tributary` binary under test: `TRIBUTARY_BIN` when set, else the `tributary`
/// next to the `deps/` directory of the running test executable (e.g.
/// `target/debug/tributary`).
///
/// # Panics
/// When the binary does not exist: build it first (`cargo build --bin tributary`;
/// `deploy/test.sh` does this).
pub fn tributary_bin() -> PathBuf {
    let path = match env::var_os("TRIBUTARY_BIN").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => default_bin_dir().join(format!("tributary{}", env::consts::EXE_SUFFIX)),
    };
    assert!(
        path.is_file(),
        "the tributary binary {} does not exist: run `cargo build --bin tributary` first \
         (deploy/test.sh does this), or point TRIBUTARY_BIN at it",
        path.display()
    );
    path
}

/// An example program of this package (`examples/<name>.rs`), built by
/// `cargo build --all-targets` (deploy/test.sh does this).
pub fn example_bin(name: &str) -> PathBuf {
    let path = default_bin_dir()
        .join("examples")
        .join(format!("{name}{}", env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "the example {} does not exist: run `cargo build --examples` first (deploy/test.sh \
         builds every target)",
        path.display()
    );
    path
}

fn default_bin_dir() -> PathBuf {
    let exe = env::current_exe().expect("current_exe");
    let dir = exe.parent().unwrap_or(Path::new("."));
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}
