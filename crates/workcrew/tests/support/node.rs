//! Where the Node.js worker and its test modules are, and the `node` program that runs them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The oldest Node.js the worker supports.
const NODE_MAJOR_MIN: u32 = 18;

/// The real `node` executable (not a version manager's shim, which needs `PATH`).
///
/// # Panics
///
/// If `node` is not on `PATH` or is older than Node 18: these tests fail, they never skip.
pub(crate) fn node() -> &'static Path {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        let out = std::process::Command::new("node")
            .args(["-p", "process.versions.node + ' ' + process.execPath"])
            .output()
            .unwrap_or_else(|e| {
                panic!("node (Node.js {NODE_MAJOR_MIN} or newer) must be on PATH to test workers/node: {e}")
            });
        assert!(out.status.success(), "node -p failed: {out:?}");
        let text = String::from_utf8(out.stdout).expect("node prints UTF-8");
        let (version, path) = text.trim().split_once(' ').expect("version and path");
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .expect("a Node.js version");
        assert!(
            major >= NODE_MAJOR_MIN,
            "workers/node needs Node.js {NODE_MAJOR_MIN} or newer; node on PATH is {version}"
        );
        PathBuf::from(path)
    })
}

/// `workers/node/serve.js`.
pub(crate) fn serve_js() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workers/node/serve.js")
}

/// A test module under `tests/support/node/`.
pub(crate) fn module(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/node")
        .join(name)
}
