//! Built-in check graphs: one graph holding every op kind, random streams, and a small
//! forward+backward block. `mmada selfcheck` compiles them for this machine's targets and
//! compares against the reference interpreter; the test suite uses them too.

use crate::nn;
use mmada_ir::{
    autodiff, AttentionPart, BinaryOp, CompareOp, ConvGeom, DType, Graph, NodeId, Op, ReduceOp,
    Result, RngDist, UnaryOp,
};

/// A graph with every op kind, in `dt` for the float parts.
pub fn all_ops_graph(dt: DType) -> Result<Graph> {
    let mut g = Graph::new();
    let mut outs: Vec<(String, NodeId)> = Vec::new();
    let mut out = |name: &str, id: NodeId| outs.push((name.to_string(), id));
    let x = g.input("x", dt, [5, 7])?;
    let y = g.input("y", dt, [5, 7])?;
    let ids = g.input("ids", DType::I64, [5, 3])?; // values in [0, 10) → clamp below
    let seed = g.input("seed", DType::I64, Vec::<usize>::new())?;
    let c = g.full(dt, 1.5, [5, 7])?;
    out("constant", c);
    out("exp", g.unary(UnaryOp::Exp, x)?);
    out("mul", g.binary(BinaryOp::Mul, x, y)?);
    let lt = g.compare(CompareOp::Lt, x, y)?;
    out("lt", lt);
    out("where", g.where_(lt, x, y)?);
    out("cast", g.cast(x, DType::I32)?);
    out("reduce", g.reduce(ReduceOp::Max, x, &[1], false)?);
    let yt = g.transpose(y)?;
    out("matmul", g.matmul(x, yt)?);
    out("reshape", g.reshape(x, [7, 5])?);
    out("permute", yt);
    out("broadcast", g.broadcast_to(x, [2, 5, 7])?);
    out("iota", g.iota(DType::I32, [4, 6], 1)?);
    let off = g.scalar_i64(77)?;
    out("rng", g.rng(RngDist::Normal, 1, seed, off, [3, 50])?);
    out("slice", g.slice_axis(x, 1, 2, 6)?);
    out("pad", g.pad(x, &[1, 0], &[2, 3], -1.0)?);
    out("concat", g.concat(&[x, y, x], 0)?);
    let small = g.binary_scalar(BinaryOp::Rem, ids, 7.0)?;
    out("gather", g.gather(x, small, 1)?);
    let src = g.gather(y, small, 1)?;
    out("scatter_add", g.scatter_add(x, small, src, 1)?);
    // Along a leading axis (the embedding gradient's form, another kernel layout).
    let rows = g.input("rows", DType::I64, [4, 7])?;
    let rows = g.binary_scalar(BinaryOp::Rem, rows, 5.0)?;
    let rsrc = g.gather(y, rows, 0)?;
    out("scatter_add_rows", g.scatter_add(x, rows, rsrc, 0)?);
    out("topk", g.topk(x, 3, 1)?);
    out("argmax", g.argmax(x, 0)?);
    out("cumsum", g.cumsum(x, 1, true)?);
    out("softmax", g.softmax(x, 0)?);
    let scaled = g.binary_scalar(BinaryOp::Mul, x, 3.0)?;
    out("softmax_fused", g.softmax(scaled, 1)?);
    // The sampler's remask: positions 1, 2 and 4 are masked (id 6), the block ends at 4, one
    // commit plus those above confidence 0.3, Gumbel temperature 0.7.
    let lg = g.reshape(x, [1, 5, 7])?;
    let lg = g.cast(lg, DType::F32)?;
    let seq = g.add_constant(
        DType::I64,
        mmada_ir::Shape(vec![1, 5]),
        mmada_ir::Literal::Int(vec![3, 6, 6, 1, 6]),
    )?;
    let temperature = g.full(DType::F32, 0.7, Vec::<usize>::new())?;
    let block_end = g.scalar_i64(4)?;
    let k = g.scalar_i64(1)?;
    let threshold = g.full(DType::F32, 0.3, Vec::<usize>::new())?;
    let args = mmada_ir::RemaskArgs {
        logits: lg,
        x: seq,
        temperature,
        seed,
        offset: off,
        block_end,
        k,
        threshold,
    };
    out(
        "remask",
        g.remask(args, 6, mmada_ir::Remasking::LowConfidence, 3)?,
    );
    // Fused attention: grouped K/V heads (4 query heads over 2), 3 queries against 5 keys,
    // a key mask.
    let aq = g.input("att_q", dt, [2, 4, 3, 6])?;
    let ak = g.input("att_k", dt, [2, 2, 5, 6])?;
    let av = g.input("att_v", dt, [2, 2, 5, 4])?;
    let am = g.input("att_mask", DType::Bool, [2, 5])?;
    out("attention", g.attention(aq, ak, av, Some(am), 0.4)?);
    // Its backward pieces: the statistics feed dQ and dK | dV.
    let stats = g.attention_grad(AttentionPart::Stats, &[aq, ak], Some(am), 0.4)?;
    out("attention_stats", stats);
    let a_do = g.input("att_do", dt, [2, 4, 3, 4])?;
    let stat_dt = mmada_ir::attention_grad::stat_dtype(dt);
    let a_delta = g.input("att_delta", stat_dt, [2, 4, 3])?;
    let grad_operands = [aq, ak, av, a_do, stats, a_delta];
    for (name, part) in [
        ("attention_grad_q", AttentionPart::Q),
        ("attention_grad_kv", AttentionPart::Kv),
    ] {
        out(name, g.attention_grad(part, &grad_operands, Some(am), 0.4)?);
    }
    let img = g.input("img", dt, [2, 4, 6, 5])?;
    let w = g.input("w", dt, [6, 2, 3, 3])?;
    let geom = ConvGeom {
        stride: [2, 1],
        padding: [1, 0, 1, 1],
        groups: 2,
    };
    let cv = g.conv2d(img, w, geom)?;
    out("conv2d", cv);
    let gy = g.input("gy", dt, g.node(cv).shape.clone())?;
    out(
        "conv2d_input_grad",
        g.add(
            Op::Conv2dInputGrad {
                geom,
                input_hw: [6, 5],
            },
            &[gy, w],
        )?,
    );
    out(
        "conv2d_weight_grad",
        g.add(
            Op::Conv2dWeightGrad {
                geom,
                kernel_hw: [3, 3],
            },
            &[img, gy],
        )?,
    );
    for (n, id) in outs {
        g.set_output(&n, id)?;
    }
    Ok(g)
}

