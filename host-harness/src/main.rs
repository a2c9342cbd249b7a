//! The `dualform` command line: a thin layer over the `dualform_harness` library.

use clap::{Parser, Subcommand};
use dualform_harness::experiments;
use dualform_harness::HarnessError;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "dualform", version, about = "In-context learning as gradient descent: train, verify, report")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reproduce an experiment (or `all`) and write its report, tables, plots and weights to `OUT/EXPERIMENT/`.
    /// `dualform reproduce EXPERIMENT --help` lists its flags.
    Reproduce {
        /// Which experiment.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(experiments::names()))]
        experiment: String,
        /// The experiment's flags (`--out DIR` and its settings).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Read any one-layer LSA's weights (a dualform weight file, or W_Q, W_K, W_V, P as [E, E] f32 tensors) and say
    /// whether it implements GD, preconditioned GD, or neither, against every reference with intervals.
    Inspect(dualform_harness::inspect::InspectArgs),
    /// Write golden tasks for the firmware, from the distribution of a single-layer run, and copy the run's weights
    /// beside them.
    Golden(GoldenArgs),
    /// Run a grid of experiment cells over d, N / d, input anisotropy, depth and label noise (all of it, or one shard
    /// of it), or merge the cells' records into one table and heat maps. See docs/experiments.md, "Sweeps".
    #[command(subcommand)]
    Sweep(SweepCommand),
    /// Build the firmware for every emulated core, check it under QEMU against the host bit for bit, and measure it
    /// (instructions, flash, RAM, stack; cycles estimated on the Cortex-M4F).
    FirmwareReport(FirmwareArgs),
}

