//! High-level graph building: NumPy-style broadcasting arithmetic and composite ops (softmax,
//! mean, transpose, ...) expressed with the primitives of [`crate::Op`].
//!
//! Everything here only adds primitive nodes; there are no hidden semantics.

use crate::error::{IrError, Result};
use crate::shape::broadcast_shapes;
use crate::{
    BinaryOp, CompareOp, ConvGeom, DType, Graph, Literal, Node, NodeId, Op, ReduceOp, RngDist,
    Role, Shape, UnaryOp,
};

impl Graph {
    /// A data input.
    pub fn input(&mut self, name: &str, dtype: DType, shape: impl Into<Shape>) -> Result<NodeId> {
        self.add_input(name, Role::Data, dtype, shape)
    }

    /// A trainable parameter input.
    pub fn param(&mut self, name: &str, dtype: DType, shape: impl Into<Shape>) -> Result<NodeId> {
        self.add_input(name, Role::Param, dtype, shape)
    }

    /// A scalar constant of `dtype`, broadcast to `shape`.
    pub fn full(&mut self, dtype: DType, value: f64, shape: impl Into<Shape>) -> Result<NodeId> {
        let lit = if dtype.is_float() {
            Literal::Float(vec![value])
        } else if dtype == DType::Bool {
            Literal::Bool(vec![value != 0.0])
        } else {
            Literal::Int(vec![value as i64])
        };
        let c = self.add_constant(dtype, Shape::scalar(), lit)?;
        let shape = shape.into();
        if shape.rank() == 0 {
            return Ok(c);
        }
        self.add(Op::Broadcast { shape }, &[c])
    }

    /// Elementwise unary op.
    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> Result<NodeId> {
        self.add(Op::Unary { op }, &[x])
    }

    /// Broadcasts `x` to `shape` (no node when the shape already matches).
    pub fn broadcast_to(&mut self, x: NodeId, shape: impl Into<Shape>) -> Result<NodeId> {
        let shape = shape.into();
        if self.try_node(x)?.shape == shape {
            return Ok(x);
        }
        self.add(Op::Broadcast { shape }, &[x])
    }

    fn broadcast_pair(&mut self, op: &str, a: NodeId, b: NodeId) -> Result<(NodeId, NodeId)> {
        let sa = self.try_node(a)?.shape.clone();
        let sb = self.try_node(b)?.shape.clone();
        let s = broadcast_shapes(&sa, &sb).ok_or_else(|| IrError::BadOperands {
            op: op.into(),
            msg: format!("shapes {sa} and {sb} do not broadcast"),
            operands: String::new(),
        })?;
        Ok((self.broadcast_to(a, s.clone())?, self.broadcast_to(b, s)?))
    }

