//! Command-line options (clap derive; the doc comments are the help text), turned
//! into plain settings for the commands. No clap types past this module.

use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::Overrides;
use crate::config::{OnBudget, Via};
use crate::money::Usd;
use crate::record::Tier;

/// Route batch LLM jobs to the cheapest capable model under a hard budget, and price
/// them before a cent is spent.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log events on stderr: -v the run's (start, breakers, budget, stops), -vv also
    /// every record's route, requests, retries and fallbacks. Never prompts, answers
    /// or keys.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr: no progress, warnings or summary.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// With -vv: also log each record's prompt and answer (they may hold private data).
    #[arg(long, global = true)]
    pub log_prompts: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Price a job: classify and route every record, no API calls.
    Plan(PlanArgs),
    /// Execute a job: route, call, check, escalate, under a hard budget.
    Run(RunArgs),
    /// Print one JSON routing decision per record to stdout.
    Classify(ClassifyArgs),
    /// Show the model catalog: prices, context windows, providers.
    Models(ModelsArgs),
    /// Fit the local classifier to labelled records and write it to a model file.
    Train(TrainArgs),
    /// Print a shell completion script: bash, zsh, fish, powershell or elvish.
    Completions(CompletionsArgs),
    /// The shared ledger of `run --ledger`: `status` shows spend, leases and limits.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Merge the `--out` directories of a job's shards into one results.parquet and
    /// cost_report.parquet.
    Merge(MergeArgs),
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Spend, live reservations (leases) and who holds them, and the rate limits.
    Status(LedgerStatusArgs),
}

#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The Redis (or Valkey) server: redis://HOST[:PORT][/DB], rediss://…,
    /// redis+unix:///PATH. Shared by every process that names it.
    #[arg(long, value_name = "URL", env = "SWITCHYARD_LEDGER")]
    pub ledger: Option<String>,
    /// Which budget on the ledger: processes naming the same one share it.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub budget_name: String,
}

#[derive(Debug, Args)]
pub struct LedgerStatusArgs {
    #[command(flatten)]
    pub ledger: LedgerArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shards' `--out` directories.
    #[arg(value_name = "DIR", required = true, num_args = 1..)]
    pub dirs: Vec<PathBuf>,
    /// Where to write the merged results.parquet and cost_report.parquet.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `--shard K/N`: shard K (1-based) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: u32,
    pub n: u32,
}