#[derive(Subcommand)]
enum SweepCommand {
    /// Run the cells of the spec (or of one shard) that have no record in OUT yet; without --shard, merge at the end.
    Run {
        /// The sweep's spec (JSON: d, n_over_d, variance_ratio, layers, noise, seeds, args).
        #[arg(long)]
        spec: PathBuf,
        /// Output folder: OUT/cells/CELL/ per cell, and the merged table.
        #[arg(long)]
        out: PathBuf,
        /// Run only shard I of N (I/N, from 0/N), or `slurm` for this task of a Slurm array job.
        #[arg(long)]
        shard: Option<String>,
        /// Worker threads per cell (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Run again the cells recorded as failed or diverged.
        #[arg(long)]
        retry_failed: bool,
    },
    /// Merge every cell's record in OUT into sweep.csv, sweep.json, times.csv and heat maps.
    Merge {
        /// Output folder of the sweep (its spec is read from OUT/spec.json unless given).
        #[arg(long)]
        out: PathBuf,
        /// The sweep's spec [default: OUT/spec.json].
        #[arg(long)]
        spec: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct FirmwareArgs {
    /// The firmware crate.
    #[arg(long, default_value = "firmware-example")]
    dir: PathBuf,
    /// Output folder; the report goes to OUT/firmware/report.json.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// The boards (QEMU machines) to build, check and measure, comma-separated, or all: microbit (Cortex-M0),
    /// mps2-an385 (M3), mps2-an386 (M4F), mps2-an500 (M7), mps2-an505 (M33), mps3-an547 (M55), sifive_e (RISC-V
    /// RV32IMAC).
    #[arg(long, default_value = "all")]
    boards: String,
}

#[derive(clap::Args)]
struct GoldenArgs {
    /// A single-layer results folder (with weights.safetensors and gd_weights.safetensors).
    #[arg(long, default_value = "results/single-layer")]
    from: PathBuf,
    /// Folder to write golden.safetensors, trained.safetensors and gd.safetensors into.
    #[arg(long, default_value = "firmware-example/data")]
    out: PathBuf,
    /// Number of golden tasks.
    #[arg(long, default_value_t = 16, allow_negative_numbers = true)]
    tasks: usize,
    /// Seed of the golden tasks.
    #[arg(long, default_value_t = 42, allow_negative_numbers = true)]
    seed: u64,
    /// Input dimension d [default: the run's; a different value is refused].
    #[arg(long, allow_negative_numbers = true)]
    d: Option<usize>,
    /// Context pairs N per task [default: the run's; a different value is refused].
    #[arg(long, allow_negative_numbers = true)]
    n: Option<usize>,
}

fn run(command: Command) -> Result<(), HarnessError> {
    // The vector unit of the training kernels: an unknown or unavailable DUALFORM_SIMD stops every command here.
    dualform_harness::net::simd::chosen().map_err(HarnessError::Usage)?;
    match command {
        Command::Reproduce { experiment, args } => {
            let all = experiment == "all";
            // `--out DIR` or `--out=DIR`, for the overview's path to the index page.
            let out = args
                .iter()
                .enumerate()
                .find_map(|(i, a)| match a.strip_prefix("--out=") {
                    Some(v) => Some(PathBuf::from(v)),
                    None if a == "--out" => args.get(i + 1).map(PathBuf::from),
                    None => None,
                })
                .unwrap_or_default();
            let summaries = experiments::reproduce(&experiment, &args, |s| print!("{}", s.text))?;
            if all {
                print!("{}", experiments::overview(&summaries, &out));
            }
            Ok(())
        }
        Command::Inspect(a) => {
            print!("{}", dualform_harness::inspect::inspect(&a)?.text);
            Ok(())
        }
        Command::FirmwareReport(f) => {
            let boards = dualform_harness::firmware::emulated_boards(&f.boards)?;
            let progress = |s: &str| eprint!("{s}");
            print!("{}", dualform_harness::firmware::report::firmware_report(&f.dir, &f.out, &boards, progress)?);
            Ok(())
        }
        Command::Sweep(SweepCommand::Run { spec, out, shard, threads, retry_failed }) => {
            use dualform_harness::experiments::sweep;
            let parsed = sweep::spec::Spec::read(&spec)?;
            let part = match &shard {
                Some(s) => sweep::spec::Shard::parse(s, |k| std::env::var(k).ok())?,
                None => sweep::spec::Shard::ALL,
            };
            let progress = |s: &str| {
                use std::io::Write;
                eprint!("{s}");
                let _ = std::io::stderr().flush();
            };
            let r = sweep::run(&parsed, &out, part, threads, retry_failed, progress)?;
            println!(
                "shard {}/{}: {} cells, {} recorded before, {} finished now, {} failed or diverged",
                part.index, part.count, r.cells, r.skipped, r.ok, r.not_ok
            );
            if shard.is_none() {
                print!("{}", sweep::merge(&parsed, &out)?.text);
            }
            Ok(())
        }
        Command::Sweep(SweepCommand::Merge { out, spec }) => {
            use dualform_harness::experiments::sweep;
            let parsed = sweep::spec::Spec::read(&spec.unwrap_or_else(|| out.join("spec.json")))?;
            print!("{}", sweep::merge(&parsed, &out)?.text);
            Ok(())
        }
        Command::Golden(g) => {
            let task = dualform_harness::firmware::golden::export(&g.from, &g.out, g.d, g.n, g.tasks, g.seed)?;
            println!(
                "wrote {} golden tasks ({}, the run's distribution) and the weights to {}",
                g.tasks,
                task.describe(),
                g.out.display()
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // `reproduce NAME ...`: the experiment parses its own flags (so `reproduce NAME --help` shows them).
    let argv: Vec<String> = std::env::args().collect();
    if let [_, cmd, name, rest @ ..] = &argv[..] {
        if cmd == "reproduce" && !name.starts_with('-') {
            return finish(run(Command::Reproduce { experiment: name.clone(), args: rest.to_vec() }));
        }
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: invalid arguments"));
            return ExitCode::from(2);
        }
    };
    finish(run(cli.command))
}

fn finish(result: Result<(), HarnessError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(HarnessError::Help(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
