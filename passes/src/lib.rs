//! mmada-passes: graph → optimised graph.
//!
//! A [`Pass`] rewrites a [`mmada_ir::Graph`] in place and reports whether it changed anything.
//! The [`PassManager`] runs a pipeline, verifies after each pass (always in debug builds, on
//! request otherwise) and, given a [`DumpSink`], writes numbered dumps of the graph after each
//! pass (`NN-after-<pass>.txt` and `.dot`).

pub mod conv_to_gemm;
pub mod cse;
pub mod dce;
pub mod dump;
pub mod error;
pub mod fuse_attention;
pub mod fuse_elementwise;
pub mod fuse_remask;
pub mod manager;
pub mod simplify_transposes;
pub mod unfuse_attention_grad;

pub use conv_to_gemm::ConvToGemm;
pub use cse::Cse;
pub use dce::Dce;
pub use dump::DumpSink;
pub use error::PassError;
pub use fuse_attention::FuseAttention;
pub use fuse_elementwise::FuseElementwise;
pub use fuse_remask::FuseRemask;
pub use manager::{Pass, PassManager};
pub use simplify_transposes::SimplifyTransposes;
pub use unfuse_attention_grad::UnfuseAttentionGrad;

/// The default optimisation pipeline: DCE, convolutions to im2col + GEMM, transpose
/// simplification, DCE, CSE, attention fusion, remask fusion, elementwise fusion, DCE.
pub fn default_pipeline() -> PassManager {
    pipeline_for(false)
}

/// The pipeline for a build whose only target is the host (`host_only`): the default one
/// with attention's backward pieces first turned back into primitive ops
/// ([`UnfuseAttentionGrad`]), or exactly the default one.
pub fn pipeline_for(host_only: bool) -> PassManager {
    let mut pm = PassManager::new();
    if host_only {
        pm.add(UnfuseAttentionGrad);
    }
    pm.add(Dce);
    pm.add(ConvToGemm);
    pm.add(SimplifyTransposes);
    pm.add(Dce);
    pm.add(Cse);
    pm.add(FuseAttention);
    pm.add(Dce);
    pm.add(FuseRemask);
    pm.add(FuseElementwise::default());
    pm.add(Dce);
    pm
}