/// Uniform, normal and Gumbel streams of one seed/offset (compiled bits must equal the
/// interpreter's exactly).
pub fn rng_graph() -> Result<Graph> {
    let mut g = Graph::new();
    let seed = g.input("seed", DType::I64, Vec::<usize>::new())?;
    let off = g.input("offset", DType::I64, Vec::<usize>::new())?;
    for (i, dist) in [RngDist::Uniform, RngDist::Normal, RngDist::Gumbel]
        .into_iter()
        .enumerate()
    {
        let r = g.rng(dist, i as u32, seed, off, [97, 103])?;
        g.set_output(&format!("{dist:?}").to_lowercase(), r)?;
    }
    Ok(g)
}

/// A transformer-style block and its gradients (RMSNorm, RoPE + attention with a key mask,
/// SwiGLU, cross-entropy), differentiated before fusion so kernels mix forward and backward.
pub fn block_grad_graph() -> Result<Graph> {
    let (b, h, t, hd, d, f, v) = (2, 2, 5, 4, 8, 12, 11);
    let mut g = Graph::new();
    let x = g.param("x", DType::F32, [b, t, d])?;
    let wn = g.param("norm", DType::F32, [d])?;
    let wq = g.param("wq", DType::F32, [d, d])?;
    let wk = g.param("wk", DType::F32, [d, d])?;
    let wv = g.param("wv", DType::F32, [d, d])?;
    let wg = g.param("wg", DType::F32, [f, d])?;
    let wu = g.param("wu", DType::F32, [f, d])?;
    let wd = g.param("wd", DType::F32, [d, f])?;
    let head = g.param("head", DType::F32, [v, d])?;
    let mask = g.input("mask", DType::Bool, [b, t])?;
    let labels = g.input("labels", DType::I64, [b, t])?;
    let hn = nn::rms_norm(&mut g, x, wn, 1e-5)?;
    let split = |g: &mut Graph, w: NodeId| -> Result<NodeId> {
        let p = g.linear(hn, w)?;
        let p = g.reshape(p, [b, t, h, hd])?;
        g.permute(p, &[0, 2, 1, 3])
    };
    let q = split(&mut g, wq)?;
    let k = split(&mut g, wk)?;
    let vv = split(&mut g, wv)?;
    let q = nn::rope(&mut g, q, 500000.0)?;
    let k = nn::rope(&mut g, k, 500000.0)?;
    let a = nn::attention(&mut g, q, k, vv, Some(mask), 0.5)?;
    let a = g.permute(a, &[0, 2, 1, 3])?;
    let a = g.reshape(a, [b, t, d])?;
    let x1 = g.add2(x, a)?;
    let m = nn::swiglu(&mut g, x1, wg, wu, wd)?;
    let x2 = g.add2(x1, m)?;
    let logits = g.linear(x2, head)?;
    let ce = g.cross_entropy(logits, labels)?;
    let loss = g.reduce(ReduceOp::Sum, ce, &[0, 1], false)?;
    let loss = g.binary_scalar(BinaryOp::Mul, loss, 1.0 / (b * t) as f64)?;
    g.set_output("loss", loss)?;
    let params = [x, wn, wq, wk, wv, wg, wu, wd, head];
    let names = ["x", "norm", "wq", "wk", "wv", "wg", "wu", "wd", "head"];
    let grads = autodiff::grad(&mut g, loss, &params)?;
    for (n, gr) in names.iter().zip(grads) {
        g.set_output(&format!("grad_{n}"), gr)?;
    }
    Ok(g)
}

/// The check graphs by name, with the tolerance compiled results must meet (relative error
/// with a denominator floor of 1; 0 means bit-exact).
pub fn graphs() -> Result<Vec<(&'static str, Graph, f64)>> {
    Ok(vec![
        ("all_ops_f32", all_ops_graph(DType::F32)?, 1e-5),
        ("all_ops_bf16", all_ops_graph(DType::BF16)?, 1e-2),
        ("rng_streams", rng_graph()?, 0.0),
        ("block_grad", block_grad_graph()?, 1e-4),
    ])
}
