//! Errors of the core, each with a stable machine-readable code.
use std::path::PathBuf;

/// What went wrong, with the file it concerns; [`Error::code`] names the kind for Python.
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

/// Every code [`Error::code`] can return, in variant order: the binding exposes it as
/// `_core.error_codes()` so the Python side can check that each has its exception class.
pub const ERROR_CODES: &[&str] = &[
    "not_found",
    "permission",
    "not_an_export",
    "corrupt",
    "missing_table",
    "unsupported_schema",
    "io",
    "interrupted",
    "invalid",
];

/// The core's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of each variant (a new variant fails to compile in `code` until it is added here too).
    fn one_of_each() -> Vec<Error> {
        let path = PathBuf::from("/x.sqlite");
        let reason = String::from("why");
        vec![
            Error::NotFound { path: path.clone() },
            Error::Permission { path: path.clone() },
            Error::NotAnExport { path: path.clone(), reason: reason.clone() },
            Error::Corrupt { path: path.clone(), reason: reason.clone() },
            Error::MissingTable { path: path.clone(), reason: reason.clone() },
            Error::UnsupportedSchema { path: path.clone(), reason: reason.clone() },
            Error::Io { path, reason: reason.clone() },
            Error::Interrupted,
            Error::Invalid(reason),
        ]
    }

    #[test]
    fn every_code_is_listed_once_and_every_listed_code_is_returned() {
        let codes: Vec<&str> = one_of_each().iter().map(Error::code).collect();
        assert_eq!(codes, ERROR_CODES, "ERROR_CODES lists the codes in variant order");
        let mut unique = ERROR_CODES.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ERROR_CODES.len(), "no code twice");
    }

    #[test]
    fn parts_carry_the_path_apart_from_the_message() {
        for err in one_of_each() {
            let (path, message) = err.parts();
            match &err {
                Error::Interrupted | Error::Invalid(_) => assert!(path.is_none()),
                _ => {
                    assert_eq!(path, Some(std::path::Path::new("/x.sqlite")));
                    assert!(err.to_string().starts_with("/x.sqlite: "));
                }
            }
            assert!(err.to_string().ends_with(&message), "{err}");
        }
    }
}
