//! The core's integration tests, in one binary (one build of the shared kernels' instances and one link, instead of
//! one per file); each module one concern.

mod backward;
mod common;
mod dai_split;
mod fuzz_hostile;
mod gd;
mod hostile;
mod linear_attention;
mod merged_layer;
mod merged_ref;
mod softmax;
mod softmax_lanes;
mod softmax_ref;
mod stack_stream;
