//! Test fixtures, and temporary files removed when the test ends.

use std::path::{Path, PathBuf};

/// `tests/fixtures`: keys and configs the tests load.
pub fn fixtures_dir() -> PathBuf {
    // This crate lives in tests/support, beside tests/fixtures.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/support has a parent")
        .join("fixtures")
}

/// A fresh directory under the system temp dir, named `topicgate-{what}-…`,
/// removed when the returned guard drops (pass or fail).
pub fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("topicgate-{what}-"))
        .tempdir()
        .expect("temp dir")
}

/// A file holding `text` in a directory of its own, removed with the guard.
pub struct TempFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempFile {
    pub fn new(what: &str, name: &str, text: &str) -> Self {
        let dir = temp_dir(what);
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write temp file");
        Self { _dir: dir, path }
    }
}

impl std::ops::Deref for TempFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for TempFile {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}
