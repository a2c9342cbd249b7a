//! Moving values between tasks' own layout and the lanes': the sum of the lanes' gradients into the batch's, task
//! by task ([`add_lanes`]), and a group's tasks into lane-minor tokens ([`load_tasks`]); on AVX2 eight values at a
//! time through an 8 x 8 transpose (written with the unit's intrinsics), otherwise one value at a time. Copies and
//! the same additions in the same order: the same bits on every unit.

use super::{Simd, MOST_SOURCES};
use crate::tasks::Group;
use dualform::lanes::Lanes;

/// The 4 x 4 transpose, `out[l][k] = rows[k][l]`: copies only, the same bits on every unit. On x86-64 the
/// baseline's unpacks and moves (LLVM, left to itself, extracts most values one at a time).
#[inline(always)]
pub fn transpose4(rows: &[[f32; 4]; 4]) -> [[f32; 4]; 4] {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of every x86-64 CPU (the baseline these functions are compiled for); `__m128` and
    // `[f32; 4]` are both 16 bytes, and every bit pattern is valid in each.
    unsafe {
        use std::arch::x86_64::*;
        let v = rows.map(|r| _mm_set_ps(r[3], r[2], r[1], r[0]));
        let (t0, t1) = (_mm_unpacklo_ps(v[0], v[1]), _mm_unpackhi_ps(v[0], v[1]));
        let (t2, t3) = (_mm_unpacklo_ps(v[2], v[3]), _mm_unpackhi_ps(v[2], v[3]));
        let out = [_mm_movelh_ps(t0, t2), _mm_movehl_ps(t2, t0), _mm_movelh_ps(t1, t3), _mm_movehl_ps(t3, t1)];
        out.map(|m| core::mem::transmute::<__m128, [f32; 4]>(m))
    }
    #[cfg(not(target_arch = "x86_64"))]
    core::array::from_fn(|l| core::array::from_fn(|k| rows[k][l]))
}

/// Task `l`'s context and query into lane `l` of `tokens` (`(n + 1) * e` lane vectors: the context's tokens, then
/// the query's); lanes past the group's tasks, and values past a task's, get zeros (their results are never read).
/// On AVX2 a full group eight values at a time through an 8 x 8 transpose.
pub fn load_tasks(simd: Simd, group: &Group, tokens: &mut [Lanes<8>]) {
    let ne = group.shape().0 * group.shape().1;
    let (ctx_tokens, query_tokens) = tokens.split_at_mut(ne.min(tokens.len()));
    let mut tasks = [(&[][..], &[][..]); 8];
    for (l, task) in tasks.iter_mut().enumerate().take(group.count) {
        let (ctx, query, _) = group.task(l);
        *task = (ctx, query);
    }
    let ctxs = tasks.map(|t| t.0);
    let queries = tasks.map(|t| t.1);
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx2 && simd.available() {
        // SAFETY: `transpose_into_avx2` is compiled for AVX2, which `available` just found on this CPU.
        unsafe {
            transpose_into_avx2(ctx_tokens, &ctxs);
            transpose_into_avx2(query_tokens, &queries);
        }
        return;
    }
    let _ = simd;
    transpose_into_from(ctx_tokens, 0, &ctxs);
    transpose_into_from(query_tokens, 0, &queries);
}

/// Value `i` of `rows[l]` into lane `l` of `into[i]` (0 past a row's end), from `i = from` on, one lane at a time.
#[inline(always)]
fn transpose_into_from(into: &mut [Lanes<8>], from: usize, rows: &[&[f32]; 8]) {
    let into = into.get_mut(from..).unwrap_or_default();
    for (l, row) in rows.iter().enumerate() {
        let row = row.get(from..).unwrap_or_default();
        let (set, rest) = into.split_at_mut(row.len().min(into.len()));
        for (t, &x) in set.iter_mut().zip(row) {
            t.0[l] = x;
        }
        for t in rest {
            t.0[l] = 0.0;
        }
    }
}

/// [`transpose_into_from`] from 0, eight values of every row at a time while every row has them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transpose_into_avx2(into: &mut [Lanes<8>], rows: &[&[f32]; 8]) {
    let shortest = rows.iter().map(|r| r.len()).min().unwrap_or(0).min(into.len());
    let (blocks, _) = into[..shortest].as_chunks_mut::<8>();
    let done = blocks.len() * 8;
    let empty = [0.0f32; 8];
    for (b, block) in blocks.iter_mut().enumerate() {
        let mut eight = [&empty; 8];
        for (e, row) in eight.iter_mut().zip(rows) {
            if let Some(v) = row.get(8 * b..).and_then(|r| r.first_chunk::<8>()) {
                *e = v;
            }
        }
        let columns = transpose8_of(eight);
        for (t, c) in block.iter_mut().zip(columns) {
            store8(&mut t.0, c);
        }
    }
    // The last values every row has (fewer than eight), through the same transpose from zero-padded copies.
    if shortest > done {
        let mut padded = [[0.0f32; 8]; 8];
        for (p, row) in padded.iter_mut().zip(rows) {
            if let (Some(p), Some(r)) = (p.get_mut(..shortest - done), row.get(done..shortest)) {
                p.copy_from_slice(r);
            }
        }
        let [p0, p1, p2, p3, p4, p5, p6, p7] = &padded;
        let columns = transpose8_of([p0, p1, p2, p3, p4, p5, p6, p7]);
        for (t, c) in into[done..shortest].iter_mut().zip(columns) {
            store8(&mut t.0, c);
        }
    }
    transpose_into_from(into, shortest, rows);
}

