//! The commands, one file each: load the config, run the shared front end (or `run`),
//! render what it yields. Each returns how the process should end ([`Exit`]); an
//! error is mapped to one by `main`.

mod classify;
mod ledger;
mod merge;
mod models;
mod plan;
mod render;
mod run;
mod train;

use anyhow::Result;

use crate::cli::{Command, RoutingArgs};
use crate::config::Config;
use crate::exit::Exit;
use crate::input::Input;

pub fn run(command: Command) -> Result<Exit> {
    match command {
        Command::Plan(a) => plan::plan(a),
        Command::Run(a) => run::run(a),
        Command::Classify(a) => classify::classify(a),
        Command::Models(a) => models::models(a),
        Command::Train(a) => train::train(a),
        Command::Ledger(c) => ledger::ledger(c),
        Command::Merge(a) => merge::merge(a),
        Command::Completions(a) => {
            // Written whole, so a closed pipe is an error `main` ends quietly on.
            let mut out = std::io::stdout().lock();
            std::io::Write::write_all(&mut out, &a.script())?;
            std::io::Write::flush(&mut out)?;
            Ok(Exit::Ok)
        }
    }
}

/// The config the flags name (its warnings printed) and the input.
fn load(args: &RoutingArgs, baseline: Option<String>) -> Result<(Config, Input)> {
    let cfg = load_config(&args.overrides(baseline))?;
    Ok((cfg, Input::from_arg(&args.input)))
}

fn load_config(over: &crate::config::Overrides) -> Result<Config> {
    let cfg = Config::load(over)?;
    for w in &cfg.warnings {
        crate::note!("warning: {w}");
    }
    Ok(cfg)
}
