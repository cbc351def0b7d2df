//! What this build is, in the shape Headscale reports it (`/version`, `headscale version`):
//! version, commit, build time, the toolchain with the target OS and architecture (Go's
//! names), and whether the tree was dirty. A packaging build sets `HEADSCALE_BUILD_COMMIT`
//! and `HEADSCALE_BUILD_TIME`; without them both read `unknown`.

use serde::Serialize;

/// This build, as `/version` returns it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VersionInfo {
    pub version: &'static str,
    pub commit: &'static str,
    #[serde(rename = "buildTime")]
    pub build_time: &'static str,
    pub go: Toolchain,
    pub dirty: bool,
}

/// The compiler and target (Headscale names this part `go`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Toolchain {
    pub version: &'static str,
    pub os: &'static str,
    pub arch: &'static str,
}

impl VersionInfo {
    /// This build.
    pub fn current() -> Self {
        VersionInfo {
            version: env!("CARGO_PKG_VERSION"),
            commit: option_env!("HEADSCALE_BUILD_COMMIT").unwrap_or("unknown"),
            build_time: option_env!("HEADSCALE_BUILD_TIME").unwrap_or("unknown"),
            go: Toolchain {
                version: env!("HEADSCALE_RUSTC_VERSION"),
                os: std::env::consts::OS,
                arch: go_arch(std::env::consts::ARCH),
            },
            dirty: false,
        }
    }
}

/// Go's name for an architecture (`amd64` for `x86_64`), which scripts written for Headscale
/// compare against.
fn go_arch(arch: &'static str) -> &'static str {
    match arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

impl std::fmt::Display for VersionInfo {
    /// The text `headscale version` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "headscale version {}{}\ncommit: {}\nbuild time: {}\nbuilt with: {} {}/{}",
            self.version,
            if self.dirty { "-dirty" } else { "" },
            self.commit,
            self.build_time,
            self.go.version,
            self.go.os,
            self.go.arch
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_headscale_field_names() {
        let v = serde_json::to_value(VersionInfo::current()).expect("encodes");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert!(v["buildTime"].is_string());
        assert!(v["go"]["version"].as_str().is_some_and(|s| s.starts_with("rustc ")), "{v}");
        assert_eq!(v["go"]["os"], std::env::consts::OS);
        assert_eq!(v["dirty"], false);
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }
}
