//! The report of `attention-zoo`: results, tables, checks, verdict and files.

use super::cost::{Cost, M4_CYCLES_PER_DIV, M4_CYCLES_PER_EXP, M4_CYCLES_PER_OP, M4_HZ};
use super::Task;
use crate::cells;
use crate::experiments::Run;
use crate::judge::stats::Stat;
use crate::net::Attention;
use crate::output::plot::{Panel, Series};
use crate::output::report::{Check, Table, Tables};
use crate::HarnessError;
use serde::{Deserialize, Serialize};

/// A model fails a task when its loss is at least this fraction of predicting 0's.
pub const FAILS: f64 = 0.9;
/// Softmax solves recall when its loss is at most this fraction of predicting 0's (full runs).
pub const RECALL_SOLVED: f64 = 0.1;

/// One configuration: task, kind, depth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The task.
    pub task: Task,
    /// The attention kind.
    pub kind: Attention,
    /// Layers.
    pub layers: usize,
    /// The Adam rate of the kept attempt.
    pub lr: f64,
    /// Every rate of the sweep with its loss on tuning tasks (infinity when it diverged).
    pub sweep: Vec<(f64, f64)>,
    /// Every rate the seeds trained at over the full budget, in order, with how many diverged (the next rate is tried
    /// when one does); the kept rate is [`Row::lr`].
    pub attempts: Vec<(f64, usize)>,
    /// Held-out loss over the seeds that trained (95% interval over seeds).
    pub loss: Stat,
    /// Held-out loss per seed that trained.
    pub per_seed: Vec<f64>,
    /// Seeds whose training diverged (non-finite loss) in the kept attempt.
    pub diverged: usize,
    /// Preds diff to the task's tuned GD step, where it applies.
    pub preds_diff_gd: Option<Stat>,
    /// Mean training time per step.
    pub ms_per_step: f64,
    /// `(step, probe loss)` of the first seed.
    pub curve: Vec<(u64, f64)>,
}

/// A task's baselines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// The task.
    pub task: Task,
    /// Loss of predicting 0.
    pub zero: Stat,
    /// One GD step from 0 on the tokens, where it applies: its tuned rate and held-out loss.
    pub gd: Option<(f64, Stat)>,
}

/// What `reproduce attention-zoo` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The training budget in words.
    pub budget: String,
    /// Every task's baselines.
    pub tasks: Vec<TaskSummary>,
    /// Every configuration.
    pub rows: Vec<Row>,
    /// The cost of one full layer per kind and context length.
    pub costs: Vec<Cost>,
}

impl Results {
    fn summary(&self, task: Task) -> Option<&TaskSummary> {
        self.tasks.iter().find(|t| t.task == task)
    }

    fn row(&self, task: Task, kind: Attention, layers: usize) -> Option<&Row> {
        self.rows.iter().find(|r| r.task == task && r.kind == kind && r.layers == layers)
    }

    /// The lowest loss of `kind` on `task` over depths.
    fn best(&self, task: Task, kind: Attention) -> Option<&Row> {
        self.rows
            .iter()
            .filter(|r| r.task == task && r.kind == kind && r.loss.mean.is_finite())
            .min_by(|a, b| a.loss.mean.total_cmp(&b.loss.mean))
    }

    /// The kinds that were run, in report order.
    fn kinds(&self) -> Vec<Attention> {
        Attention::ALL.into_iter().filter(|k| self.rows.iter().any(|r| r.kind == *k)).collect()
    }

    fn depths(&self) -> Vec<usize> {
        let mut d: Vec<usize> = self.rows.iter().map(|r| r.layers).collect();
        d.sort_unstable();
        d.dedup();
        d
    }
}

