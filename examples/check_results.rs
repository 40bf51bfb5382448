//! Reads a `results.parquet` and prints what a harness checks: rows, distinct ids,
//! ids that appear more than once, and the count of each status, as one JSON line.
//!
//!     cargo run --release --example check_results -- OUT/results.parquet

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: check_results FILE.parquet");
    let file = std::fs::File::open(&path).expect("cannot open the results file");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("not a Parquet file")
        .build()
        .expect("cannot read the Parquet file");
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.expect("bad row group");
        let col = |name: &str| -> StringArray {
            let c = batch.column_by_name(name).expect("missing column");
            c.as_any()
                .downcast_ref::<StringArray>()
                .expect("not a string column")
                .clone()
        };
        let (id, status) = (col("id"), col("status"));
        for i in 0..id.len() {
            rows += 1;
            *ids.entry(id.value(i).to_string()).or_default() += 1;
            *statuses.entry(status.value(i).to_string()).or_default() += 1;
        }
    }
    let repeated = ids.values().filter(|&&n| n > 1).count();
    println!(
        "{}",
        serde_json::json!({"rows": rows, "distinct_ids": ids.len(), "repeated_ids": repeated, "statuses": statuses})
    );
}
