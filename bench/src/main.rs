//! chronik-bench: Kafka-protocol load generator. See `chronik-bench --help`.

use std::process::ExitCode;

use clap::Parser;

use chronik_bench::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(why) = args.check() {
        eprintln!("chronik-bench: {why}");
        return ExitCode::from(2);
    }
    let threads = args
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chronik-bench: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(chronik_bench::modes::run(&args));
    match result {
        Ok(report) => {
            print!("{}", report.text_summary());
            if let Err(e) =
                report.write_outputs(args.json_output.as_deref(), args.csv_output.as_deref())
            {
                eprintln!("chronik-bench: {e:#}");
                return ExitCode::from(1);
            }
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("chronik-bench: FAILED: {e:#}");
            ExitCode::from(1)
        }
    }
}
