#!/usr/bin/env python3
"""Layering checks that the compiler does not make:

1. No import cycle between the files (modules) of a crate. A file's dependencies are the
   modules it names as `crate::a::b` or `super::x` (in `use` lines and paths); an edge from a
   module to one of its own submodules or parents is not counted (a `mod.rs` declares and
   re-exports its children). Cargo already rejects cycles between crates.
2. The graph builders of mmada-models (see models/src/lib.rs) use nothing but mmada-ir: no
   `mmada_runtime`, `mmada_codegen` or `mmada_passes` in their files.

Prints the cycles or offending files and exits 1; prints a summary and exits 0 otherwise.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = {"ir": "ir/src", "passes": "passes/src", "codegen": "codegen/src",
          "runtime": "runtime/src", "models": "models/src", "mmada": "src"}
BUILDERS = ["clip.rs", "config.rs", "expr.rs", "llada.rs", "loss.rs", "selfcheck.rs", "spec.rs",
            "train_step.rs", "magvit.rs", "multimodal_step.rs", "sampler_step.rs", "unigrpo_step.rs",
            "nn"]


def modules(src):
    """Module path (tuple) -> file, for every .rs file under src."""
    out = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            out[tuple(rel)] = os.path.join(dirpath, f)
    return out


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def deps(mod, path, mods):
    text = strip_comments(open(path, encoding="utf-8").read())
    # Expand `use crate::{a, b::c}` groups into paths.
    found = set()
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+|::\{)", text):
        start = m.start()
        # read the whole path expression, braces included
        depth, i = 0, start
        while i < len(text):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                if depth == 0:
                    break
                depth -= 1
            elif c in ";()=" and depth == 0:
                break
            elif c in ", \n" and depth == 0 and i > m.end():
                break
            i += 1
        expr = re.sub(r"\s+", "", text[start:i])
        for p in expand(expr):
            parts = p.split("::")
            if parts[0] == "crate":
                base = []
            else:  # super: relative to the parent of this module (of a mod.rs, its own parent)
                is_dir = os.path.basename(path) in ("mod.rs",)
                base = list(mod[:-1]) if not is_dir else list(mod[:-1])
            names = parts[1:]
            while names and names[0] == "super":
                base = base[:-1]
                names = names[1:]
            # the longest prefix that is a module
            target = None
            for k in range(len(names), -1, -1):
                cand = tuple(base + names[:k])
                if cand in mods:
                    target = cand
                    break
            if target is not None:
                found.add(target)
    return {t for t in found if t != mod and t[: len(mod)] != mod and mod[: len(t)] != t}


def expand(expr):
    """`crate::a::{b, c::d}` -> [`crate::a::b`, `crate::a::c::d`]."""
    m = re.match(r"^(.*?)::\{(.*)\}$", expr)
    if not m:
        return [expr]
    head, body = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for c in body:
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += c == "{"
        depth -= c == "}"
        cur += c
    parts.append(cur)
    out = []
    for p in parts:
        if p in ("", "self"):
            out.append(head)
        else:
            out.extend(expand(head + "::" + p))
    return out


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return comps


def main():
    bad = False
    edges = 0
    for crate, src in CRATES.items():
        mods = modules(os.path.join(ROOT, src))
        graph = {m: deps(m, p, mods) for m, p in mods.items()}
        edges += sum(len(v) for v in graph.values())
        for comp in cycles(graph):
            bad = True
            names = ["::".join(c) or "lib" for c in comp]
            print(f"import cycle in {crate}: {' <-> '.join(sorted(names))}")
    models = os.path.join(ROOT, "models/src")
    for b in BUILDERS:
        p = os.path.join(models, b)
        files = [p] if p.endswith(".rs") else [os.path.join(p, f) for f in os.listdir(p)]
        for f in files:
            text = strip_comments(open(f, encoding="utf-8").read())
            for other in ("mmada_runtime", "mmada_codegen", "mmada_passes"):
                if other in text:
                    bad = True
                    print(f"{os.path.relpath(f, ROOT)}: a graph builder uses {other}")
    if bad:
        return 1
    print(f"check-imports: {len(CRATES)} crates, {edges} file dependencies, no cycles; "
          f"graph builders use only mmada-ir")
    return 0


if __name__ == "__main__":
    sys.exit(main())
