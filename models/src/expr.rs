//! The expression language of graph specs, parsed and turned into graph nodes in one pass.
//!
//! ```text
//! expr    := term (('+' | '-') term)*
//! term    := unary (('*' | '/' | '@') unary)*          # '@' is matrix product, as in Python
//! unary   := '-' unary | primary
//! primary := number | name | name '(' args ')' | '(' expr ')' | '[' ints ']'
//! ```
//! Arithmetic broadcasts NumPy-style; a number next to a tensor takes the tensor's dtype.
//! Functions: exp log sin cos sqrt rsqrt recip abs floor sigmoid neg relu silu;
//! maximum minimum lt le gt ge eq ne where; sum max min mean (x, axis|[axes][, keepdims]);
//! softmax(x, axis); reshape(x, [dims]); permute(x, [perm]); transpose(x);
//! broadcast(x, [dims]); cast(x, dtype); matmul(a, b); attention(q, k, v, scale) (fused
//! softmax attention over `[B, H, T, D]` queries and `[B, Hk, S, D]` keys and values).

use indexmap::IndexMap;
use mmada_ir::{BinaryOp, CompareOp, DType, Graph, NodeId, ReduceOp, UnaryOp};

/// Error: character position and message.
pub type ExprError = (usize, String);

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(f64),
    Name(String),
    Sym(char),
}

fn lex(s: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let cs: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && i + 1 < cs.len() && cs[i + 1].is_ascii_digit())
        {
            let st = i;
            while i < cs.len()
                && (cs[i].is_ascii_digit()
                    || cs[i] == '.'
                    || cs[i] == 'e'
                    || cs[i] == 'E'
                    || ((cs[i] == '-' || cs[i] == '+') && (cs[i - 1] == 'e' || cs[i - 1] == 'E')))
            {
                i += 1;
            }
            let t: String = cs[st..i].iter().collect();
            let v = t
                .parse::<f64>()
                .map_err(|_| (st, format!("bad number '{t}'")))?;
            out.push((st, Tok::Num(v)));
        } else if c.is_alphabetic() || c == '_' {
            let st = i;
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            out.push((st, Tok::Name(cs[st..i].iter().collect())));
        } else if "+-*/@(),[]".contains(c) {
            out.push((i, Tok::Sym(c)));
            i += 1;
        } else {
            return Err((i, format!("unexpected character '{c}'")));
        }
    }
    Ok(out)
}

/// A value during evaluation.
#[derive(Clone, Debug)]
enum Val {
    Tensor(NodeId),
    Num(f64),
    Ints(Vec<i64>),
    Name(String),
}

struct Parser<'a> {
    g: &'a mut Graph,
    env: &'a IndexMap<String, NodeId>,
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
}

type R<T> = Result<T, ExprError>;

fn ir<T>(at: usize, r: mmada_ir::Result<T>) -> R<T> {
    r.map_err(|e| (at, e.to_string()))
}

