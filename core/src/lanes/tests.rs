//! Tests of [`super::Lanes`]: every lane against `f32`'s bits.

use super::*;

#[test]
fn comparisons_answer_only_when_every_lane_agrees() {
    let a = Lanes([1.0, 2.0]);
    assert!(Lanes::splat(0.0) < a);
    assert_eq!(Lanes([3.0, 0.0]).partial_cmp(&a), None, "lanes that disagree are not ordered");
    assert!(!Lanes([1.0, f32::NAN]).is_finite() && a.is_finite());
}

/// Equality and finiteness look at every lane, wherever the odd one is (they are computed without branches, as
/// masks over all lanes, so a lane left out of the mask would go unnoticed by the tests above).
#[test]
fn equality_and_finiteness_take_every_lane() {
    let base = Lanes::<8>(core::array::from_fn(|i| i as f32 - 3.5));
    assert!(base.is_finite() && base == base);
    for i in 0..8 {
        for odd in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = base;
            x.0[i] = odd;
            assert!(!x.is_finite(), "{odd} in lane {i}");
            assert!(x != base, "{odd} in lane {i} against a finite value");
        }
        let mut nan = base;
        nan.0[i] = f32::NAN;
        assert!(nan != nan, "NaN in lane {i} is unequal to itself, as in f32");
        let mut other = base;
        other.0[i] += 1.0;
        assert!(other != base, "lane {i} differs");
    }
    assert_eq!(Lanes([0.0, 1.0]), Lanes([-0.0, 1.0]), "zeros of either sign are equal, as in f32");
}

#[test]
fn selections_decide_per_lane_and_evaluate_only_what_lanes_need() {
    let (a, b) = (Lanes([1.0, 5.0, f32::NAN, 2.0]), Lanes::splat(2.0));
    let v = a.if_gt(b, || Lanes::splat(10.0), || Lanes::splat(20.0));
    assert_eq!(v.0, [20.0, 10.0, 20.0, 20.0], "NaN and equal lanes take `otherwise`, as f32 does");
    let one_side = Lanes::<4>::splat(3.0).if_gt(b, || Lanes::splat(1.0), || panic!("no lane needs `otherwise`"));
    assert_eq!(one_side, Lanes::splat(1.0));
    let f = Lanes([1.0, f32::INFINITY, f32::NAN, -0.0]).finite_or(|| Lanes::splat(7.0));
    assert_eq!(f.0, [1.0, 7.0, 7.0, -0.0]);
    assert_eq!(Lanes::<2>::splat(1.0).finite_or(|| panic!("every lane is finite")), Lanes::splat(1.0));
    assert_eq!(<Lanes<4> as Real>::LANES, 4);
    assert!(Lanes([1.0, -0.0, 2.0]).has_zero() && !Lanes([1.0, -1.0, f32::NAN]).has_zero(), "zero in any lane");
}

/// Every `f32` through the lanes' exponential against `libm::expf`, bit for bit: all 2^32 patterns with
/// `DUALFORM_EXHAUSTIVE=1` (a minute), else every 61st pattern and every pattern of the boundaries between the
/// lanes' cases.
#[test]
fn the_lanes_exponential_is_libms_expf_bit_for_bit() {
    let exhaustive = std::env::var_os("DUALFORM_EXHAUSTIVE").is_some();
    let boundaries = [0x3900_0000u32, 0x3eb1_7218, 0x3f85_1592, 0x42ae_ac50, 0x42b1_7218, 0x42cf_f1b5, 0x7f80_0000];
    let near = boundaries.iter().flat_map(|&b| (b - 4096..=b + 4096).flat_map(|h| [h, h | 0x8000_0000]));
    let sweep = (0..=u32::MAX).step_by(if exhaustive { 1 } else { 61 });
    let mut batch = [0.0f32; 8];
    let mut checked = 0u64;
    for (i, bits) in near.chain(sweep).enumerate() {
        batch[i % 8] = f32::from_bits(bits);
        if i % 8 == 7 {
            let got = Lanes(batch).exp();
            for (x, g) in batch.iter().zip(got.0) {
                let want = libm::expf(*x);
                assert!(g.to_bits() == want.to_bits(), "exp({x:e}) [{:#010x}]: {g:e} vs {want:e}", x.to_bits());
            }
            checked += 8;
        }
    }
    assert!(checked > 70_000_000);
}

/// `f32`'s `exp_each` over slices of every length from 0 to 27 (whole eights and remainders), with ordinary,
/// tiny, overflowing, subnormal-result and NaN arguments mixed in: the bits of `expf` element by element.
#[test]
fn exp_each_is_expf_element_by_element() {
    let pool = [-3.5f32, 0.25, 1e-9, -100.0, 88.9, -90.0, f32::NAN, 2.0, -0.75, 41.0, f32::NEG_INFINITY, 0.0];
    for len in 0..28 {
        let xs: Vec<f32> = (0..len).map(|i| pool[(i * 7 + len) % pool.len()] * (1.0 + i as f32 / 64.0)).collect();
        let mut got = xs.clone();
        <f32 as Real>::exp_each(&mut got);
        for (x, g) in xs.iter().zip(&got) {
            let want = libm::expf(*x);
            assert!(g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()), "len {len}: exp({x:e})");
        }
    }
}

#[test]
fn clipping_decides_per_lane() {
    let c = Lanes::splat(1.0);
    let v = Lanes([2.0, -3.0, 0.5, f32::NAN]).clip(c);
    assert_eq!(&v.0[..3], &[1.0, -1.0, 0.5]);
    assert!(v.0[3].is_nan());
    let g = Lanes([5.0; 4]).pass_if_within(Lanes([0.5, 1.5, -1.0, f32::NAN]), c);
    assert_eq!(g.0, [5.0, 0.0, 5.0, 0.0]);
}

/// Every lane gives `f32`'s bits, on values at and around the bounds, infinities, NaNs and signed zeros.
#[test]
fn clipping_is_f32s_bit_for_bit() {
    let values = [
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.0,
        -1.0,
        1.5,
        -1.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::MIN_POSITIVE,
        3.0e38,
    ];
    for &c in &values {
        for &x in &values {
            for &p in &values {
                let want = [x.clip(c), x.pass_if_within(p, c)];
                let got =
                    [Lanes([x; 8]).clip(Lanes::splat(c)), Lanes([x; 8]).pass_if_within(Lanes([p; 8]), Lanes::splat(c))];
                for (w, g) in want.iter().zip(got.iter()) {
                    assert!(g.0.iter().all(|v| v.to_bits() == w.to_bits()), "x {x} p {p} c {c}: {w} against {:?}", g.0);
                }
            }
        }
    }
}
