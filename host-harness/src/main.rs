//! The `dualform` command line: a thin layer over the `dualform_harness` library.

use clap::{Parser, Subcommand, ValueEnum};
use dualform_harness::single_layer;
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
    /// Reproduce an experiment of the reference work and write its report, curves, plot and weights.
    Reproduce(ReproduceArgs),
    /// Write golden tasks for the firmware and copy a single-layer run's weights beside them.
    Golden(GoldenArgs),
    /// Build the firmware, check it under QEMU against the host bit for bit, and measure it (instructions, cycles
    /// estimate, flash, RAM, stack).
    FirmwareReport(FirmwareArgs),
}

#[derive(clap::Args)]
struct FirmwareArgs {
    /// The firmware crate.
    #[arg(long, default_value = "firmware-example")]
    dir: PathBuf,
    /// Output folder; the report goes to OUT/firmware/report.json.
    #[arg(long, default_value = "results")]
    out: PathBuf,
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
    /// Input dimension d of the weights.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    d: usize,
    /// Context pairs N per task.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    n: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Experiment {
    /// One LSA layer trained on in-context regression, against one step of GD.
    SingleLayer,
}

#[derive(clap::Args)]
struct ReproduceArgs {
    /// Which experiment.
    #[arg(value_enum)]
    experiment: Experiment,
    /// Output folder (created if its parent exists); results go to OUT/<experiment>/.
    #[arg(long)]
    out: PathBuf,
    /// Training seed.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    seed: u64,
    /// Seed of the held-out evaluation tasks.
    #[arg(long, default_value_t = 1_000_003, allow_negative_numbers = true)]
    eval_seed: u64,
    /// Input dimension d (1 to 16).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    d: usize,
    /// Context pairs per task N.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    n: usize,
    /// Inputs are uniform on (-r/2, r/2)^d.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    input_range: f64,
    /// Training steps [default: 5000, 600 with --quick].
    #[arg(long, allow_negative_numbers = true)]
    steps: Option<u64>,
    /// Tasks per training step.
    #[arg(long, default_value_t = 2048, allow_negative_numbers = true)]
    batch: usize,
    /// Held-out evaluation tasks [default: 10000, 2000 with --quick].
    #[arg(long, allow_negative_numbers = true)]
    eval_tasks: Option<usize>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    threads: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    lr: f64,
    /// Skip the second model (seed + 1) used for seed-to-seed agreement.
    #[arg(long)]
    no_second_seed: bool,
    /// Reduced run for CI (600 steps, 2000 evaluation tasks).
    #[arg(long)]
    quick: bool,
}

fn main() -> ExitCode {
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
    let args = match cli.command {
        Command::Reproduce(args) => args,
        Command::FirmwareReport(f) => {
            return match dualform_harness::firmware::report::<11>(&f.dir, &f.out) {
                Ok(table) => {
                    print!("{table}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(e.exit_code() as u8)
                }
            };
        }
        Command::Golden(g) => {
            return match dualform_harness::golden::export(&g.from, &g.out, g.d, g.n, g.tasks, g.seed) {
                Ok(()) => {
                    println!("wrote {} golden tasks and the weights to {}", g.tasks, g.out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(e.exit_code() as u8)
                }
            };
        }
    };
    let Experiment::SingleLayer = args.experiment;
    let mut cfg = single_layer::Config::default();
    if args.quick {
        cfg = cfg.quick();
    }
    cfg.seed = args.seed;
    cfg.eval_seed = args.eval_seed;
    cfg.d = args.d;
    cfg.n = args.n;
    cfg.input_range = args.input_range;
    cfg.batch = args.batch;
    cfg.threads = args.threads;
    cfg.lr = args.lr;
    cfg.second_seed = !args.no_second_seed;
    if let Some(s) = args.steps {
        cfg.steps = s;
    }
    if let Some(t) = args.eval_tasks {
        cfg.eval_tasks = t;
    }
    let progress = indicatif::ProgressBar::new(cfg.steps);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    match single_layer::run(&cfg, &args.out, &progress) {
        Ok(outcome) => {
            print!("{}", outcome.summary);
            ExitCode::SUCCESS
        }
        Err(e) => {
            progress.finish_and_clear();
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