impl Parser<'_> {
    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |t| t.0)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.1)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Sym(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> R<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err((self.at(), format!("expected '{c}'")))
        }
    }

    fn tensor(&mut self, v: Val, at: usize) -> R<NodeId> {
        match v {
            Val::Tensor(t) => Ok(t),
            Val::Num(x) => ir(at, self.g.full(DType::F32, x, mmada_ir::Shape::scalar())),
            other => Err((at, format!("expected a tensor, got {other:?}"))),
        }
    }

    fn arith(&mut self, op: BinaryOp, a: Val, b: Val, at: usize) -> R<Val> {
        match (&a, &b) {
            (Val::Num(x), Val::Num(y)) => Ok(Val::Num(match op {
                BinaryOp::Add => x + y,
                BinaryOp::Sub => x - y,
                BinaryOp::Mul => x * y,
                BinaryOp::Div => x / y,
                BinaryOp::Max => x.max(*y),
                BinaryOp::Min => x.min(*y),
                _ => return Err((at, "logical op on numbers".into())),
            })),
            (Val::Tensor(t), Val::Num(y)) => {
                let dt = self.g.node(*t).dtype;
                let c = ir(at, self.g.full(dt, *y, mmada_ir::Shape::scalar()))?;
                Ok(Val::Tensor(ir(at, self.g.binary(op, *t, c))?))
            }
            (Val::Num(x), Val::Tensor(t)) => {
                let dt = self.g.node(*t).dtype;
                let c = ir(at, self.g.full(dt, *x, mmada_ir::Shape::scalar()))?;
                Ok(Val::Tensor(ir(at, self.g.binary(op, c, *t))?))
            }
            (Val::Tensor(x), Val::Tensor(y)) => Ok(Val::Tensor(ir(at, self.g.binary(op, *x, *y))?)),
            _ => Err((at, "arithmetic needs tensors or numbers".into())),
        }
    }

    fn expr(&mut self) -> R<Val> {
        let mut v = self.term()?;
        loop {
            let at = self.at();
            if self.eat('+') {
                let r = self.term()?;
                v = self.arith(BinaryOp::Add, v, r, at)?;
            } else if self.eat('-') {
                let r = self.term()?;
                v = self.arith(BinaryOp::Sub, v, r, at)?;
            } else {
                return Ok(v);
            }
        }
    }

    fn term(&mut self) -> R<Val> {
        let mut v = self.unary()?;
        loop {
            let at = self.at();
            if self.eat('*') {
                let r = self.unary()?;
                v = self.arith(BinaryOp::Mul, v, r, at)?;
            } else if self.eat('/') {
                let r = self.unary()?;
                v = self.arith(BinaryOp::Div, v, r, at)?;
            } else if self.eat('@') {
                let r = self.unary()?;
                let a = self.tensor(v, at)?;
                let b = self.tensor(r, at)?;
                v = Val::Tensor(ir(at, self.g.matmul(a, b))?);
            } else {
                return Ok(v);
            }
        }
    }

    fn unary(&mut self) -> R<Val> {
        let at = self.at();
        if self.eat('-') {
            return match self.unary()? {
                Val::Num(x) => Ok(Val::Num(-x)),
                v => {
                    let t = self.tensor(v, at)?;
                    Ok(Val::Tensor(ir(at, self.g.unary(UnaryOp::Neg, t))?))
                }
            };
        }
        self.primary()
    }

    fn primary(&mut self) -> R<Val> {
        let at = self.at();
        match self.peek().cloned() {
            Some(Tok::Num(v)) => {
                self.pos += 1;
                Ok(Val::Num(v))
            }
            Some(Tok::Sym('(')) => {
                self.pos += 1;
                let v = self.expr()?;
                self.expect(')')?;
                Ok(v)
            }
            Some(Tok::Sym('[')) => {
                self.pos += 1;
                let mut xs = Vec::new();
                if !self.eat(']') {
                    loop {
                        let p = self.at();
                        match self.unary()? {
                            Val::Num(x) if x.fract() == 0.0 => xs.push(x as i64),
                            _ => return Err((p, "lists hold integers".into())),
                        }
                        if self.eat(']') {
                            break;
                        }
                        self.expect(',')?;
                    }
                }
                Ok(Val::Ints(xs))
            }
            Some(Tok::Name(n)) => {
                self.pos += 1;
                if self.eat('(') {
                    let mut args = Vec::new();
                    if !self.eat(')') {
                        loop {
                            let p = self.at();
                            args.push((p, self.expr()?));
                            if self.eat(')') {
                                break;
                            }
                            self.expect(',')?;
                        }
                    }
                    return self.call(&n, args, at);
                }
                if let Some(&id) = self.env.get(&n) {
                    return Ok(Val::Tensor(id));
                }
                Ok(Val::Name(n))
            }
            Some(Tok::Sym(c)) => Err((at, format!("unexpected '{c}'"))),
            None => Err((at, "unexpected end of expression".into())),
        }
    }

    fn axes(&self, v: &Val, at: usize) -> R<Vec<i64>> {
        match v {
            Val::Num(x) if x.fract() == 0.0 => Ok(vec![*x as i64]),
            Val::Ints(xs) => Ok(xs.clone()),
            _ => Err((at, "expected an axis or a list of axes".into())),
        }
    }

    fn dims(&self, v: &Val, at: usize) -> R<Vec<usize>> {
        match v {
            Val::Ints(xs) if xs.iter().all(|&x| x >= 0) => {
                Ok(xs.iter().map(|&x| x as usize).collect())
            }
            _ => Err((at, "expected a list of non-negative integers".into())),
        }
    }

    fn call(&mut self, f: &str, args: Vec<(usize, Val)>, at: usize) -> R<Val> {
        let arity = |n: std::ops::RangeInclusive<usize>| -> R<()> {
            if n.contains(&args.len()) {
                Ok(())
            } else {
                Err((at, format!("{f} takes {n:?} arguments, got {}", args.len())))
            }
        };
        let unary = match f {
            "exp" => Some(UnaryOp::Exp),
            "log" => Some(UnaryOp::Log),
            "sin" => Some(UnaryOp::Sin),
            "cos" => Some(UnaryOp::Cos),
            "sqrt" => Some(UnaryOp::Sqrt),
            "rsqrt" => Some(UnaryOp::Rsqrt),
            "recip" => Some(UnaryOp::Recip),
            "abs" => Some(UnaryOp::Abs),
            "floor" => Some(UnaryOp::Floor),
            "sigmoid" => Some(UnaryOp::Sigmoid),
            "stop_gradient" => Some(UnaryOp::StopGradient),
            "neg" => Some(UnaryOp::Neg),
            _ => None,
        };
        if let Some(op) = unary {
            arity(1..=1)?;
            let x = self.tensor(args[0].1.clone(), args[0].0)?;
            return Ok(Val::Tensor(ir(at, self.g.unary(op, x))?));
        }
        let cmp = match f {
            "lt" => Some(CompareOp::Lt),
            "le" => Some(CompareOp::Le),
            "gt" => Some(CompareOp::Gt),
            "ge" => Some(CompareOp::Ge),
            "eq" => Some(CompareOp::Eq),
            "ne" => Some(CompareOp::Ne),
            _ => None,
        };
        if let Some(op) = cmp {
            arity(2..=2)?;
            let a = self.tensor(args[0].1.clone(), args[0].0)?;
            let b = match args[1].1 {
                Val::Num(x) => {
                    let dt = self.g.node(a).dtype;
                    ir(at, self.g.full(dt, x, mmada_ir::Shape::scalar()))?
                }
                ref v => self.tensor(v.clone(), args[1].0)?,
            };
            return Ok(Val::Tensor(ir(at, self.g.compare(op, a, b))?));
        }
        match f {
            "maximum" | "minimum" => {
                arity(2..=2)?;
                let op = if f == "maximum" {
                    BinaryOp::Max
                } else {
                    BinaryOp::Min
                };
                self.arith(op, args[0].1.clone(), args[1].1.clone(), at)
            }
            "relu" => {
                arity(1..=1)?;
                self.arith(BinaryOp::Max, args[0].1.clone(), Val::Num(0.0), at)
            }
            "silu" => {
                arity(1..=1)?;
                let x = self.tensor(args[0].1.clone(), args[0].0)?;
                let s = ir(at, self.g.unary(UnaryOp::Sigmoid, x))?;
                Ok(Val::Tensor(ir(at, self.g.mul(x, s))?))
            }
            "matmul" => {
                arity(2..=2)?;
                let a = self.tensor(args[0].1.clone(), args[0].0)?;
                let b = self.tensor(args[1].1.clone(), args[1].0)?;
                Ok(Val::Tensor(ir(at, self.g.matmul(a, b))?))
            }
            "where" => {
                arity(3..=3)?;
                let c = self.tensor(args[0].1.clone(), args[0].0)?;
                let a = self.tensor(args[1].1.clone(), args[1].0)?;
                let b = self.tensor(args[2].1.clone(), args[2].0)?;
                Ok(Val::Tensor(ir(at, self.g.where_(c, a, b))?))
            }
            "sum" | "max" | "min" | "mean" => {
                arity(2..=3)?;
                let x = self.tensor(args[0].1.clone(), args[0].0)?;
                let axes = self.axes(&args[1].1, args[1].0)?;
                let keep = match args.get(2) {
                    None => false,
                    Some((_, Val::Name(n))) if n == "true" || n == "keepdims" => true,
                    Some((_, Val::Name(n))) if n == "false" => false,
                    Some((p, _)) => return Err((*p, "keepdims must be true or false".into())),
                };
                let t = if f == "mean" {
                    if axes.len() != 1 {
                        return Err((args[1].0, "mean takes one axis".into()));
                    }
                    ir(at, self.g.mean(x, axes[0], keep))?
                } else {
                    let op = match f {
                        "sum" => ReduceOp::Sum,
                        "max" => ReduceOp::Max,
                        _ => ReduceOp::Min,
                    };
                    ir(at, self.g.reduce(op, x, &axes, keep))?
                };
                Ok(Val::Tensor(t))
            }
            "softmax" => {
                arity(2..=2)?;
                let x = self.tensor(args[0].1.clone(), args[0].0)?;
                let axes = self.axes(&args[1].1, args[1].0)?;
                if axes.len() != 1 {
                    return Err((args[1].0, "softmax takes one axis".into()));
                }
                Ok(Val::Tensor(ir(at, self.g.softmax(x, axes[0]))?))
            }
            "reshape" | "broadcast" | "permute" => {
                arity(2..=2)?;
                let x = self.tensor(args[0].1.clone(), args[0].0)?;
                let d = self.dims(&args[1].1, args[1].0)?;
                let t = match f {
                    "reshape" => ir(at, self.g.reshape(x, d))?,
                    "broadcast" => ir(at, self.g.broadcast_to(x, d))?,
                    _ => ir(at, self.g.permute(x, &d))?,
                };
                Ok(Val::Tensor(t))
            }
            "attention" => {
                arity(4..=4)?;
                let q = self.tensor(args[0].1.clone(), args[0].0)?;
                let k = self.tensor(args[1].1.clone(), args[1].0)?;
                let v = self.tensor(args[2].1.clone(), args[2].0)?;
                let Val::Num(scale) = args[3].1 else {
                    return Err((args[3].0, "the attention scale must be a number".into()));
                };
                Ok(Val::Tensor(ir(at, self.g.attention(q, k, v, None, scale))?))
            }
            "transpose" => {
                arity(1..=1)?;
                let x = self.tensor(args[0].1.clone(), args[0].0)?;
                Ok(Val::Tensor(ir(at, self.g.transpose(x))?))
            }
            "cast" => {
                arity(2..=2)?;
                let x = self.tensor(args[0].1.clone(), args[0].0)?;
                let dt = match &args[1].1 {
                    Val::Name(n) => DType::parse(n),
                    _ => None,
                }
                .ok_or((args[1].0, "expected a dtype name".to_string()))?;
                Ok(Val::Tensor(ir(at, self.g.cast(x, dt))?))
            }
            _ => Err((at, format!("unknown function '{f}'"))),
        }
    }
}

/// Evaluates `text` over the named tensors in `env`, adding nodes to `g`; returns the result
/// node. A bare number becomes an f32 scalar constant.
pub fn eval(
    g: &mut Graph,
    env: &IndexMap<String, NodeId>,
    text: &str,
) -> Result<NodeId, ExprError> {
    let toks = lex(text)?;
    let mut p = Parser {
        g,
        env,
        toks,
        pos: 0,
        end: text.chars().count(),
    };
    let v = p.expr()?;
    if p.pos != p.toks.len() {
        return Err((p.at(), "unexpected text after the expression".into()));
    }
    match v {
        Val::Name(n) => Err((0, format!("unknown name '{n}'"))),
        Val::Ints(_) => Err((0, "a list is not a tensor".into())),
        v => p.tensor(v, 0),
    }
}
