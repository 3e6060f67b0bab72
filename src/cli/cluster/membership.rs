//! `chronik-server cluster add-node | rebalance | remove-node`: operator commands that submit
//! controller commands over the controller RPC port and follow their progress there (blocking
//! std sockets: this is a CLI, not shard code). They authenticate with the cluster secret
//! (`--cluster-secret-file`, else a local node's copy in `<data-dir>/cluster.secret`).

use super::{ClusterCommand, ControllerTarget};
use chronik_raft::image::BrokerId;
use chronik_raft::network::{blocking_call, ImageSummary, RpcRequest, RpcResponse};
use chronik_raft::secret::ClusterSecret;
use chronik_raft::{Command, CommandOutcome};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A committed command may wait up to the controller's request timeout (30 s) for a leader.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(250);

pub fn run(cmd: &ClusterCommand) -> i32 {
    let r = match cmd {
        ClusterCommand::Status { .. } => Ok(()),
        ClusterCommand::AddNode {
            target,
            node_id,
            node_controller,
            voter,
        } => add_node(target, *node_id, node_controller, *voter),
        ClusterCommand::Rebalance { target } => rebalance(target),
        ClusterCommand::RemoveNode { target, node_id } => remove_node(target, *node_id),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cluster: {e}");
            1
        }
    }
}

/// The controller address to talk to: `--controller`, or the bootstrap broker's port + 1000.
fn controller_addr(t: &ControllerTarget) -> Result<String, String> {
    if let Some(c) = &t.controller {
        return Ok(c.clone());
    }
    let (host, port) = t
        .bootstrap
        .rsplit_once(':')
        .ok_or_else(|| format!("--bootstrap {} is not HOST:PORT", t.bootstrap))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--bootstrap {} has a bad port", t.bootstrap))?;
    let cport = port
        .checked_add(1000)
        .ok_or("bootstrap port + 1000 overflows; give --controller")?;
    Ok(format!("{host}:{cport}"))
}

/// A controller address, the secret to authenticate to it with, and its TLS (--controller-tls).
struct Ctl {
    addr: String,
    secret: ClusterSecret,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

fn ctl(t: &ControllerTarget) -> Result<Ctl, String> {
    let addr = controller_addr(t)?;
    let file = t.secret_file();
    let secret = ClusterSecret::read_file(&file).map_err(|e| {
        format!(
            "{e}\n  the controller port needs the cluster secret: give --cluster-secret-file FILE \
             (every node keeps a copy in <data-dir>/cluster.secret), or --data-dir of a node on \
             this machine"
        )
    })?;
    let tls = t.tls()?;
    Ok(Ctl { addr, secret, tls })
}

fn submit(c: &Ctl, cmd: Command) -> Result<(u64, CommandOutcome), String> {
    match blocking_call(
        &c.addr,
        &c.secret,
        c.tls.clone(),
        &RpcRequest::Submit(cmd),
        SUBMIT_TIMEOUT,
    )? {
        RpcResponse::Submit(r) => r,
        _ => Err(format!("{}: unexpected answer", c.addr)),
    }
}

fn summary(c: &Ctl) -> Result<ImageSummary, String> {
    match blocking_call(
        &c.addr,
        &c.secret,
        c.tls.clone(),
        &RpcRequest::Summary,
        Duration::from_secs(10),
    )? {
        RpcResponse::Summary(s) => Ok(s),
        _ => Err(format!("{}: unexpected answer", c.addr)),
    }
}

/// Polls the controller's summary until it has applied `index` (the command it follows: a
/// node that is not the Raft leader answers from its own image, which may not hold the
/// command yet and would look already done) and `done` says so, or fails at the deadline with
/// `what`.
fn wait_for(
    c: &Ctl,
    t: &ControllerTarget,
    index: u64,
    what: &str,
    mut done: impl FnMut(&ImageSummary) -> bool,
) -> Result<ImageSummary, String> {
    let deadline = Instant::now() + Duration::from_secs(t.wait_secs);
    loop {
        // A node restarting or a leader change may briefly refuse; keep trying until the end.
        if let Ok(s) = summary(c) {
            if s.applied_index >= index && done(&s) {
                return Ok(s);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "gave up after {} s waiting for {what}",
                t.wait_secs
            ));
        }
        std::thread::sleep(POLL);
    }
}

fn rejected(outcome: &CommandOutcome) -> Option<String> {
    match outcome {
        CommandOutcome::Rejected(e) => Some(format!("{} (error code {})", e.message, e.code)),
        _ => None,
    }
}

