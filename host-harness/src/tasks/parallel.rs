//! A batch's tasks visited in parallel, chunk by chunk ([`CHUNK`] tasks per random stream), up to [`STREAMS`] chunks
//! drawn side by side (`lockstep`), each chunk reduced into its own accumulator, the accumulators returned in chunk
//! order: the same tasks and the same results whatever the number of threads. Scratch that does not hold results
//! (a net's workspace) is one per block of chunks, taken from a [`Pool`] that keeps it for the next call.

use super::lockstep::{self, Side};
use super::{stream_rng, Group, TaskSampler, Xoshiro4, CHUNK, STREAMS};
use std::sync::{Mutex, PoisonError};

/// Scratch values kept between calls of [`TaskSampler::par_groups_in`] (a training run's workspaces from one step to
/// the next): each block of chunks takes one, or makes one when none is free, and puts it back when done. At most
/// one per block running at once is ever made. What a value holds must not change a result: the nets' workspaces are
/// overwritten before they are read (their tests reuse one workspace across nets and groups).
#[derive(Debug)]
pub struct Pool<S> {
    free: Mutex<Vec<S>>,
}

impl<S> Default for Pool<S> {
    fn default() -> Self {
        Self { free: Mutex::new(Vec::new()) }
    }
}

impl<S> Pool<S> {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many values the pool holds now (none are out between calls).
    pub fn len(&self) -> usize {
        self.free.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self, make: impl Fn() -> S) -> S {
        // A panic elsewhere while the lock was held leaves a list of whole values: still usable.
        let popped = self.free.lock().unwrap_or_else(PoisonError::into_inner).pop();
        popped.unwrap_or_else(make)
    }

    fn put(&self, s: S) {
        self.free.lock().unwrap_or_else(PoisonError::into_inner).push(s);
    }
}

impl TaskSampler {
    /// Visits the `count` tasks of the stream family `(seed, first_stream + chunk)`, chunk by chunk in parallel,
    /// calling `f(acc, ctx, query, y)` with the context as N tokens of width `E = d + 1` in one slice and reducing
    /// the per-chunk results in order.
    pub fn par_chunks<A: Send>(
        &self,
        seed: u64,
        first_stream: u64,
        count: usize,
        init: impl Fn() -> A + Sync,
        f: impl Fn(&mut A, &[f32], &[f32], f32) + Sync,
    ) -> Vec<A> {
        self.par_groups(seed, first_stream, count, 1, init, |acc, group| {
            let (ctx, query, y) = group.task(0);
            f(acc, ctx, query, y)
        })
    }

    /// [`TaskSampler::par_chunks`] a group of up to `size` consecutive tasks at a time: the same tasks in the same
    /// order, `f(acc, group)` called once per group (groups never span two chunks).
    pub fn par_groups<A: Send>(
        &self,
        seed: u64,
        first_stream: u64,
        count: usize,
        size: usize,
        init: impl Fn() -> A + Sync,
        f: impl Fn(&mut A, &Group) + Sync,
    ) -> Vec<A> {
        let none = Pool::new();
        self.par_groups_in(seed, first_stream, count, size, (&none, || ()), init, |acc, _, group| f(acc, group))
    }

    /// [`TaskSampler::par_groups`] with scratch: `f(acc, scratch, group)`, where `scratch` is one per block of chunks,
    /// taken from `pool` (made by `make` when it has none free) and put back afterwards. The results are those of
    /// fresh scratch as long as `f` overwrites what it reads of it.
    #[allow(clippy::too_many_arguments)]
    pub fn par_groups_in<A: Send, S: Send>(
        &self,
        seed: u64,
        first_stream: u64,
        count: usize,
        size: usize,
        (pool, make): (&Pool<S>, impl Fn() -> S + Sync),
        init: impl Fn() -> A + Sync,
        f: impl Fn(&mut A, &mut S, &Group) + Sync,
    ) -> Vec<A> {
        use rayon::prelude::*;
        let (size, e) = (size.max(1), self.width());
        let chunks = count.div_ceil(CHUNK);
        // Up to STREAMS chunks at a time, their generators stepped together (`lockstep`), each chunk with its own
        // accumulator; fewer per block when there would otherwise be fewer blocks than threads. A lane past the
        // block's chunks draws from a stream nobody reads.
        let per_block = STREAMS.min(chunks.div_ceil(rayon::current_num_threads()).max(1));
        (0..chunks.div_ceil(per_block))
            .into_par_iter()
            .map(|block| {
                let first = block * per_block;
                let lanes = per_block.min(chunks - first);
                let rngs = core::array::from_fn(|l| stream_rng(seed, first_stream + (first + l) as u64));
                let mut rng = Xoshiro4::new(&rngs);
                let mut groups = vec![Group::zeros(self.n, e, size); STREAMS];
                let mut side = Side::new(self.n, e);
                let mut left: [usize; STREAMS] = core::array::from_fn(|l| {
                    if l < lanes {
                        count.saturating_sub((first + l) * CHUNK).min(CHUNK)
                    } else {
                        0
                    }
                });
                let mut accs: Vec<A> = (0..lanes).map(|_| init()).collect();
                let mut scratch = pool.take(&make);
                let simd = crate::net::simd::current();
                while let Some(&most) = left.iter().max().filter(|&&m| m > 0) {
                    let tasks = size.min(most);
                    let draw = lockstep::Draw {
                        sampler: self,
                        rng: &mut rng,
                        groups: &mut groups,
                        side: &mut side,
                        simd,
                        tasks,
                    };
                    crate::net::simd::run_at_main_widths(simd, e, draw);
                    for ((acc, group), left) in accs.iter_mut().zip(&mut groups).zip(&mut left) {
                        group.count = size.min(*left);
                        if group.count > 0 {
                            f(acc, &mut scratch, group);
                            *left -= group.count;
                        }
                    }
                }
                pool.put(scratch);
                accs
            })
            .collect::<Vec<Vec<A>>>()
            .into_iter()
            .flatten()
            .collect()
    }

    /// [`TaskSampler::par_chunks`] with tokens of a width fixed at compile time (`E = d + 1`).
    pub fn par_chunks_fixed<const E: usize, A: Send>(
        &self,
        seed: u64,
        first_stream: u64,
        count: usize,
        init: impl Fn() -> A + Sync,
        f: impl Fn(&mut A, &[[f32; E]], &[f32; E], f32) + Sync,
    ) -> Vec<A> {
        self.par_chunks(seed, first_stream, count, init, |acc, ctx, query, y| {
            if let Ok(q) = <&[f32; E]>::try_from(query) {
                f(acc, ctx.as_chunks::<E>().0, q, y);
            }
        })
    }
}
