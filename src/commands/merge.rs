//! `switchyard merge DIR… --out DIR`: the shards of one job (`run --shard K/N`) as one
//! run: results.parquet with every record in input order, and the cost report of
//! every call of every shard (exact, percentiles included).

use anyhow::{Context as _, Result};

use crate::cli::MergeArgs;
use crate::exit::{Exit, OutputFailed};
use crate::journal::{self, merge_journals};
use crate::money::group_thousands;
use crate::output::report::total_row;

pub fn merge(args: MergeArgs) -> Result<Exit> {
    let merged = merge_journals(&args.dirs, &args.out)?;
    let written =
        journal::write_results(&args.out.join(journal::FILE), &args.out).context(OutputFailed)?;
    let mut tally = merged.tally;
    let report = tally.rows();
    crate::output::report::write_parquet(&args.out.join("cost_report.parquet"), &report)
        .context(OutputFailed)?;
    let total = total_row(&report);
    crate::note!(
        "merged {} shards into {}: {} records, {} not ok; spent {} (baseline {} on the same tokens)",
        merged.shards,
        args.out.display(),
        group_thousands(written.records),
        group_thousands(written.not_ok),
        total.cost,
        total.baseline_cost
    );
    Ok(Exit::of_records(written.not_ok))
}