/// Prints the moves a drain or rebalance started; fails if any was refused.
fn report_moves(outcome: &CommandOutcome) -> Result<usize, String> {
    if let Some(e) = rejected(outcome) {
        return Err(e);
    }
    let CommandOutcome::Partitions(moves) = outcome else {
        return Err(format!("unexpected outcome {outcome:?}"));
    };
    let mut errors = Vec::new();
    for (p, r) in moves {
        match r {
            Ok(s) if s.reassigning() => println!(
                "  {}-{}: moving to {:?} (copying to {:?}, then dropping {:?})",
                p.topic,
                p.partition,
                s.target_replicas(),
                s.adding,
                s.removing
            ),
            Ok(s) => println!("  {}-{}: now {:?}", p.topic, p.partition, s.replicas),
            Err(e) => errors.push(format!("{}-{}: {}", p.topic, p.partition, e.message)),
        }
    }
    if errors.is_empty() {
        Ok(moves.len())
    } else {
        Err(format!("some moves were refused: {}", errors.join("; ")))
    }
}

fn add_node(t: &ControllerTarget, id: u64, raft_addr: &str, voter: bool) -> Result<(), String> {
    let c = ctl(t)?;
    let (index, outcome) = submit(
        &c,
        Command::AddNode {
            id,
            raft_addr: raft_addr.to_string(),
            voter,
        },
    )?;
    if let Some(e) = rejected(&outcome) {
        return Err(e);
    }
    println!(
        "node {id} added to the metadata quorum as a {}; waiting for its broker to register",
        if voter { "voter" } else { "learner" }
    );
    let s = wait_for(&c, t, index, &format!("broker {id} to register"), |s| {
        s.brokers.iter().any(|b| b.id as u64 == id && !b.fenced)
    })?;
    if let Some(b) = s.brokers.iter().find(|b| b.id as u64 == id) {
        println!("broker {id} is live at {}:{}", b.host, b.port);
    }
    println!("run `chronik-server cluster rebalance` to give it a share of the replicas");
    Ok(())
}

fn rebalance(t: &ControllerTarget) -> Result<(), String> {
    let c = ctl(t)?;
    let (index, outcome) = submit(&c, Command::Rebalance)?;
    println!("rebalance:");
    let n = report_moves(&outcome)?;
    if n == 0 {
        println!("  already balanced");
    }
    let s = wait_for(&c, t, index, "the moves to finish", |s| {
        s.partitions.iter().all(|p| !p.state.reassigning())
    })?;
    // Leaders follow the new preferred replicas (the automatic leader rebalance would do it
    // later; an operator expects it now).
    let (elect_index, elect) = submit(
        &c,
        Command::ElectLeaders {
            partitions: Vec::new(),
            preferred: true,
        },
    )?;
    if let Some(e) = rejected(&elect) {
        println!("preferred leader election: {e}");
    }
    let s = wait_for(&c, t, elect_index, "the leader election", |_| true).unwrap_or(s);
    print_load(&s);
    Ok(())
}

fn remove_node(t: &ControllerTarget, id: BrokerId) -> Result<(), String> {
    let c = ctl(t)?;
    let (index, outcome) = submit(&c, Command::DecommissionBroker { id })?;
    println!("draining broker {id}:");
    report_moves(&outcome)?;
    wait_for(
        &c,
        t,
        index,
        &format!("broker {id} to hold no replicas"),
        |s| s.partitions.iter().all(|p| !p.state.replicas.contains(&id)),
    )?;
    println!("broker {id} holds no replicas");
    let (_, out) = submit(&c, Command::RemoveNode { id: id as u64 })?;
    match rejected(&out) {
        Some(e) => println!("metadata quorum: {e}"),
        None => println!("node {id} left the metadata quorum"),
    }
    let (index, out) = submit(&c, Command::UnregisterBroker { id })?;
    if let Some(e) = rejected(&out) {
        return Err(e);
    }
    println!("broker {id} removed from the cluster; stop its process now");
    let s = wait_for(&c, t, index, "the broker's removal", |_| true)?;
    print_load(&s);
    Ok(())
}

fn print_load(s: &ImageSummary) {
    let mut replicas: BTreeMap<BrokerId, usize> = s.brokers.iter().map(|b| (b.id, 0)).collect();
    let mut leaders: BTreeMap<BrokerId, usize> = replicas.clone();
    for p in &s.partitions {
        for b in &p.state.replicas {
            *replicas.entry(*b).or_default() += 1;
        }
        *leaders.entry(p.state.leader).or_default() += 1;
    }
    println!("broker  replicas  leaders");
    for (b, n) in &replicas {
        println!(
            "{b:>6}  {n:>8}  {:>7}",
            leaders.get(b).copied().unwrap_or(0)
        );
    }
}
