//! Static tensor shapes.
//!
//! Shapes are fixed at graph-build time (one compiled graph per shape bucket). Tensors are stored
//! densely in row-major order; views (reshape, permute, broadcast) are explicit IR ops.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A static shape: the extent of each dimension, outermost first. The empty shape is a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// Builds a shape from its dimensions.
    pub fn new(dims: impl Into<Vec<usize>>) -> Shape {
        Shape(dims.into())
    }

    /// The scalar shape `[]`.
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Dimensions as a slice.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut strides = vec![1; self.0.len()];
        for i in (0..self.0.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.0[i + 1];
        }
        strides
    }

    /// Linear (row-major) offset of a multi-index.
    pub fn linear(&self, index: &[usize]) -> usize {
        let mut off = 0;
        for (d, &i) in index.iter().enumerate() {
            off = off * self.0[d] + i;
        }
        off
    }

    /// Multi-index of a linear (row-major) offset.
    pub fn unravel(&self, mut linear: usize) -> Vec<usize> {
        let mut idx = vec![0; self.0.len()];
        for d in (0..self.0.len()).rev() {
            let n = self.0[d].max(1);
            idx[d] = linear % n;
            linear /= n;
        }
        idx
    }

    /// Resolves a possibly negative axis (Python style) against this rank.
    pub fn axis(&self, axis: i64) -> Option<usize> {
        let r = self.rank() as i64;
        let a = if axis < 0 { axis + r } else { axis };
        (0..r).contains(&a).then_some(a as usize)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Shape {
        Shape(v)
    }
}

impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Shape {
        Shape(v.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Shape {
        Shape(v.to_vec())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// The shape two shapes broadcast to under NumPy rules (align trailing dims; 1 stretches).
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Option<Shape> {
    let r = a.rank().max(b.rank());
    // Dim `i` of the result, counting from the left of the longer shape.
    let dim = |s: &Shape, i: usize| {
        let pad = r - s.rank();
        if i < pad {
            1
        } else {
            s.0[i - pad]
        }
    };
    (0..r)
        .map(|i| {
            let (da, db) = (dim(a, i), dim(b, i));
            if da == db || db == 1 {
                Some(da)
            } else if da == 1 {
                Some(db)
            } else {
                None
            }
        })
        .collect::<Option<Vec<_>>>()
        .map(Shape)
}

/// True when `from` can be broadcast to `to`: `from` is right-aligned against `to` and each of its
/// dims equals the target dim or is 1.
pub fn can_broadcast(from: &Shape, to: &Shape) -> bool {
    if from.rank() > to.rank() {
        return false;
    }
    let off = to.rank() - from.rank();
    from.0
        .iter()
        .enumerate()
        .all(|(i, &d)| d == to.0[i + off] || d == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_linear_unravel_roundtrip() {
        let s = Shape::new(vec![3, 5, 7]);
        assert_eq!(s.strides(), vec![35, 7, 1]);
        for l in 0..s.numel() {
            assert_eq!(s.linear(&s.unravel(l)), l);
        }
    }

    #[test]
    fn broadcasting_rules() {
        let a = Shape::new(vec![37, 1]);
        let b = Shape::new(vec![29]);
        assert_eq!(broadcast_shapes(&a, &b), Some(Shape::new(vec![37, 29])));
        assert!(broadcast_shapes(&Shape::new(vec![3]), &Shape::new(vec![4])).is_none());
        assert!(can_broadcast(
            &Shape::new(vec![29]),
            &Shape::new(vec![37, 29])
        ));
        assert!(!can_broadcast(
            &Shape::new(vec![2, 29]),
            &Shape::new(vec![37, 29])
        ));
    }
}
