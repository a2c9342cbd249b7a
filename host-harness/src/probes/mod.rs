//! Probes of other readings of in-context learning, on trained softmax layers: [`dai`] is Dai et al.'s comparison
//! with fine-tuning, [`relaxation`] their relaxation of softmax attention to linear attention.

pub mod dai;
pub mod relaxation;
