//! How a client command ends: its exit status, and the errors that end it
//! early. Scripts read the status, so the mapping lives in one place:
//! 0 the work is done, 1 the task failed or was cancelled or the service
//! declined the request, 2 the request itself was wrong (bad arguments, a
//! URL that is not a vectorize service, 400/401/413/422 answers) or the
//! service could not be reached, 130 interrupted with the task left
//! running. This module prints nothing.

use std::process::ExitCode;

/// The exit status of a client command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The task is DONE, or the request was answered as asked.
    Success,
    /// The task FAILED or was CANCELLED, or the service declined the request
    /// (404, 409, 5xx).
    Failed,
    /// A usage or connection error: nothing was done.
    Usage,
    /// Ctrl-C while waiting, the task left running (the shell's 128 + SIGINT).
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Interrupted => 130,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// Why a client command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or a file that cannot be read; nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// The service could not be reached, or what answered is not a
    /// vectorize service.
    #[error("{0}")]
    Connection(String),
    /// The service answered with one of the contract's error bodies.
    #[error("{message} ({code}, HTTP {status})")]
    Refused {
        status: u16,
        code: String,
        message: String,
        /// `Location` of a 409 `UPLOAD_IN_PROGRESS`: the task in flight.
        location: Option<String>,
    },
}

impl CliError {
    /// Answers about malformed input count as usage errors, since running
    /// the same command again cannot succeed; other refusals (no such task,
    /// model exists, server trouble) as failures.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Usage(_) | CliError::Connection(_) => Exit::Usage,
            CliError::Refused { status, .. } => match status {
                400 | 401 | 413 | 422 => Exit::Usage,
                _ => Exit::Failed,
            },
        }
    }

    /// The error code of a refusal, e.g. `TASK_FINISHED`.
    pub fn code(&self) -> Option<&str> {
        match self {
            CliError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16) -> CliError {
        CliError::Refused {
            status,
            code: "X".into(),
            message: "m".into(),
            location: None,
        }
    }

    #[test]
    fn input_errors_are_usage_and_refusals_are_failures() {
        for status in [400, 401, 413, 422] {
            assert_eq!(refused(status).exit(), Exit::Usage, "{status}");
        }
        for status in [404, 409, 500, 502] {
            assert_eq!(refused(status).exit(), Exit::Failed, "{status}");
        }
        assert_eq!(CliError::Connection("down".into()).exit(), Exit::Usage);
        assert_eq!(Exit::Interrupted.code(), 130);
    }
}
