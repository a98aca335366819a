//! Finite-difference gradient checks in f64 of the model's blocks (`models/src/nn/`): RMSNorm,
//! RoPE + attention with a padding mask, SwiGLU, and conv2d + group norm + swish. Relative error ≤ 1e-6 (see `mmada_ir::gradcheck` for the measure).

use mmada_ir::gradcheck::{check_gradients, float, Fill, GradInput};
use mmada_ir::{ConvGeom, Graph, NodeId, Result};
use mmada_models::nn;

fn check(what: &str, inputs: Vec<GradInput>, f: impl Fn(&mut Graph, &[NodeId]) -> Result<NodeId>) {
    let worst = check_gradients(&inputs, 1e-6, f).unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!("{what}: worst relative error {worst:.2e}");
}

#[test]
fn model_blocks_have_exact_gradients() {
    check(
        "rms_norm",
        vec![float("x", &[3, 8], -1.0, 1.0), float("w", &[8], 0.5, 1.5)],
        |g, x| nn::rms_norm(g, x[0], x[1], 1e-5),
    );
    let mask = vec![
        true, true, true, false, true, true, false, false, true, true,
    ];
    check(
        "rope+attention+padding mask",
        vec![
            float("q", &[2, 2, 5, 4], -1.0, 1.0),
            float("k", &[2, 2, 5, 4], -1.0, 1.0),
            float("v", &[2, 2, 5, 4], -1.0, 1.0),
            GradInput {
                name: "m",
                shape: vec![2, 5],
                fill: Fill::Bool(mask),
            },
        ],
        |g, x| {
            let q = nn::rope(g, x[0], 500000.0)?;
            let k = nn::rope(g, x[1], 500000.0)?;
            nn::attention(g, q, k, x[2], Some(x[3]), 0.5)
        },
    );
    check(
        "swiglu",
        vec![
            float("x", &[2, 3, 4], -1.0, 1.0),
            float("wg", &[6, 4], -1.0, 1.0),
            float("wu", &[6, 4], -1.0, 1.0),
            float("wd", &[4, 6], -1.0, 1.0),
        ],
        |g, x| nn::swiglu(g, x[0], x[1], x[2], x[3]),
    );
    check(
        "conv2d+group_norm+swish",
        vec![
            float("x", &[2, 4, 5, 5], -1.0, 1.0),
            float("w", &[4, 4, 3, 3], -0.5, 0.5),
            float("gamma", &[4], 0.5, 1.5),
            float("beta", &[4], -0.5, 0.5),
        ],
        |g, x| {
            let geom = ConvGeom {
                stride: [1, 1],
                padding: [1, 1, 1, 1],
                groups: 1,
            };
            let c = g.conv2d(x[0], x[1], geom)?;
            let n = nn::group_norm(g, c, x[2], x[3], 2, 1e-6)?;
            g.silu(n)
        },
    );
}
