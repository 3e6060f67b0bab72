//! Errors of the controller handle.

use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ControllerError {
    #[error("timed out")]
    Timeout,
    #[error("controller is shut down")]
    Shutdown,
    #[error("no Raft leader")]
    NoLeader,
    #[error("i/o: {0}")]
    Io(String),
    #[error("raft: {0}")]
    Raft(String),
}

impl From<std::io::Error> for ControllerError {
    fn from(e: std::io::Error) -> Self {
        ControllerError::Io(e.to_string())
    }
}
