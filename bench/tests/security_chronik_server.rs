//! chronik-bench over a SASL_SSL listener of a real chronik-server: TLS (a CA and a server
//! certificate made here with rcgen) and SASL logins with SCRAM-SHA-512, SCRAM-SHA-256 and
//! PLAIN; a wrong password is refused with the broker's authentication error.

mod support;

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use chronik_bench::cli::Args;
use chronik_bench::modes;
use clap::Parser;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use support::chronik::{free_port, start_server_on};

/// ca.pem, server.pem / server.key (for localhost and 127.0.0.1) and users.txt in `dir`.
fn write_pki_and_users(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "chronik-bench test CA");
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
    let server_key = KeyPair::generate().expect("server key");
    let server = server_params
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server cert");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca.pem");
    std::fs::write(dir.join("server.pem"), server.pem()).expect("server.pem");
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("server.key");
    std::fs::write(dir.join("users.txt"), "bench:bench-secret\n").expect("users.txt");
}

/// A node (`--cores 2`) with a PLAINTEXT listener and a `protocol` (SSL or SASL_SSL) one using
/// the certificate and users in `pki`; returns it and the second listener's port once it listens.
fn start_secure_node(pki: &Path, protocol: &str) -> (support::chronik::Server, u16) {
    let path = |n: &str| pki.join(n).display().to_string();
    let (port, secure_port) = (free_port(), free_port());
    let listeners = format!("PLAINTEXT://127.0.0.1:{port},{protocol}://127.0.0.1:{secure_port}");
    let (cert, key, users) = (path("server.pem"), path("server.key"), path("users.txt"));
    let server = start_server_on(
        port,
        &[
            "--cores",
            "2",
            "--listeners",
            &listeners,
            "--inter-broker-listener-name",
            "PLAINTEXT",
            "--ssl-cert-file",
            &cert,
            "--ssl-key-file",
            &key,
            "--sasl-bootstrap-users",
            &users,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", secure_port)).is_err() {
        assert!(Instant::now() < deadline, "no {protocol} listener");
        std::thread::sleep(Duration::from_millis(100));
    }
    (server, secure_port)
}

fn bench_args(sasl_port: u16, ca: &str, mechanism: &str, password: &str, extra: &[&str]) -> Args {
    let addr = format!("127.0.0.1:{sasl_port}");
    let mut v = vec![
        "chronik-bench",
        "-b",
        &addr,
        "--report-interval-secs",
        "60",
        "--security-protocol",
        "SASL_SSL",
        "--ssl-ca-file",
        ca,
        "--sasl-mechanism",
        mechanism,
        "--sasl-username",
        "bench",
        "--sasl-password",
        password,
    ];
    v.extend_from_slice(extra);
    let a = Args::try_parse_from(v).expect("arguments parse");
    a.check().expect("arguments are consistent");
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chronik_bench_produces_and_consumes_over_sasl_ssl_and_a_wrong_password_is_refused() {
    let pki = tempfile::tempdir().expect("temp dir");
    write_pki_and_users(pki.path());
    let (server, sasl_port) = start_secure_node(pki.path(), "SASL_SSL");
    let ca = pki.path().join("ca.pem").display().to_string();

    let produce = bench_args(
        sasl_port,
        &ca,
        "SCRAM-SHA-512",
        "bench-secret",
        &[
            "-t",
            "sec",
            "-p",
            "2",
            "--create-topic",
            "-n",
            "5000",
            "-c",
            "4",
            "-s",
            "512",
            "--acks",
            "all",
            "--validate",
        ],
    );
    let r = modes::run(&produce)
        .await
        .expect("produce over SASL_SSL runs");
    if !r.passed {
        server.print_log_tail(40);
    }
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.acknowledged, Some(5000));
    assert_eq!(r.stored, Some(5000));

    let plain = bench_args(
        sasl_port,
        &ca,
        "PLAIN",
        "bench-secret",
        &[
            "-t",
            "sec-plain",
            "--create-topic",
            "-n",
            "1000",
            "-c",
            "2",
            "-s",
            "512",
            "--acks",
            "1",
            "--validate",
        ],
    );
    let r = modes::run(&plain).await.expect("produce with PLAIN runs");
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.acknowledged, Some(1000));

    let consume = bench_args(
        sasl_port,
        &ca,
        "SCRAM-SHA-256",
        "bench-secret",
        &[
            "-t",
            "sec",
            "-m",
            "consume",
            "--stop-at-end",
            "-d",
            "60s",
            "-c",
            "2",
            "--validate",
        ],
    );
    let c = modes::run(&consume)
        .await
        .expect("consume over SASL_SSL runs");
    assert!(c.passed, "{}", c.text_summary());
    assert_eq!(c.messages, 5000);

    let wrong = bench_args(
        sasl_port,
        &ca,
        "SCRAM-SHA-512",
        "not-the-password",
        &["-t", "sec", "-n", "10", "--acks", "1"],
    );
    let err = match modes::run(&wrong).await {
        Ok(r) => panic!("a wrong password ran: {}", r.text_summary()),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("SASL authentication failed (error 58)"),
        "not SASL_AUTHENTICATION_FAILED: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_without_the_brokers_ca_does_not_connect() {
    let pki = tempfile::tempdir().expect("temp dir");
    write_pki_and_users(pki.path());
    let other = tempfile::tempdir().expect("temp dir");
    write_pki_and_users(other.path());
    let path = |n: &str| pki.path().join(n).display().to_string();
    let (_server, ssl_port) = start_secure_node(pki.path(), "SSL");
    let addr = format!("127.0.0.1:{ssl_port}");
    let run = |ca: String| {
        let v = vec![
            "chronik-bench".to_string(),
            "-b".into(),
            addr.clone(),
            "--security-protocol".into(),
            "SSL".into(),
            "--ssl-ca-file".into(),
            ca,
            "-t".into(),
            "ssl".into(),
            "--create-topic".into(),
            "-n".into(),
            "100".into(),
            "--request-timeout-ms".into(),
            "5000".into(),
        ];
        Args::try_parse_from(v).expect("arguments parse")
    };
    // The broker's own CA: SSL without SASL produces.
    let r = modes::run(&run(path("ca.pem")))
        .await
        .expect("produce over SSL runs");
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.acknowledged, Some(100));
    // Another CA: the handshake fails on the broker's certificate.
    let err = match modes::run(&run(other.path().join("ca.pem").display().to_string())).await {
        Ok(r) => panic!(
            "connected without trusting the broker: {}",
            r.text_summary()
        ),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("TLS to"), "not a TLS failure: {err}");
}
