//! Errors of the generator: a bad parameter, an output that cannot be written, or an interruption.

use std::path::PathBuf;

/// Why a synthetic export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A parameter is out of range; `field` is its public name (`kernels`, `devices`, ...).
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// Public name of the parameter.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The output path cannot be created or written.
    #[error("{}: cannot write the export: {message}", path.display())]
    Output {
        /// The path that could not be written.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The output exists and overwriting was not asked for.
    #[error("{}: already exists (use --force-overwrite / overwrite=True to replace it)", path.display())]
    Exists {
        /// The existing path.
        path: PathBuf,
    },
    /// The embedded model data is malformed (a build defect, not a user error).
    #[error("embedded synth model is malformed: {0}")]
    Model(String),
    /// The caller asked to stop; the partial output was removed.
    #[error("interrupted")]
    Cancelled,
}

impl SynthError {
    /// A stable machine-readable code, as in `traceforge.errors`.
    pub fn code(&self) -> &'static str {
        match self {
            SynthError::InvalidArgument { .. } => "synth_argument",
            SynthError::Output { .. } => "synth_output",
            SynthError::Exists { .. } => "synth_exists",
            SynthError::Model(_) => "synth_model",
            SynthError::Cancelled => "interrupted",
        }
    }
}