    /// Elementwise binary op with NumPy broadcasting.
    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        let (a, b) = self.broadcast_pair(op.name(), a, b)?;
        self.add(Op::Binary { op }, &[a, b])
    }

    /// Comparison with NumPy broadcasting.
    pub fn compare(&mut self, op: CompareOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        let (a, b) = self.broadcast_pair(op.name(), a, b)?;
        self.add(Op::Compare { op }, &[a, b])
    }

    /// a + b
    pub fn add2(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Add, a, b)
    }

    /// a - b
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Sub, a, b)
    }

    /// a · b
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Mul, a, b)
    }

    /// a / b
    pub fn div(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Div, a, b)
    }

    /// x op scalar (the scalar takes x's dtype).
    pub fn binary_scalar(&mut self, op: BinaryOp, x: NodeId, s: f64) -> Result<NodeId> {
        let dt = self.try_node(x)?.dtype;
        let c = self.full(dt, s, Shape::scalar())?;
        self.binary(op, x, c)
    }

    /// `cond ? a : b` with broadcasting of all three.
    pub fn where_(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> Result<NodeId> {
        let (a, b) = self.broadcast_pair("where", a, b)?;
        let (cond, a) = self.broadcast_pair("where", cond, a)?;
        let (cond, b) = self.broadcast_pair("where", cond, b)?;
        self.add(Op::Where, &[cond, a, b])
    }

    /// Dtype conversion (no node when already of that dtype).
    pub fn cast(&mut self, x: NodeId, to: DType) -> Result<NodeId> {
        if self.try_node(x)?.dtype == to {
            return Ok(x);
        }
        self.add(Op::Cast { to }, &[x])
    }

    /// Reduction over the given axes (negative axes count from the end).
    pub fn reduce(
        &mut self,
        op: ReduceOp,
        x: NodeId,
        axes: &[i64],
        keep_dims: bool,
    ) -> Result<NodeId> {
        let shape = self.try_node(x)?.shape.clone();
        let mut ax = Vec::new();
        for &a in axes {
            let r = shape.axis(a).ok_or_else(|| IrError::BadOperands {
                op: format!("reduce_{}", op.name()),
                msg: format!("axis {a} out of range for shape {shape}"),
                operands: String::new(),
            })?;
            ax.push(r);
        }
        ax.sort();
        ax.dedup();
        self.add(
            Op::Reduce {
                op,
                axes: ax,
                keep_dims,
            },
            &[x],
        )
    }

    /// Sum over one axis.
    pub fn sum(&mut self, x: NodeId, axis: i64, keep_dims: bool) -> Result<NodeId> {
        self.reduce(ReduceOp::Sum, x, &[axis], keep_dims)
    }

    /// Max over one axis.
    pub fn max(&mut self, x: NodeId, axis: i64, keep_dims: bool) -> Result<NodeId> {
        self.reduce(ReduceOp::Max, x, &[axis], keep_dims)
    }

    /// Mean over one axis.
    pub fn mean(&mut self, x: NodeId, axis: i64, keep_dims: bool) -> Result<NodeId> {
        let shape = self.try_node(x)?.shape.clone();
        let a = shape.axis(axis).ok_or_else(|| IrError::BadOperands {
            op: "mean".into(),
            msg: format!("axis {axis} out of range for shape {shape}"),
            operands: String::new(),
        })?;
        let s = self.sum(x, axis, keep_dims)?;
        self.binary_scalar(BinaryOp::Mul, s, 1.0 / shape.0[a] as f64)
    }

    /// Softmax along one axis, `exp(x − max) / Σ exp(x − max)`, as one [`Op::Softmax`] node
    /// (one kernel per row); its gradient is PyTorch's `y ⊙ (g − Σ g·y)`.
    pub fn softmax(&mut self, x: NodeId, axis: i64) -> Result<NodeId> {
        let a = self.axis_of(x, axis, "softmax")?;
        self.add(Op::Softmax { axis: a }, &[x])
    }

    /// Matrix product; a rank-2 right operand is broadcast over the left operand's batch dims.
    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        let sa = self.try_node(a)?.shape.clone();
        let sb = self.try_node(b)?.shape.clone();
        if sa.rank() > 2 && sb.rank() == 2 {
            let mut bs = sa.0[..sa.rank() - 2].to_vec();
            bs.extend_from_slice(&sb.0);
            let b = self.broadcast_to(b, bs)?;
            return self.add(Op::MatMul, &[a, b]);
        }
        self.add(Op::MatMul, &[a, b])
    }

    /// New shape with the same element count.
    pub fn reshape(&mut self, x: NodeId, shape: impl Into<Shape>) -> Result<NodeId> {
        let shape = shape.into();
        if self.try_node(x)?.shape == shape {
            return Ok(x);
        }
        self.add(Op::Reshape { shape }, &[x])
    }

    /// Axis permutation.
    pub fn permute(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        self.add(
            Op::Permute {
                perm: perm.to_vec(),
            },
            &[x],
        )
    }

    /// Swaps the last two axes.
    pub fn transpose(&mut self, x: NodeId) -> Result<NodeId> {
        let r = self.try_node(x)?.shape.rank();
        if r < 2 {
            return Err(IrError::BadOperands {
                op: "transpose".into(),
                msg: format!("needs rank ≥ 2, got {r}"),
                operands: String::new(),
            });
        }
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 1, r - 2);
        self.permute(x, &perm)
    }

    fn axis_of(&self, x: NodeId, axis: i64, op: &str) -> Result<usize> {
        let shape = &self.try_node(x)?.shape;
        shape.axis(axis).ok_or_else(|| IrError::BadOperands {
            op: op.into(),
            msg: format!("axis {axis} out of range for shape {shape}"),
            operands: String::new(),
        })
    }

    /// 0, 1, 2, … along `axis` of a tensor of `shape`.
    pub fn iota(&mut self, dtype: DType, shape: impl Into<Shape>, axis: usize) -> Result<NodeId> {
        let shape = shape.into();
        let op = Op::Iota { axis };
        op.check_self_typed(dtype, &shape, &[])?;
        Ok(self.add_unchecked(
            Node {
                op,
                dtype,
                shape,
                label: None,
            },
            &[],
        ))
    }

    /// Random f32 numbers of `shape` from (seed, offset), both i64 scalars (see [`Op::Rng`]).
    pub fn rng(
        &mut self,
        dist: RngDist,
        stream: u32,
        seed: NodeId,
        offset: NodeId,
        shape: impl Into<Shape>,
    ) -> Result<NodeId> {
        let shape = shape.into();
        let op = Op::Rng { dist, stream };
        let types = [
            (self.try_node(seed)?.dtype, &self.try_node(seed)?.shape),
            (self.try_node(offset)?.dtype, &self.try_node(offset)?.shape),
        ];
        op.check_self_typed(DType::F32, &shape, &types)?;
        Ok(self.add_unchecked(
            Node {
                op,
                dtype: DType::F32,
                shape,
                label: None,
            },
            &[seed, offset],
        ))
    }

    /// The window `[start, end)` along one axis (other axes whole).
    pub fn slice_axis(&mut self, x: NodeId, axis: i64, start: usize, end: usize) -> Result<NodeId> {
        let a = self.axis_of(x, axis, "slice")?;
        let dims = self.try_node(x)?.shape.0.clone();
        let mut s = vec![0; dims.len()];
        let mut e = dims;
        s[a] = start;
        e[a] = end;
        self.add(Op::Slice { start: s, end: e }, &[x])
    }

    /// Constant padding `lo`/`hi` per dim.
    pub fn pad(&mut self, x: NodeId, lo: &[usize], hi: &[usize], value: f64) -> Result<NodeId> {
        self.add(
            Op::Pad {
                lo: lo.to_vec(),
                hi: hi.to_vec(),
                value,
            },
            &[x],
        )
    }

    /// Concatenation along `axis`.
    pub fn concat(&mut self, xs: &[NodeId], axis: i64) -> Result<NodeId> {
        let first = *xs.first().ok_or_else(|| IrError::BadOperands {
            op: "concat".into(),
            msg: "nothing to concatenate".into(),
            operands: String::new(),
        })?;
        let a = self.axis_of(first, axis, "concat")?;
        self.add(
            Op::Concat {
                axis: a,
                count: xs.len(),
            },
            xs,
        )
    }

    /// Take along `axis` (see [`Op::Gather`]).
    pub fn gather(&mut self, x: NodeId, idx: NodeId, axis: i64) -> Result<NodeId> {
        let a = self.axis_of(x, axis, "gather")?;
        self.add(Op::Gather { axis: a }, &[x, idx])
    }

    /// Scatter-add along `axis` (see [`Op::ScatterAdd`]).
    pub fn scatter_add(
        &mut self,
        base: NodeId,
        idx: NodeId,
        src: NodeId,
        axis: i64,
    ) -> Result<NodeId> {
        let a = self.axis_of(base, axis, "scatter_add")?;
        self.add(Op::ScatterAdd { axis: a }, &[base, idx, src])
    }

    /// Indices of the `k` largest along `axis` (see [`Op::TopK`]).
    pub fn topk(&mut self, x: NodeId, k: usize, axis: i64) -> Result<NodeId> {
        let a = self.axis_of(x, axis, "topk")?;
        self.add(Op::TopK { k, axis: a }, &[x])
    }

    /// Index of the largest value along `axis` (first of equal maxima), keeping the axis as 1.
    pub fn argmax(&mut self, x: NodeId, axis: i64) -> Result<NodeId> {
        self.topk(x, 1, axis)
    }

    /// Inclusive cumulative sum along `axis`.
    pub fn cumsum(&mut self, x: NodeId, axis: i64, reverse: bool) -> Result<NodeId> {
        let a = self.axis_of(x, axis, "cumsum")?;
        self.add(Op::CumSum { axis: a, reverse }, &[x])
    }

    /// 2-D convolution (see [`Op::Conv2d`]).
    pub fn conv2d(&mut self, x: NodeId, w: NodeId, geom: ConvGeom) -> Result<NodeId> {
        self.add(Op::Conv2d { geom }, &[x, w])
    }

    /// Shorthand for a scalar i64 constant.
    pub fn scalar_i64(&mut self, v: i64) -> Result<NodeId> {
        self.add_constant(DType::I64, Shape::scalar(), Literal::Int(vec![v]))
    }
}
