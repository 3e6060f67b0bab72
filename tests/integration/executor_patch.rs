//! The patched glommio in `src/vendor/glommio` (see its CHRONIK-PATCH.md): an executor never parks
//! while a task queue is runnable, so a preemption that is already pending cannot stall it.

use std::sync::mpsc;
use std::time::Duration;

#[test]
fn an_executor_whose_preemption_is_always_pending_still_runs_its_tasks() {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        // A 1 ns preempt timer: preemption is pending almost every time the executor looks.
        let ex = glommio::LocalExecutorBuilder::default()
            .preempt_timer(Duration::from_nanos(1))
            .make()
            .expect("executor");
        let mut sum = 0u64;
        for i in 0..1_000u64 {
            sum += ex.run(async move {
                let t = glommio::spawn_local(async move { i });
                t.await
            });
        }
        let _ = tx.send(sum);
    });
    // The unpatched executor parked forever in the first `run`; the bound only keeps a
    // regression from hanging the suite.
    let sum = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the executor stopped making progress with runnable work");
    assert_eq!(sum, (0..1_000u64).sum::<u64>());
    worker.join().expect("executor thread");
}
