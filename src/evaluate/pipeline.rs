//! Runs a pure per-batch function on worker threads and hands the results to one
//! owner in input order. A reader thread pulls batches from the source; channels are
//! bounded, so memory stays flat however large the input is.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::thread;

use anyhow::Result;
use crossbeam_channel::bounded;

use crate::input::{Batch, Source};

/// Worker threads for the CPU-bound stages: one per core.
pub fn default_workers() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Calls `work` on every batch (in parallel) and `sink` on every result (in order).
/// `sink` may stop early with `ControlFlow::Break`.
pub fn ordered_map<T, W, S>(
    mut source: Box<dyn Source>,
    workers: usize,
    work: W,
    mut sink: S,
) -> Result<()>
where
    T: Send,
    W: Fn(Batch) -> T + Sync,
    S: FnMut(T) -> Result<ControlFlow<()>>,
{
    let workers = workers.max(1);
    let (batch_tx, batch_rx) = bounded::<(u64, Batch)>(workers * 2);
    let (out_tx, out_rx) = bounded::<(u64, T)>(workers * 2);
    thread::scope(|scope| -> Result<()> {
        let reader = scope.spawn(move || -> Result<()> {
            let mut seq = 0u64;
            while let Some(batch) = source.next_batch()? {
                if batch_tx.send((seq, batch)).is_err() {
                    break; // the owner stopped early
                }
                seq += 1;
            }
            Ok(())
        });
        for _ in 0..workers {
            let rx = batch_rx.clone();
            let tx = out_tx.clone();
            let work = &work;
            scope.spawn(move || {
                for (seq, batch) in rx {
                    if tx.send((seq, work(batch))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(batch_rx);
        drop(out_tx);

        let mut next = 0u64;
        let mut pending: BTreeMap<u64, T> = BTreeMap::new();
        let mut stopped = false;
        'recv: for (seq, result) in &out_rx {
            pending.insert(seq, result);
            while let Some(result) = pending.remove(&next) {
                next += 1;
                if sink(result)?.is_break() {
                    stopped = true;
                    break 'recv;
                }
            }
        }
        drop(out_rx);
        let read = reader.join().expect("reader thread panicked");
        if !stopped {
            read?;
        }
        Ok(())
    })
}
