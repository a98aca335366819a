//! The compiler driver: graph → passes → plan → kernels → machine code → artifact.

use crate::artifact::{Artifact, KernelInfo, Manifest};
use crate::backend::{compile_kernels, BackendOptions};
use crate::plan::plan;
use crate::ptxas;
use crate::CodegenError;
use indexmap::IndexMap;
use mmada_ir::{serialize, verify, Graph};
use sha2::{Digest, Sha256};

/// Whether to assemble the PTX with ptxas while compiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtxCheck {
    /// When ptxas can be found.
    Auto,
    /// Always; missing ptxas is an error.
    Require,
    /// Never.
    Skip,
}

/// Options of [`compile`].
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Name recorded in the manifest.
    pub name: String,
    /// Targets and dumps.
    pub backend: BackendOptions,
    /// ptxas validation.
    pub ptx_check: PtxCheck,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            name: "graph".into(),
            backend: BackendOptions::default(),
            ptx_check: PtxCheck::Auto,
        }
    }
}

/// The LLVM version linked into this build, "major.minor.patch".
pub fn llvm_version() -> String {
    let (a, b, c) = inkwell::support::get_llvm_version();
    format!("{a}.{b}.{c}")
}

/// Compiles a graph into an artifact.
pub fn compile(graph: &Graph, opts: &CompileOptions) -> Result<Artifact, CodegenError> {
    verify(graph)?;
    if graph.outputs().is_empty() {
        return Err(CodegenError::Unsupported {
            node: "graph".into(),
            msg: "it has no outputs".into(),
        });
    }
    let source = serialize::to_json(graph)?;
    let mut g = graph.clone();
    let mut pm = mmada_passes::default_pipeline();
    pm.verify_each(true);
    pm.run(&mut g)?;
    let planned_json = serialize::to_json(&g)?;
    let planned = plan(&g)?;
    let disjoint = crate::plan::disjoint_kernels(&planned.plan, &planned.kernels);
    let compiled = compile_kernels(&planned.kernels, &disjoint, &opts.backend)?;

    let mut kernels: Vec<KernelInfo> = planned
        .kernels
        .iter()
        .map(|k| KernelInfo {
            name: k.name.clone(),
            grid: k.grid,
            block: k.block,
            ptxas: Vec::new(),
        })
        .collect();
    let ptxas_bin = match opts.ptx_check {
        PtxCheck::Skip => None,
        PtxCheck::Auto => ptxas::find_ptxas(),
        PtxCheck::Require => Some(ptxas::find_ptxas().ok_or_else(|| CodegenError::Ptxas {
            arch: "-".into(),
            msg: "ptxas not found (set MMADA_PTXAS or put ptxas on PATH)".into(),
        })?),
    };
    if let Some(bin) = &ptxas_bin {
        for (arch, ptx) in &compiled.ptx {
            for info in ptxas::assemble(bin, ptx, *arch)? {
                if let Some(k) = kernels.iter_mut().find(|k| k.name == info.name) {
                    k.ptxas.push((*arch, info));
                }
            }
        }
    }

    let mut sections: IndexMap<String, Vec<u8>> = IndexMap::new();
    sections.insert("graph.source.json".into(), source.clone().into_bytes());
    sections.insert("graph.planned.json".into(), planned_json.into_bytes());
    sections.insert(
        "plan.json".into(),
        serde_json::to_vec(&planned.plan).map_err(|e| CodegenError::Kir(e.to_string()))?,
    );
    sections.insert("constants.bin".into(), planned.constants);
    sections.insert(
        "kernels.kir.json".into(),
        serde_json::to_vec(&planned.kernels).map_err(|e| CodegenError::Kir(e.to_string()))?,
    );
    if let Some(lib) = compiled.host_lib {
        sections.insert("host.so".into(), lib);
    }
    for (arch, ptx) in &compiled.ptx {
        sections.insert(format!("ptx.sm_{arch}"), ptx.clone().into_bytes());
    }
    Ok(Artifact {
        manifest: Manifest {
            format: "mmada-artifact".into(),
            mmada_version: env!("CARGO_PKG_VERSION").into(),
            llvm_version: llvm_version(),
            name: opts.name.clone(),
            graph_sha256: hex::encode(Sha256::digest(source.as_bytes())),
            host_cpu: opts.backend.host.clone(),
            gpu_archs: compiled.ptx.iter().map(|(a, _)| *a).collect(),
            ptx_features: crate::llvm::PTX_FEATURES.into(),
            kernels,
            sections: Vec::new(),
        },
        sections,
    })
}
