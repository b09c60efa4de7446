//! The real `kiln` binary's command line: `kiln help` is complete, a setting comes from the
//! flag, else the environment, else the config file, and bad input fails with a clear message.
//! No model is needed: a model path that does not exist fails at its first use, naming it
//! (`kiln generate --image` runs the tiny random SmolVLM in `testdata/`).

use std::io::Write as _;
use std::process::{Command, Output};

/// `kiln ARGS` with `env` as its only `KILN_*` variables (the caller's are removed).
fn kiln(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KILN_") {
            command.env_remove(key);
        }
    }
    command.args(args).envs(env.iter().copied());
    command.output().expect("running kiln")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_lists_every_command_and_serve_flag_with_env_and_default() {
    let out = kiln(&["help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("UTF-8 help");
    for command in ["kiln serve", "kiln generate", "kiln tokenize"] {
        assert!(help.contains(command), "{command} in\n{help}");
    }
    // The settings this repository's own tools and docs use, each with its variable.
    for flag in [
        "model",
        "served-model-name",
        "host",
        "port",
        "api-key",
        "device",
        "dtype",
        "max-batched-tokens",
        "max-running",
        "max-queue",
        "kv-cache-memory",
        "kv-cache-tokens",
        "kv-cache-dtype",
        "block-size",
        "max-model-len",
        "max-n",
        "max-body-bytes",
        "request-timeout",
        "shutdown-grace",
        "metrics-require-key",
        "no-prefix-caching",
        "config",
    ] {
        let env = format!("[env: KILN_{}", flag.to_uppercase().replace('-', "_"));
        assert!(help.contains(&format!("--{flag}")), "--{flag} in\n{help}");
        assert!(help.contains(&env), "{env} in\n{help}");
    }
    for default in [
        "[default: 127.0.0.1]",
        "[default: 8000]",
        "[default: cpu]",
        "[default: f16]",
    ] {
        assert!(help.contains(default), "{default} in\n{help}");
    }
    let serve = kiln(&["serve", "--help"], &[]);
    assert!(serve.status.success());
    let serve = String::from_utf8(serve.stdout).expect("UTF-8 help");
    assert!(serve.contains("--kv-cache-memory <SIZE>"), "{serve}");
    assert!(
        help.contains(&serve),
        "`kiln help` includes `kiln serve --help`"
    );
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("kiln.toml");
    let mut f = std::fs::File::create(&file).expect("creating kiln.toml");
    writeln!(f, "model = \"/nonexistent/from-file.gguf\"\nport = 0").expect("writing kiln.toml");
    let config = file.to_str().expect("a UTF-8 path");

    let from_file = kiln(&["serve", "--config", config], &[]);
    let env = [("KILN_MODEL", "/nonexistent/from-env.gguf")];
    let from_env = kiln(&["serve", "--config", config], &env);
    let from_flag = kiln(
        &["serve", "--model", "/nonexistent/from-flag.gguf"],
        &[("KILN_CONFIG", config), env[0]],
    );
    for (out, expected) in [
        (from_file, "from-file.gguf"),
        (from_env, "from-env.gguf"),
        (from_flag, "from-flag.gguf"),
    ] {
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("loading the tokenizer of /nonexistent/{expected}")),
            "{expected}: {err}"
        );
    }
}

#[test]
fn bad_flags_values_and_files_are_clear_errors() {
    let out = kiln(&["serve", "--port", "nope"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid value 'nope' for '--port <PORT>'"));

    let out = kiln(&["serve"], &[("KILN_KV_CACHE_MEMORY", "12 parsecs")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown unit \"parsecs\""),
        "{}",
        stderr(&out)
    );

    let out = kiln(&["serve", "--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--no-such-flag"));

    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("kiln.toml");
    std::fs::write(&file, "max_runing = 4\n").expect("writing kiln.toml");
    let out = kiln(&["serve", "--config", file.to_str().expect("UTF-8")], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown setting `max_runing`"),
        "{}",
        stderr(&out)
    );

    let out = kiln(&["tokenize", "--prompt", "a", "--chat", "b"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

/// `testdata/NAME` at the repository root.
#[test]
fn devices_lists_the_cpu_path_and_what_wgpu_can_run_on() {
    let out = kiln(&["devices", "--json"], &[("KILN_CPU_ISA", "avx2")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    // Capped by KILN_CPU_ISA, as the kernels are: avx2 where the CPU has it, else scalar.
    let isa = v["cpu"]["isa"].as_str().unwrap();
    assert!(["avx2", "scalar"].contains(&isa), "{v}");
    assert!(v["cpu"]["threads"].as_u64().unwrap() >= 1, "{v}");
    let adapters = v["wgpu_adapters"].as_array().unwrap();
    if cfg!(feature = "wgpu") {
        // Either the device it starts, or why not, never both.
        let started = v["wgpu"]["name"].is_string();
        assert!(started != v["wgpu"]["error"].is_string(), "{v}");
        assert!(
            started || adapters.is_empty() || v["wgpu"]["error"].is_string(),
            "{v}"
        );
    } else {
        assert!(adapters.is_empty(), "{v}");
        let error = v["wgpu"]["error"].as_str().unwrap();
        assert!(error.contains("--features wgpu"), "{error}");
    }
    let out = kiln(&["devices"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("cpu   kernels "), "{text}");
    assert!(text.contains("--device wgpu"), "{text}");
}

fn testdata(name: &str) -> String {
    format!("{}/../../testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn generate_with_an_image_gives_transformers_greedy_text() {
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(testdata("tiny-smolvlm/golden.json")).expect("golden.json"),
    )
    .expect("JSON");
    // The `small` case: the image, then the question, in one user message.
    let case = &golden["cases"][0];
    assert_eq!(case["name"], "small");
    let want = case["greedy_text"].as_str().expect("greedy_text");
    let image = testdata("tiny-smolvlm/small_20x14.png");
    let common = [
        "--chat",
        "What is in this picture?",
        "--image",
        image.as_str(),
        "--max-tokens",
        "8",
        "--kv-cache-dtype",
        "f32",
    ];
    let folder = testdata("tiny-smolvlm");
    let gguf = testdata("tiny-smolvlm/model.gguf");
    let mmproj = testdata("tiny-smolvlm/mmproj.gguf");
    for model in [
        vec!["--model", folder.as_str()],
        vec!["--model", gguf.as_str(), "--mmproj", mmproj.as_str()],
    ] {
        let mut args = vec!["generate"];
        args.extend(model.iter().copied());
        args.extend(common);
        let out = kiln(&args, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim_end(),
            want,
            "{args:?}"
        );
        assert!(
            stderr(&out).contains("prefill: 89 tokens"),
            "{}",
            stderr(&out)
        );
    }
    // An image that is not there, or --image with --prompt, is a clear error.
    let out = kiln(
        &[
            "generate",
            "--model",
            folder.as_str(),
            "--chat",
            "hi",
            "--image",
            "/nonexistent.png",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("reading --image /nonexistent.png"),
        "{}",
        stderr(&out)
    );
    let out = kiln(
        &[
            "generate",
            "--model",
            folder.as_str(),
            "--prompt",
            "hi",
            "--image",
            image.as_str(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "--image needs --chat");
    assert!(
        stderr(&out).contains("--image goes with --chat"),
        "{}",
        stderr(&out)
    );
}