fn name(kind: Attention, layers: usize) -> String {
    format!("{} x {layers}", kind.name())
}

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let tasks: Vec<Task> = self.tasks.iter().map(|t| t.task).collect();
        let mut columns = vec!["model"];
        columns.extend(tasks.iter().map(|t| t.name()));
        let mut main = Table::new(format!("held-out loss (95% interval over seeds); {}", self.budget), &columns);
        for layers in self.depths() {
            for kind in self.kinds() {
                let mut cells = vec![name(kind, layers)];
                for &t in &tasks {
                    cells.push(self.row(t, kind, layers).map_or("-".into(), |r| {
                        if r.per_seed.is_empty() {
                            "diverged".into()
                        } else {
                            r.loss.show()
                        }
                    }));
                }
                main.row(cells);
            }
        }
        let mut gd = vec!["one GD step (tuned)".to_string()];
        let mut zero = vec!["predict 0".to_string()];
        for t in &self.tasks {
            gd.push(t.gd.as_ref().map_or("-".into(), |g| g.1.show()));
            zero.push(t.zero.show());
        }
        main.row(gd);
        main.row(zero);

        let mut detail = Table::new(
            "every configuration: the rate trained at (sweep losses on tuning tasks), diverged seeds per rate tried (the \
             next rate in sweep order is tried when a seed diverges; the attempt with the most trained seeds is kept), \
             Preds diff to the tuned GD step, training time",
            &["task", "model", "lr", "sweep", "diverged", "preds diff to GD", "ms/step"],
        );
        for r in &self.rows {
            let sweep: Vec<String> = r.sweep.iter().map(|(lr, l)| format!("{lr}: {l:.4}")).collect();
            let diverged: Vec<String> = r.attempts.iter().map(|(lr, k)| format!("{k} at {lr}")).collect();
            let kept = if r.attempts.len() > 1 { format!(" (kept {})", r.lr) } else { String::new() };
            detail.row(vec![
                r.task.name().into(),
                name(r.kind, r.layers),
                r.lr.to_string(),
                sweep.join(", "),
                format!("{}{kept}", diverged.join(", then ")),
                r.preds_diff_gd.map_or("-".into(), |s| s.show()),
                format!("{:.2}", r.ms_per_step),
            ]);
        }

        let mut cost = Table::new(
            format!(
                "one full layer (N context tokens and the query, E = 11, 2 heads): operations counted on the core's \
                 kernels, host time measured (f32, one thread), Cortex-M4 time estimated ({M4_CYCLES_PER_OP:.2} \
                 cycles per add or multiply, {M4_CYCLES_PER_DIV} per division, {M4_CYCLES_PER_EXP:.1} per exp, \
                 {} MHz)",
                M4_HZ / 1e6
            ),
            &["model", "N", "FLOPs", "exp", "host (us)", "M4 est. (ms)"],
        );
        for c in &self.costs {
            cost.row(vec![
                c.kind.name().into(),
                c.n.to_string(),
                c.ops.flops().to_string(),
                c.ops.exp.to_string(),
                format!("{:.2}", c.host_microseconds),
                format!("{:.3}", c.m4_ms),
            ]);
        }
        vec![main, detail, cost]
    }
}

/// Sound when every configuration trained at least one seed, the LSA layer learns the linear task (at most 0.8 of
/// predicting 0) and softmax solves recall (at most [`RECALL_SOLVED`] of predicting 0 in a full run; in a quick run,
/// whose budget is too small for that, at most [`FAILS`]).
pub fn checks(r: &Results, quick: bool) -> Vec<Check> {
    let untrained = r.rows.iter().filter(|x| x.per_seed.is_empty()).count();
    let mut checks = vec![Check::at_most("trained", "configurations with no trained seed", untrained as f64, 0.0)];
    let ratio = |task: Task, kind: Attention| -> Option<f64> {
        Some(r.best(task, kind)?.loss.mean / r.summary(task)?.zero.mean)
    };
    if let Some(v) = ratio(Task::Linear, Attention::Lsa) {
        checks.push(Check::at_most("lsa_learns_linear", "LSA on linear: loss / loss of predicting 0", v, 0.8));
    }
    if let Some(v) = ratio(Task::Recall, Attention::Softmax) {
        let bound = if quick { FAILS } else { RECALL_SOLVED };
        checks.push(Check::at_most(
            "softmax_solves_recall",
            "softmax on recall: loss / loss of predicting 0",
            v,
            bound,
        ));
    }
    checks
}

