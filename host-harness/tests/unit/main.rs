//! The harness's unit tests, one module per module of `src` (kept here rather than beside the code: a unit-test
//! build of the library would compile the whole harness a second time).

mod experiments;
mod experiments_attention_zoo_cost;
mod experiments_gd_plus_plus;
mod experiments_interpolate;
mod experiments_multi_layer;
mod experiments_new_experiment;
mod experiments_ood;
mod experiments_recurrent;
mod experiments_settings;
mod experiments_single_layer;
mod firmware_golden_check;
mod firmware_measure;
mod firmware_qemu;
mod fit_optim;
mod fit_references;
mod judge_assess;
mod judge_baselines;
mod judge_eval;
mod judge_stats;
mod judge_verdict;
mod model;
mod model_gd_family;
mod model_lsa;
mod net_lanes;
mod net_merged;
mod net_mlp;
mod net_mlp_zoo;
mod net_softmax;
mod net_zoo;
mod output_plot;
mod output_report;
mod probes_dai;
mod probes_relaxation;
mod sweep;
mod tasks;
