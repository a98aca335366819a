//! The im2col + GEMM lowering computes what `conv2d` computes (reference interpreter before
//! and after the pass, f64 so only reassociation differs): stride 1 and 2, the asymmetric
//! right/bottom padding of MAGVIT's downsample, 1×1, kernels wider than the stride, batch 2,
//! odd sizes, and the gradients with respect to input and weight; grouped convolutions, and
//! forward convolutions of stride 1 (implicit GEMMs in the code generator), are left alone.

use indexmap::IndexMap;
use mmada_ir::interp::interpret;
use mmada_ir::{max_rel_error, ConvGeom, DType, Graph, Op, Tensor};
use mmada_passes::{ConvToGemm, Pass};
use rand::{Rng, SeedableRng};

#[test]
fn lowered_convolutions_equal_the_direct_ones() {
    let cases = [
        // (n, c, h, w, o, kh, kw, stride, padding [t, b, l, r], groups)
        (1, 3, 7, 9, 5, 3, 3, [1, 1], [1, 1, 1, 1], 1),
        (2, 4, 8, 6, 3, 3, 3, [2, 2], [0, 1, 0, 1], 1),
        (1, 2, 5, 5, 4, 1, 1, [1, 1], [0, 0, 0, 0], 1),
        (2, 3, 9, 7, 2, 5, 3, [2, 3], [2, 1, 0, 2], 1),
        (1, 2, 6, 6, 3, 2, 2, [3, 3], [0, 0, 0, 0], 1),
        (1, 4, 6, 6, 4, 3, 3, [1, 1], [1, 1, 1, 1], 2),
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    for (k, &(n, c, h, w, o, kh, kw, stride, padding, groups)) in cases.iter().enumerate() {
        let mut g = Graph::new();
        let x = g.input("x", DType::F64, [n, c, h, w]).unwrap();
        let wt = g.input("w", DType::F64, [o, c / groups, kh, kw]).unwrap();
        let geom = ConvGeom {
            stride,
            padding,
            groups,
        };
        let y = g.conv2d(x, wt, geom).unwrap();
        g.set_output("y", y).unwrap();
        // Gradients through conv2d_input_grad / conv2d_weight_grad.
        let ys = g.try_node(y).unwrap().shape.clone();
        let rv: Vec<f64> = (0..ys.numel())
            .map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0)
            .collect();
        let r = g.constant_f64(DType::F64, ys, rv).unwrap();
        let yr = g.mul(y, r).unwrap();
        let l = g
            .reduce(mmada_ir::ReduceOp::Sum, yr, &[0, 1, 2, 3], false)
            .unwrap();
        let grads = mmada_ir::autodiff::grad(&mut g, l, &[x, wt]).unwrap();
        g.set_output("dx", grads[0]).unwrap();
        g.set_output("dw", grads[1]).unwrap();
        let mut ins = IndexMap::new();
        let rnd = |len: usize, rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f64> {
            (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
        };
        let xv = rnd(n * c * h * w, &mut rng);
        let wv = rnd(o * c / groups * kh * kw, &mut rng);
        ins.insert(
            "x".to_string(),
            Tensor::from_f64(DType::F64, [n, c, h, w], &xv).unwrap(),
        );
        ins.insert(
            "w".to_string(),
            Tensor::from_f64(DType::F64, [o, c / groups, kh, kw], &wv).unwrap(),
        );
        let want = interpret(&g, &ins).unwrap();
        let changed = ConvToGemm.run(&mut g).unwrap();
        assert_eq!(changed, groups == 1, "case {k}");
        let has_conv = g
            .node_ids()
            .into_iter()
            .any(|id| matches!(g.node(id).op, Op::Conv2d { .. }));
        // Stride-1 forward convolutions stay for the code generator's implicit GEMM.
        let stays = groups != 1 || geom.implicit_gemm(kh, kw);
        assert_eq!(has_conv, stays, "case {k}");
        let got = interpret(&g, &ins).unwrap();
        for out in ["y", "dx", "dw"] {
            assert_eq!(got[out].shape(), want[out].shape(), "case {k} {out}");
            let e = max_rel_error(&got[out], &want[out], 1e-12);
            assert!(e <= 1e-12, "case {k} {out}: {e:e}");
        }
        let grad_ops = g.node_ids().into_iter().any(|id| {
            matches!(
                g.node(id).op,
                Op::Conv2dInputGrad { .. } | Op::Conv2dWeightGrad { .. }
            )
        });
        assert_eq!(grad_ops, groups != 1, "case {k}: gradients lowered too");
    }
}
