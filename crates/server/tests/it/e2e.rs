//! End-to-end: runs the pytest suite in `tests/e2e/`, which starts this crate's real `kiln`
//! binary on the default model (and on Gemma 3 270M, the second real model, and the tiny random
//! SmolVLM for image input: test_vision.py; both models at once: test_multi_model.py; memory
//! after a burst of huge bad requests: test_reliability.py) and
//! drives it with the official `openai` Python client, `requests` and curl; the playground is
//! driven in Debian's Chromium by Playwright (test_playground.py), and its Node snippet run with
//! the official `openai` Node package. The Python venv and the Node folder come from
//! `cargo xtask e2e-env` (CI runs it).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_E2E_PYTHON") {
        return PathBuf::from(p);
    }
    kiln_hub::kiln_home().unwrap().join("venv/bin/python")
}

#[test]
fn openai_clients_against_the_real_server() {
    let python = python();
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask e2e-env` (and `cargo xtask fetch-model`)",
        python.display()
    );
    let model = kiln_hub::default_model_path().unwrap();
    assert!(
        model.exists(),
        "{} is missing: run `cargo xtask fetch-model`",
        model.display()
    );
    // The second real model's tests (test_gemma3.py) serve it too.
    let gemma = kiln_hub::model_path(&kiln_hub::GEMMA3_270M).unwrap();
    assert!(
        gemma.exists(),
        "{} is missing: run `cargo xtask fetch-model --model gemma3-270m`",
        gemma.display()
    );
    let dir = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("tests/e2e");
    let logs = std::env::temp_dir().join("kiln-e2e-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&dir)
        .current_dir(&dir)
        .env("KILN_BIN", env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_GEMMA3_MODEL", &gemma)
        .env("KILN_DEFAULT_MODEL", &model)
        .env("KILN_E2E_LOGS", &logs)
        .env(
            "KILN_E2E_NODE_MODULES",
            kiln_hub::kiln_home().unwrap().join("e2e-node/node_modules"),
        )
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the end-to-end suite failed (server logs in {})",
        logs.display()
    );
}
