use chronik::config::{BrokerConfig, Cli};
use chronik::server::Broker;
use clap::Parser;

// glibc malloc was ~10 % of a replicating broker's CPU (many mid-sized, short-lived buffers per
// request); mimalloc's thread-local free lists fit thread-per-core shards.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    disable_transparent_huge_pages();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=off")),
        )
        .with_target(false)
        // Colour codes only on a terminal; logs redirected to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(cmd) = &cli.command {
        std::process::exit(chronik::cli::run(cmd));
    }
    let cfg = match BrokerConfig::resolve(&cli.server) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chronik-server: {e}");
            std::process::exit(2);
        }
    };
    // Block the stop signals (and SIGHUP, which reloads TLS files) in every thread (threads
    // inherit the mask) and wait for them here.
    let signals = block_stop_signals();
    tracing::info!(
        node_id = cfg.node_id,
        listeners = %cfg.listeners.listeners_text(),
        data_dir = %cfg.data_dir.display(),
        shards = cfg.cores,
        "starting chronik-server"
    );
    let serving = format!(
        "chronik-server serving: Kafka on {}, controller on {}, data in {}, {} shard(s), node {}",
        cfg.listeners.serving_text(),
        cfg.controller_listen,
        cfg.data_dir.display(),
        cfg.cores,
        cfg.node_id
    );
    let broker = match Broker::start(cfg) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{e}");
            std::process::exit(1);
        }
    };
    // The one line a newcomer needs: where to connect and where the data is.
    tracing::info!("{serving}");
    let sig = loop {
        let sig = wait_for_signal(&signals);
        if sig != libc::SIGHUP {
            break sig;
        }
        // Kafka reloads certificates through a config change; a signal is the Unix way.
        match broker.reload_tls() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate files re-read"),
            Err(e) => tracing::warn!("SIGHUP: TLS files not reloaded, keeping the old ones: {e}"),
        }
    };
    tracing::info!(signal = sig, "shutting down");
    broker.controlled_shutdown();
    broker.stop();
    tracing::info!("stopped");
}

fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-mask calls on a locally owned sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    // SAFETY: sigwait on a valid, initialised set.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
    sig
}

/// Turns transparent huge pages off for this process (and the CLI, the same binary). mimalloc
/// asks for them (MADV_HUGEPAGE) on the regions it maps, so every fresh 2 MiB of heap was
/// zeroed in one page fault on a shard's thread: 48% of the samples of a CreateTopics of 1,000
/// topics on 3 nodes, and 3-8% under produce load. Off, that CreateTopics took 51-53 ms on the
/// controller instead of 125-159 ms, and produce throughput stayed the same within the host's
/// noise (issue 24). Called first, so no heap region is faulted in as a huge page before.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours. A kernel
    // without it answers EINVAL and huge pages stay as they were: nothing to do about that.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}
