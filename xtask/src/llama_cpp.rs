//! llama.cpp's `llama-server`, the peer Kiln is measured against: built once from the llama.cpp
//! that the `llama-cpp-python` sdist on PyPI vendors, and cached under the kiln cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The pinned sdist (PyPI `llama-cpp-python`), its size-checked digest, and the llama.cpp in it.
pub(crate) const SDIST_VERSION: &str = "0.3.36";
const SDIST_SHA256: &str = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e";
/// CMake and Ninja come from PyPI too, so the build needs nothing from apt.
const BUILD_TOOLS: &str = "cmake==4.4.5\nninja==1.13.2\n";

/// A built `llama-server` (and the `llama-quantize` of the same build) and how it was
/// configured (recorded with the results).
#[derive(Debug, Clone)]
pub(crate) struct LlamaServer {
    pub(crate) path: PathBuf,
    pub(crate) quantize: PathBuf,
    pub(crate) cmake_flags: Vec<String>,
}

impl LlamaServer {
    /// A `ty` (e.g. `Q4_K_M`) copy of `model` beside it, made once with `llama-quantize
    /// --allow-requantize` (a quantized file is dequantized and quantized again; tensors whose
    /// rows do not fit the type's blocks get llama.cpp's fallback type, as for any user).
    pub(crate) fn requantized(&self, model: &Path, ty: &str) -> anyhow::Result<PathBuf> {
        let stem = model
            .file_stem()
            .and_then(|s| s.to_str())
            .context("the model's file name")?;
        // `SmolLM2-135M-Instruct.Q4_1` → `SmolLM2-135M-Instruct.Q4_K_M.gguf`.
        let base = stem.rsplit_once('.').map_or(stem, |(base, _)| base);
        let out = model.with_file_name(format!("{base}.{ty}.gguf"));
        if out.exists() {
            return Ok(out);
        }
        let partial = out.with_extension("gguf.partial");
        eprintln!("making {} with llama-quantize", out.display());
        let output = Command::new(&self.quantize)
            .arg("--allow-requantize")
            .arg(model)
            .arg(&partial)
            .arg(ty)
            .output()
            .with_context(|| format!("running {}", self.quantize.display()))?;
        if !output.status.success() {
            let _ = std::fs::remove_file(&partial);
            bail!(
                "llama-quantize failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::fs::rename(&partial, &out)?;
        Ok(out)
    }
}

/// Returns the cached `llama-server`, building it first when it is missing or was built with
/// other flags (about 15 minutes on 2 cores).
pub(crate) fn llama_server() -> anyhow::Result<LlamaServer> {
    let home = kiln_hub::kiln_home()?.join("llama.cpp");
    std::fs::create_dir_all(&home)?;
    let cmake_flags = cmake_flags(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    let build = home.join(format!("build-{SDIST_VERSION}"));
    let binary = build.join("bin/llama-server");
    let quantize = build.join("bin/llama-quantize");
    let stamp = build.join("kiln-cmake-flags.txt");
    let wanted = cmake_flags.join("\n");
    if binary.exists()
        && quantize.exists()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted)
    {
        return Ok(LlamaServer {
            path: binary,
            quantize,
            cmake_flags,
        });
    }

    let source = unpacked_sdist(&home)?;
    let python = crate::venv("build-tools-venv", BUILD_TOOLS)?;
    let bin_dir = python.parent().map(Path::to_path_buf).unwrap_or_default();
    let (cmake, ninja) = (bin_dir.join("cmake"), bin_dir.join("ninja"));
    eprintln!(
        "building llama-server from llama-cpp-python {SDIST_VERSION} (once; ~15 min on 2 cores)"
    );
    let run = |cmd: &mut Command| -> anyhow::Result<()> {
        let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
        anyhow::ensure!(status.success(), "{cmd:?} failed ({status})");
        Ok(())
    };
    let _ = std::fs::remove_file(&stamp);
    run(Command::new(&cmake)
        .arg("-S")
        .arg(source.join("vendor/llama.cpp"))
        .arg("-B")
        .arg(&build)
        .args(["-G", "Ninja"])
        .arg(format!("-DCMAKE_MAKE_PROGRAM={}", ninja.display()))
        .args(&cmake_flags))?;
    let jobs = std::thread::available_parallelism().map_or(2, usize::from);
    run(Command::new(&ninja).arg("-C").arg(&build).args([
        "-j",
        &jobs.to_string(),
        "llama-server",
        "llama-quantize",
    ]))?;
    for built in [&binary, &quantize] {
        if !built.exists() {
            bail!("the build produced no {}", built.display());
        }
    }
    std::fs::write(&stamp, &wanted)?;
    Ok(LlamaServer {
        path: binary,
        quantize,
        cmake_flags,
    })
}

/// CMake flags for this CPU. llama.cpp's native detection is off (`GGML_NATIVE=OFF`): on these
/// VMs its AMX path segfaults although the CPU advertises AMX, so the instruction sets are named
/// one by one from `/proc/cpuinfo`, AMX always off.
fn cmake_flags(cpuinfo: &str) -> Vec<String> {
    let cpu_flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &str| if cpu_flags.contains(&f) { "ON" } else { "OFF" };
    let mut flags: Vec<String> = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DGGML_NATIVE=OFF",
        "-DGGML_AMX_TILE=OFF",
        "-DGGML_AMX_INT8=OFF",
        "-DGGML_AMX_BF16=OFF",
        // No network at build time (no prebuilt web UI from Hugging Face) and no TLS needed.
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DGGML_CCACHE=OFF",
    ]
    .map(String::from)
    .to_vec();
    for (option, cpu_flag) in [
        ("GGML_SSE42", "sse4_2"),
        ("GGML_AVX", "avx"),
        ("GGML_AVX2", "avx2"),
        ("GGML_FMA", "fma"),
        ("GGML_F16C", "f16c"),
        ("GGML_BMI2", "bmi2"),
        ("GGML_AVX_VNNI", "avx_vnni"),
        ("GGML_AVX512", "avx512f"),
        ("GGML_AVX512_VNNI", "avx512_vnni"),
        ("GGML_AVX512_BF16", "avx512_bf16"),
    ] {
        flags.push(format!("-D{option}={}", has(cpu_flag)));
    }
    flags
}

/// The sdist, downloaded (digest-checked) and unpacked under `home` once.
fn unpacked_sdist(home: &Path) -> anyhow::Result<PathBuf> {
    let name = format!("llama_cpp_python-{SDIST_VERSION}");
    let source = home.join(&name);
    if source.join("vendor/llama.cpp/CMakeLists.txt").exists() {
        return Ok(source);
    }
    let archive = home.join(format!("{name}.tar.gz"));
    // pip cannot fetch an sdist without building it, so PyPI's JSON API names the file and Python
    // (always present: pip needs it) downloads it; the digest pins the bytes.
    let script = r#"
import hashlib, json, os, sys, urllib.parse, urllib.request
version, want, dest = sys.argv[1:4]
# The project-wide document (some PyPI mirrors serve no per-version one); URLs may be relative.
api = "https://pypi.org/pypi/llama-cpp-python/json"
with urllib.request.urlopen(api, timeout=120) as r:
    files = json.load(r)["releases"][version]
(url,) = [urllib.parse.urljoin(api, u["url"]) for u in files if u["packagetype"] == "sdist"]
h = hashlib.sha256()
with urllib.request.urlopen(url, timeout=600) as r, open(dest + ".partial", "wb") as f:
    while chunk := r.read(1 << 20):
        h.update(chunk)
        f.write(chunk)
if h.hexdigest() != want:
    sys.exit(f"{url}: sha256 {h.hexdigest()}, expected {want}")
os.replace(dest + ".partial", dest)
"#;
    if !archive.exists() {
        eprintln!("downloading llama-cpp-python {SDIST_VERSION} (sdist, ~77 MB) from PyPI");
        let status = Command::new("python3")
            .args(["-c", script, SDIST_VERSION, SDIST_SHA256])
            .arg(&archive)
            .status()
            .context("running python3 to download the llama-cpp-python sdist")?;
        anyhow::ensure!(
            status.success(),
            "downloading the llama-cpp-python sdist failed"
        );
    }
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(home)
        .status()
        .context("running tar")?;
    anyhow::ensure!(status.success(), "unpacking {} failed", archive.display());
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_sets_follow_the_cpu_and_amx_stays_off() {
        let flags = cmake_flags("processor : 0\nflags : fpu sse4_2 avx avx2 fma f16c amx_tile\n");
        for on in [
            "GGML_AVX2=ON",
            "GGML_FMA=ON",
            "GGML_SSE42=ON",
            "GGML_NATIVE=OFF",
        ] {
            assert!(flags.iter().any(|f| f.ends_with(on)), "{on} in {flags:?}");
        }
        for off in [
            "GGML_AVX512=OFF",
            "GGML_AMX_TILE=OFF",
            "GGML_AVX512_BF16=OFF",
        ] {
            assert!(flags.iter().any(|f| f.ends_with(off)), "{off} in {flags:?}");
        }
    }
}