/// Adds the lanes `0..count` of every source into `into`, task after task: for each entry `i`, for `l = 0, 1, ...`,
/// for each source in order, `into[i] += source[i].0[l]`, the additions the task-by-task path makes into that entry,
/// in its order (entries are independent of each other, so the bits are the same on every unit). On AVX2 eight
/// entries at a time: each source's eight vectors turned into eight vectors of one lane each by an 8 x 8 transpose,
/// then added as vectors. Refused (false, nothing added) with more than [`MOST_SOURCES`] sources or a source shorter
/// than `into`.
pub fn add_lanes(simd: Simd, into: &mut [f32], sources: &[&[Lanes<8>]], count: usize) -> bool {
    if sources.len() > MOST_SOURCES || sources.iter().any(|s| s.len() < into.len()) {
        return false;
    }
    let count = count.min(8);
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx2 && simd.available() {
        // SAFETY: `add_lanes_avx2` is compiled for AVX2, which `available` just found on this CPU.
        unsafe { add_lanes_avx2(into, sources, count) };
        return true;
    }
    let _ = simd;
    add_lanes_from(into, 0, sources, count);
    true
}

/// [`add_lanes`] one entry at a time, from entry `from` on.
#[inline(always)]
fn add_lanes_from(into: &mut [f32], from: usize, sources: &[&[Lanes<8>]], count: usize) {
    for (i, acc) in into.iter_mut().enumerate().skip(from) {
        for l in 0..count {
            for s in sources {
                *acc += s[i].0[l];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_lanes_avx2(into: &mut [f32], sources: &[&[Lanes<8>]], count: usize) {
    use std::arch::x86_64::*;
    let (blocks, _) = into.as_chunks_mut::<8>();
    let done = blocks.len() * 8;
    if let [source] = sources {
        for (acc, rows) in blocks.iter_mut().zip(source.as_chunks::<8>().0) {
            let columns = transpose8(rows);
            let mut sum = load8(acc);
            for column in &columns[..count] {
                sum = _mm256_add_ps(sum, *column);
            }
            store8(acc, sum);
        }
    } else {
        let mut columns = [[_mm256_setzero_ps(); 8]; MOST_SOURCES];
        for (b, acc) in blocks.iter_mut().enumerate() {
            for (c, s) in columns.iter_mut().zip(sources) {
                if let Some(rows) = s.as_chunks::<8>().0.get(b) {
                    *c = transpose8(rows);
                }
            }
            let mut sum = load8(acc);
            for l in 0..count {
                for c in &columns[..sources.len()] {
                    sum = _mm256_add_ps(sum, c[l]);
                }
            }
            store8(acc, sum);
        }
    }
    add_lanes_from(into, done, sources, count);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn load8(v: &[f32; 8]) -> std::arch::x86_64::__m256 {
    // SAFETY: `v` is eight readable `f32`s; the load takes any alignment.
    unsafe { std::arch::x86_64::_mm256_loadu_ps(v.as_ptr()) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn store8(v: &mut [f32; 8], x: std::arch::x86_64::__m256) {
    // SAFETY: `v` is eight writable `f32`s; the store takes any alignment.
    unsafe { std::arch::x86_64::_mm256_storeu_ps(v.as_mut_ptr(), x) }
}

/// Eight entries' lanes (row `j`: entry `j`'s eight lanes) as eight vectors of one lane each (vector `l`: lane `l`
/// of the eight entries).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transpose8(rows: &[Lanes<8>; 8]) -> [std::arch::x86_64::__m256; 8] {
    let [r0, r1, r2, r3, r4, r5, r6, r7] = rows;
    let r = [&r0.0, &r1.0, &r2.0, &r3.0, &r4.0, &r5.0, &r6.0, &r7.0];
    transpose8_of(r)
}

/// The 8 x 8 transpose of the rows `r` (eight values each): vector `k` holds value `k` of every row, row `j` in
/// lane `j`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transpose8_of(rows: [&[f32; 8]; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let [r0, r1, r2, r3, r4, r5, r6, r7] = rows;
    let r = [load8(r0), load8(r1), load8(r2), load8(r3), load8(r4), load8(r5), load8(r6), load8(r7)];
    let (t0, t1) = (_mm256_unpacklo_ps(r[0], r[1]), _mm256_unpackhi_ps(r[0], r[1]));
    let (t2, t3) = (_mm256_unpacklo_ps(r[2], r[3]), _mm256_unpackhi_ps(r[2], r[3]));
    let (t4, t5) = (_mm256_unpacklo_ps(r[4], r[5]), _mm256_unpackhi_ps(r[4], r[5]));
    let (t6, t7) = (_mm256_unpacklo_ps(r[6], r[7]), _mm256_unpackhi_ps(r[6], r[7]));
    let (u0, u1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
    let (u2, u3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
    let (u4, u5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
    let (u6, u7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}
