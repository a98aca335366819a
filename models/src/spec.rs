//! Graph specs: a TOML file with named inputs, optional named intermediates and outputs, each
//! defined by an expression.
//!
//! ```toml
//! name = "softmax_linear"
//! [inputs]
//! x = { dtype = "f32", shape = [37, 53] }
//! w = { dtype = "f32", shape = [53, 29] }
//! b = { dtype = "f32", shape = [29] }
//! [let]            # optional, evaluated in order
//! z = "x @ w + b"
//! [outputs]
//! y = "softmax(z, -1)"
//! ```

use crate::expr;
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_ir::{DType, Graph, NodeId, Role};
use serde::Deserialize;
use std::path::Path;

/// One input declaration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Dtype name ("f32", "bf16", "i64", ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// "data" (default), "param" or "state".
    #[serde(default)]
    pub role: Option<String>,
}

/// A parsed spec.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    /// Name recorded in artifacts.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Inputs, in order.
    pub inputs: IndexMap<String, InputSpec>,
    /// Named intermediates, evaluated in order.
    #[serde(default, rename = "let")]
    pub lets: IndexMap<String, String>,
    /// Outputs, in order.
    pub outputs: IndexMap<String, String>,
}

impl GraphSpec {
    /// Parses spec text (`path` is used in messages).
    pub fn parse(text: &str, path: &str) -> Result<GraphSpec, ModelsError> {
        toml::from_str(text).map_err(|e| ModelsError::Toml {
            path: path.to_string(),
            msg: e.to_string().trim().to_string(),
        })
    }

    /// Reads and parses a spec file.
    pub fn read(path: &Path) -> Result<GraphSpec, ModelsError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelsError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        GraphSpec::parse(&text, &path.display().to_string())
    }

    /// Builds the graph.
    pub fn build(&self, path: &str) -> Result<Graph, ModelsError> {
        let field = |f: String, msg: String| ModelsError::Field {
            path: path.to_string(),
            field: f,
            msg,
        };
        if self.outputs.is_empty() {
            return Err(field(
                "outputs".into(),
                "at least one output is required".into(),
            ));
        }
        let mut g = Graph::new();
        let mut env: IndexMap<String, NodeId> = IndexMap::new();
        for (name, inp) in &self.inputs {
            let dtype = DType::parse(&inp.dtype).ok_or_else(|| {
                field(
                    format!("inputs.{name}.dtype"),
                    format!(
                        "unknown dtype '{}' (f32, f16, bf16, i32, i64, bool)",
                        inp.dtype
                    ),
                )
            })?;
            let role = match inp.role.as_deref() {
                None | Some("data") => Role::Data,
                Some("param") => Role::Param,
                Some("state") => Role::State,
                Some(r) => {
                    return Err(field(
                        format!("inputs.{name}.role"),
                        format!("unknown role '{r}' (data, param, state)"),
                    ))
                }
            };
            let id = g
                .add_input(name, role, dtype, inp.shape.clone())
                .map_err(|e| field(format!("inputs.{name}"), e.to_string()))?;
            env.insert(name.clone(), id);
        }
        for (name, text) in &self.lets {
            if env.contains_key(name) {
                return Err(field(format!("let.{name}"), "name already defined".into()));
            }
            let id = expr::eval(&mut g, &env, text).map_err(|(pos, msg)| ModelsError::Expr {
                path: path.to_string(),
                field: format!("let.{name}"),
                expr: text.clone(),
                pos,
                msg,
            })?;
            g.set_label(id, name);
            env.insert(name.clone(), id);
        }
        for (name, text) in &self.outputs {
            let id = expr::eval(&mut g, &env, text).map_err(|(pos, msg)| ModelsError::Expr {
                path: path.to_string(),
                field: format!("outputs.{name}"),
                expr: text.clone(),
                pos,
                msg,
            })?;
            g.set_label(id, name);
            g.set_output(name, id)
                .map_err(|e| field(format!("outputs.{name}"), e.to_string()))?;
        }
        Ok(g)
    }
}

/// Reads a spec file and builds its graph.
pub fn graph_from_file(path: &Path) -> Result<(GraphSpec, Graph), ModelsError> {
    let spec = GraphSpec::read(path)?;
    let g = spec.build(&path.display().to_string())?;
    Ok((spec, g))
}