impl Shard {
    /// Whether the record with `id` is this shard's: by a stable hash of the id.
    pub fn holds(&self, id: &str) -> bool {
        xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % u64::from(self.n) == u64::from(self.k - 1)
    }
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    let bad = || format!("--shard takes K/N with 1 <= K <= N (e.g. 2/4), not '{s}'");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (u32, u32) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if k == 0 || n == 0 || k > n {
        return Err(bad());
    }
    Ok(Shard { k, n })
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

impl CompletionsArgs {
    /// The script for this shell.
    pub fn script(&self) -> Vec<u8> {
        let mut out = Vec::new();
        clap_complete::generate(self.shell, &mut Cli::command(), "switchyard", &mut out);
        out
    }
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML config layered over the embedded default, field by field.
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Import prices and context windows from LiteLLM's model_prices_and_context_window.json.
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_PRICES")]
    pub prices: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RoutingArgs {
    /// Job file: .jsonl/.ndjson (optionally .gz/.zst), .parquet, or - for JSONL on stdin.
    #[arg(value_name = "INPUT")]
    pub input: String,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Tier for records that do not name one: budget, balanced or quality.
    #[arg(long, value_name = "T", env = "SWITCHYARD_TIER", value_parser = parse_tier)]
    pub tier: Option<Tier>,
    /// Stop with exit code 2 at the first invalid record instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Local classifier model made by `switchyard train` (default: config
    /// `[classifier] model`, else the built-in one).
    #[arg(long, value_name = "MODEL", env = "SWITCHYARD_CLASSIFIER")]
    pub classifier: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// Hard ceiling in USD: exit 3 when the estimate does not fit.
    #[arg(long, value_name = "USD", env = "SWITCHYARD_BUDGET", value_parser = parse_usd)]
    pub budget: Option<Usd>,
    /// Model to compare against (default from config: gpt-4o).
    #[arg(long, value_name = "MODEL", env = "SWITCHYARD_BASELINE")]
    pub baseline: Option<String>,
    /// Also write the per-model estimate as a Parquet cost report.
    #[arg(long, value_name = "FILE.parquet")]
    pub report: Option<PathBuf>,
    /// Past runs (`--out` directories or their results.parquet): estimate each
    /// answer's length from what their models answered per task, instead of
    /// max_tokens or the task default; adds a p95 of the total. Repeatable.
    #[arg(long, value_name = "DIR", num_args = 1.., action = ArgAction::Append)]
    pub history: Vec<PathBuf>,
    /// Price requests as realtime calls, through the providers' batch APIs (batch
    /// prices), or batch where the provider has one (default from config `[run] via`).
    #[arg(long, value_name = "MODE", value_parser = parse_via)]
    pub via: Option<Via>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// Hard ceiling on spend in USD: committed + reserved never exceeds it.
    #[arg(long, value_name = "USD", env = "SWITCHYARD_BUDGET", value_parser = parse_usd)]
    pub budget: Option<Usd>,
    /// Model the cost report compares against (default from config: gpt-4o).
    #[arg(long, value_name = "MODEL", env = "SWITCHYARD_BASELINE")]
    pub baseline: Option<String>,
    /// Write DIR/results.parquet and DIR/cost_report.parquet instead of JSONL on stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Use the built-in simulated provider: no network, no keys.
    #[arg(long)]
    pub simulate: bool,
    /// Continue the run journaled in --out: skip finished records, keep the spend.
    #[arg(long, requires = "out")]
    pub resume: bool,
    /// With --resume: continue even though the input or routing config changed.
    #[arg(long, requires = "resume")]
    pub force: bool,
    /// Replace the run --out already holds.
    #[arg(long, requires = "out", conflicts_with = "resume")]
    pub overwrite: bool,
    /// Records in flight at once (default from config `[run] concurrency`: 16).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// When a record's worst case no longer fits the budget: downgrade, skip or stop
    /// (default from config `[run] on_budget`: downgrade).
    #[arg(long, value_name = "POLICY", value_parser = parse_on_budget)]
    pub on_budget: Option<OnBudget>,
    /// Summary format (json goes to stdout when --out is given).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Without --out: write results to stdout in input order, not as they finish
    /// (at most 4 × concurrency records wait in memory for a slow earlier one).
    #[arg(long, conflicts_with = "out")]
    pub keep_order: bool,
    /// realtime: one call per request; batch: through the providers' batch APIs
    /// (OpenAI Batch, Anthropic Message Batches) at batch prices, waiting for them;
    /// auto: batch where the provider has one (default from config `[run] via`).
    #[arg(long, value_name = "MODE", value_parser = parse_via)]
    pub via: Option<Via>,
    /// Cancel the batches the run in --out submitted and that are still running,
    /// then exit (a later --resume reads what they answered and runs the rest).
    #[arg(long, requires = "out", conflicts_with_all = ["resume", "overwrite"])]
    pub cancel: bool,
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Run only the records whose id hashes to shard K of N (each shard its own
    /// --out; `switchyard merge` joins them).
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub routing: RoutingArgs,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Labelled records (any input form; each with a `task`), or the job file a run
    /// read when its labels come from `--labels`.
    #[arg(value_name = "INPUT")]
    pub input: String,
    /// Where to write the model file.
    #[arg(long, value_name = "MODEL")]
    pub out: PathBuf,
    /// Take each record's task from a run's results.parquet (joined by id) instead of
    /// the records' own `task`.
    #[arg(long, value_name = "RESULTS.parquet")]
    pub labels: Option<PathBuf>,
    /// With --labels: keep only the rows the LLM classifier decided.
    #[arg(long, requires = "labels")]
    pub only_llm: bool,
    /// Share of the records held out to measure the model (and calibrate it).
    #[arg(long, value_name = "SHARE", default_value_t = 0.2, value_parser = parse_share)]
    pub holdout: f64,
    /// Share of held-out decisions the unsure threshold is set to cover (the records
    /// `[classifier.llm] scope = "unsure"` asks about).
    #[arg(long, value_name = "SHARE", default_value_t = 0.15, value_parser = parse_share)]
    pub unsure_share: f64,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    s.parse()
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.05..=0.9).contains(&v) => Ok(v),
        _ => Err(format!("expected a share between 0.05 and 0.9, got {s}")),
    }
}

fn parse_on_budget(s: &str) -> Result<OnBudget, String> {
    s.parse()
}

fn parse_via(s: &str) -> Result<Via, String> {
    s.parse()
}

fn parse_usd(s: &str) -> Result<Usd, String> {
    Usd::parse(s)
}

impl ConfigArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            prices_file: self.prices.clone(),
            ..Overrides::default()
        }
    }
}

impl RoutingArgs {
    /// What these flags (and `baseline`, for the commands that take it) override.
    pub fn overrides(&self, baseline: Option<String>) -> Overrides {
        Overrides {
            tier: self.tier,
            baseline,
            classifier: self.classifier.clone(),
            ..self.config.overrides()
        }
    }
}
