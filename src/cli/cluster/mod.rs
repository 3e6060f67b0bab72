//! `chronik-server cluster …`: `status` (over the Kafka protocol) and the membership commands
//! `add-node`, `rebalance`, `remove-node` (over the controller RPC port, with the cluster secret).

mod membership;
mod status;

use clap::{Args, Subcommand};
use std::path::PathBuf;

pub fn run(cmd: &ClusterCommand) -> i32 {
    match cmd {
        ClusterCommand::Status { bootstrap } => status::cluster_status(bootstrap),
        other => membership::run(other),
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum ClusterCommand {
    /// Print brokers, the controller and per-partition leader/ISR.
    Status {
        /// A broker of the cluster (HOST:PORT).
        #[arg(long, alias = "brokers", default_value = "127.0.0.1:9092")]
        bootstrap: String,
    },
    /// Join a new node: start it first with the cluster's --controller-quorum (which does not
    /// list it) or, once the voters have changed, the current voters and --cluster-id (see
    /// `status`), then run this. It receives the metadata log and registers as a broker.
    AddNode {
        #[command(flatten)]
        target: ControllerTarget,
        /// Id of the new node.
        #[arg(long)]
        node_id: u64,
        /// The new node's --controller-listen address.
        #[arg(long)]
        node_controller: String,
        /// Also make it a voter of the metadata quorum (default: a non-voting learner).
        #[arg(long)]
        voter: bool,
    },
    /// Move replicas and preferred leaders so every live broker carries an even share. Each
    /// move copies the data to the new replicas before the old ones are dropped.
    Rebalance {
        #[command(flatten)]
        target: ControllerTarget,
    },
    /// Drain a node (move all its replicas elsewhere, data first), then remove it from the
    /// cluster. Stop its process afterwards.
    RemoveNode {
        #[command(flatten)]
        target: ControllerTarget,
        #[arg(long)]
        node_id: i32,
    },
}

/// Where the membership commands send their requests.
#[derive(Args, Debug, Clone)]
pub struct ControllerTarget {
    /// A broker of the cluster; its controller is assumed at its port + 1000 (the
    /// --controller-listen default) unless --controller is given.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// The controller address (--controller-listen) of any running node.
    #[arg(long)]
    pub controller: Option<String>,
    /// How long to wait for data to move / the node to register, in seconds.
    #[arg(long, default_value_t = 600)]
    pub wait_secs: u64,
    /// The cluster's secret file, to authenticate to the controller.
    /// [default: <--data-dir>/cluster.secret, i.e. a local node's copy]
    #[arg(long, env = "CHRONIK_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Data dir of a node on this machine, whose cluster.secret to use. [default: ./data]
    #[arg(long, env = "CHRONIK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The controller port speaks mutual TLS (the nodes run with --controller-tls): connect
    /// with --ssl-cert-file / --ssl-key-file, checking the controller against --ssl-ca-file.
    #[arg(long, env = "CHRONIK_CONTROLLER_TLS")]
    pub controller_tls: bool,
    /// With --controller-tls: the certificate chain (PEM) to show the controller.
    #[arg(long, env = "CHRONIK_SSL_CERT_FILE")]
    pub ssl_cert_file: Option<PathBuf>,
    /// With --controller-tls: the private key (PEM) of --ssl-cert-file.
    #[arg(long, env = "CHRONIK_SSL_KEY_FILE")]
    pub ssl_key_file: Option<PathBuf>,
    /// With --controller-tls: the CAs (PEM) the controller's certificate must be signed by.
    #[arg(long, env = "CHRONIK_SSL_CA_FILE")]
    pub ssl_ca_file: Option<PathBuf>,
}

impl ControllerTarget {
    /// The TLS client config for a controller port with `--controller-tls` (None without it).
    pub fn tls(&self) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, String> {
        if !self.controller_tls {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (self.ssl_cert_file.clone(), self.ssl_key_file.clone())
        else {
            return Err(
                "--controller-tls needs --ssl-cert-file and --ssl-key-file (the controller \
                 requires a client certificate) and --ssl-ca-file"
                    .into(),
            );
        };
        let files = crate::config::tls::TlsFiles {
            cert,
            key,
            ca: self.ssl_ca_file.clone(),
            client_auth: crate::config::tls::ClientAuth::Required,
        };
        crate::net::tls::load_client(&files).map(Some)
    }

    /// `--cluster-secret-file`, else the secret file of the local node's data dir.
    pub fn secret_file(&self) -> PathBuf {
        self.cluster_secret_file.clone().unwrap_or_else(|| {
            self.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./data"))
                .join(chronik_raft::secret::SECRET_FILE)
        })
    }
}