/// Per task: the best model, and which kinds fail (their best depth at least [`FAILS`] of predicting 0).
pub fn verdict(r: &Results, checks: &[Check]) -> String {
    let mut parts = Vec::new();
    for t in &r.tasks {
        let best =
            Attention::ALL.iter().filter_map(|&k| r.best(t.task, k)).min_by(|a, b| a.loss.mean.total_cmp(&b.loss.mean));
        let Some(best) = best else { continue };
        let failing: Vec<&str> = r
            .kinds()
            .into_iter()
            .filter(|&k| r.best(t.task, k).is_none_or(|x| x.loss.mean >= FAILS * t.zero.mean))
            .map(|k| k.name())
            .collect();
        let gd = t.gd.as_ref().map_or(String::new(), |g| format!(", one GD step {:.4}", g.1.mean));
        let fails = if failing.is_empty() {
            "every kind learns".to_string()
        } else {
            format!("fails (at least {FAILS} of predicting 0): {}", failing.join(", "))
        };
        parts.push(format!(
            "{}: best {} at {:.4} (predict 0 {:.4}{gd}); {fails}",
            t.task.name(),
            name(best.kind, best.layers),
            best.loss.mean,
            t.zero.mean
        ));
    }
    let failed: Vec<&str> = checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
    let tail = if failed.is_empty() { String::new() } else { format!(" (failed checks: {})", failed.join(", ")) };
    format!("{}{tail}", parts.join("; "))
}

/// `losses.csv`, `cost.csv` (deterministic: no host times), `curves.csv` and the plot.
pub fn write_files(run: &mut Run<'_>, r: &Results) -> Result<(), HarnessError> {
    let mut losses = Table::new("losses", &["task", "kind", "layers", "lr", "loss", "ci95", "seeds_trained", "diverged", "preds_diff_gd"]);
    for x in &r.rows {
        losses.row(cells![x.task.name(), x.kind.name(), x.layers, x.lr, x.loss.mean, x.loss.ci95, x.per_seed.len(), x.diverged, x.preds_diff_gd.map_or(String::new(), |s| s.mean.to_string())]);
    }
    run.csv("losses.csv", &losses)?;
    let mut cost = Table::new("cost", &["kind", "n", "adds", "muls", "divs", "exps", "m4_cycles_estimated"]);
    for c in &r.costs {
        cost.row(cells![c.kind.name(), c.n, c.ops.add, c.ops.mul, c.ops.div, c.ops.exp, format!("{:.0}", c.ops.m4_cycles())]);
    }
    run.csv("cost.csv", &cost)?;
    let mut curves = Table::new("curves", &["task", "kind", "layers", "step", "probe_loss"]);
    for x in &r.rows {
        for (step, l) in &x.curve {
            curves.row(cells![x.task.name(), x.kind.name(), x.layers, step, l]);
        }
    }
    run.csv("curves.csv", &curves)?;
    let panels: Vec<Panel> = r
        .tasks
        .iter()
        .map(|t| {
            let mut p = Panel::new(format!("{} (first seed)", t.task.name()), "training step", "probe loss").log_y();
            for x in r.rows.iter().filter(|x| x.task == t.task) {
                let pts: Vec<(f64, f64)> = x.curve.iter().map(|(s, l)| (*s as f64, *l)).collect();
                let label = name(x.kind, x.layers);
                let series = if x.layers == 1 { Series::line(label, pts) } else { Series::dashed(label, pts) };
                let color = Attention::ALL.iter().position(|k| *k == x.kind).unwrap_or(0);
                p = p.with(series.with_color(color));
            }
            p
        })
        .collect();
    if !panels.is_empty() {
        run.plot(
            "attention-zoo.png",
            "Loss against steps per task and attention kind (one colour per kind; solid: 1 layer, dashed: 2 layers)",
            &panels,
        );
    }
    Ok(())
}
