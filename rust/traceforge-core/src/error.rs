//! Errors of the core, each with a stable machine-readable code.
use std::path::PathBuf;

/// What went wrong, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: no such file")]
    NotFound { path: PathBuf },
    #[error("{path}: permission denied")]
    Permission { path: PathBuf },
    #[error("{path}: {reason}")]
    NotAnExport { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    MissingTable { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    UnsupportedSchema { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The file concerned (if any) and the message without it.
    pub fn parts(&self) -> (Option<&std::path::Path>, String) {
        match self {
            Error::NotFound { path } => (Some(path), "no such file".into()),
            Error::Permission { path } => (Some(path), "permission denied".into()),
            Error::NotAnExport { path, reason }
            | Error::Corrupt { path, reason }
            | Error::MissingTable { path, reason }
            | Error::UnsupportedSchema { path, reason }
            | Error::Io { path, reason } => (Some(path), reason.clone()),
            Error::Interrupted => (None, "interrupted".into()),
            Error::Invalid(m) => (None, m.clone()),
        }
    }

    /// Stable code, shared with `traceforge.errors` on the Python side.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Permission { .. } => "permission",
            Error::NotAnExport { .. } => "not_an_export",
            Error::Corrupt { .. } => "corrupt",
            Error::MissingTable { .. } => "missing_table",
            Error::UnsupportedSchema { .. } => "unsupported_schema",
            Error::Io { .. } => "io",
            Error::Interrupted => "interrupted",
            Error::Invalid(_) => "invalid",
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
