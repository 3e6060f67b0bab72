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
    /// Kafka's InconsistentClusterIdException at start-up: the configured id is not the one
    /// the data dir was formatted with.
    #[error("this data dir belongs to cluster {stored}, not to --cluster-id {configured}")]
    InconsistentClusterId { stored: String, configured: String },
}

impl From<std::io::Error> for ControllerError {
    fn from(e: std::io::Error) -> Self {
        ControllerError::Io(e.to_string())
    }
}
