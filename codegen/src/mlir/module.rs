//! Module construction, pass pipelines and translation to LLVM IR.

use super::emit::{val, Emitter, Target};
use crate::kir::Kernel;
use crate::CodegenError;
use melior::{
    ir::{
        attribute::{
            DenseI32ArrayAttribute, FlatSymbolRefAttribute, IntegerAttribute, StringAttribute,
            TypeAttribute,
        },
        operation::{OperationBuilder, OperationLike, OperationMutLike},
        r#type::{FunctionType, IntegerType},
        Attribute, Block, BlockLike, Identifier, Location, Module, Region, RegionLike, Type,
        ValueLike,
    },
    pass::PassManager,
    utility::parse_pass_pipeline,
    Context,
};

/// LLVM IR text and the MLIR stages that produced it (for dumps).
pub struct MlirOutput {
    /// MLIR as built.
    pub built: String,
    /// MLIR after the conversion pipeline.
    pub lowered: String,
    /// LLVM IR text.
    pub llvm_ir: String,
}

fn mlir_err(what: &str, e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Mlir(format!("{what}: {e}"))
}

/// Host pipeline: lower everything to the LLVM dialect with bare-pointer memref arguments.
const HOST_PIPELINE: &str = "builtin.module(canonicalize, cse, convert-scf-to-cf, \
    convert-cf-to-llvm, convert-arith-to-llvm, convert-index-to-llvm, expand-strided-metadata, \
    finalize-memref-to-llvm, convert-func-to-llvm{use-bare-ptr-memref-call-conv=1}, \
    reconcile-unrealized-casts)";

/// GPU pipeline: inside the gpu.module, lower to NVVM with bare-pointer kernel arguments.
const GPU_PIPELINE: &str = "builtin.module(gpu.module(canonicalize, cse, convert-scf-to-cf, \
    convert-gpu-to-nvvm{use-bare-ptr-memref-call-conv=1}, canonicalize, cse, \
    reconcile-unrealized-casts))";

fn run_pipeline(c: &Context, m: &mut Module, pipeline: &str) -> Result<(), CodegenError> {
    let pm = PassManager::new(c);
    pm.enable_verifier(true);
    parse_pass_pipeline(pm.as_operation_pass_manager(), pipeline)
        .map_err(|e| mlir_err("pass pipeline", e))?;
    pm.run(m)
        .map_err(|e| mlir_err("running the pass pipeline", e))
}

fn to_llvm_ir(raw: mlir_sys::MlirOperation) -> Result<String, CodegenError> {
    // SAFETY: `raw` is a live module-like operation; the returned C string is owned by us.
    let s = unsafe { mlir_sys::mlirTranslateModuleToLLVMIRToString(raw) };
    if s.is_null() {
        return Err(CodegenError::Mlir(
            "translation to LLVM IR failed (see diagnostics above)".into(),
        ));
    }
    let text = unsafe { std::ffi::CStr::from_ptr(s) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: allocated with malloc by the MLIR C API.
    unsafe { libc_free(s as *mut std::ffi::c_void) };
    Ok(text)
}

extern "C" {
    #[link_name = "free"]
    fn libc_free(p: *mut std::ffi::c_void);
}

fn func_type<'c>(c: &'c Context, inputs: &[Type<'c>]) -> Attribute<'c> {
    TypeAttribute::new(FunctionType::new(c, inputs, &[]).into()).into()
}

/// Builds the host module (one `func.func` per kernel taking its buffers and a block range),
/// lowers it and appends the `<name>__entry(void** args, i64 begin, i64 end)` wrappers the
/// runtime calls. Run the host KIR passes first ([`crate::kir::passes::host_pipeline`]: the
/// tensor-core emulation, lane phases). Returns the LLVM IR.
pub fn host_llvm_ir(
    c: &Context,
    kernels: &[Kernel],
    disjoint: &std::collections::HashSet<String>,
) -> Result<MlirOutput, CodegenError> {
    let loc = Location::unknown(c);
    let mut module = Module::new(loc);
    for k in kernels {
        let mut em = Emitter::new(c, Target::Host, k);
        let mut inputs: Vec<Type> = k
            .params
            .iter()
            .map(|p| em.memref(em.storage_ty(p.dtype), p.len, None))
            .collect();
        inputs.push(Type::index(c));
        inputs.push(Type::index(c));
        let entry = Block::new(&inputs.iter().map(|&t| (t, loc)).collect::<Vec<_>>());
        for i in 0..k.params.len() {
            em.params.push(
                entry
                    .argument(i)
                    .map_err(|e| mlir_err("argument", e))?
                    .to_raw(),
            );
        }
        let lo = entry
            .argument(k.params.len())
            .map_err(|e| mlir_err("argument", e))?
            .to_raw();
        let hi = entry
            .argument(k.params.len() + 1)
            .map_err(|e| mlir_err("argument", e))?
            .to_raw();
        em.alloc_entry(&entry)?;
        em.body(&entry, Some((lo, hi)))?;
        em.op(&entry, "func.return", &[], &[], &[])?;
        let region = Region::new();
        region.append_block(entry);
        let mut attrs = vec![
            (
                Identifier::new(c, "sym_name"),
                StringAttribute::new(c, &k.name).into(),
            ),
            (Identifier::new(c, "function_type"), func_type(c, &inputs)),
        ];
        if disjoint.contains(&k.name) {
            // Every buffer parameter `noalias`; the block range arguments nothing.
            let mut args = vec!["{llvm.noalias}"; k.params.len()];
            args.extend(["{}", "{}"]);
            let text = format!("[{}]", args.join(", "));
            let a = Attribute::parse(c, &text).ok_or_else(|| mlir_err("arg_attrs", &text))?;
            attrs.push((Identifier::new(c, "arg_attrs"), a));
        }
        let f = OperationBuilder::new("func.func", loc)
            .add_attributes(&attrs)
            .add_regions([region])
            .build()
            .map_err(|e| mlir_err("func.func", e))?;
        module.body().append_operation(f);
    }
    if !module.as_operation().verify() {
        return Err(CodegenError::Mlir(format!(
            "the host module does not verify:\n{}",
            module.as_operation()
        )));
    }
    let built = module.as_operation().to_string();
    run_pipeline(c, &mut module, HOST_PIPELINE)?;
    for k in kernels {
        add_host_entry(c, &module, &k.name, k.params.len())?;
    }
    if !module.as_operation().verify() {
        return Err(CodegenError::Mlir(
            "host entry wrappers do not verify".into(),
        ));
    }
    let lowered = module.as_operation().to_string();
    let llvm_ir = to_llvm_ir(module.as_operation().to_raw())?;
    Ok(MlirOutput {
        built,
        lowered,
        llvm_ir,
    })
}

/// `void <name>__entry(void** args, i64 begin, i64 end)`: loads the buffer pointers and calls the
/// lowered kernel function, so the runtime needs one calling convention for every kernel.
fn add_host_entry(c: &Context, module: &Module, name: &str, n: usize) -> Result<(), CodegenError> {
    let loc = Location::unknown(c);
    let ptr = Type::parse(c, "!llvm.ptr").ok_or_else(|| mlir_err("type", "!llvm.ptr"))?;
    let i64t: Type = IntegerType::new(c, 64).into();
    let block = Block::new(&[(ptr, loc), (i64t, loc), (i64t, loc)]);
    let args = block.argument(0).map_err(|e| mlir_err("argument", e))?;
    let mut call_args = Vec::with_capacity(n + 2);
    for i in 0..n {
        let gep = OperationBuilder::new("llvm.getelementptr", loc)
            .add_operands(&[args.into()])
            .add_attributes(&[
                (
                    Identifier::new(c, "rawConstantIndices"),
                    DenseI32ArrayAttribute::new(c, &[i as i32]).into(),
                ),
                (
                    Identifier::new(c, "elem_type"),
                    TypeAttribute::new(ptr).into(),
                ),
            ])
            .add_results(&[ptr])
            .build()
            .map_err(|e| mlir_err("gep", e))?;
        let g = block.append_operation(gep);
        let g = g.result(0).map_err(|e| mlir_err("gep", e))?;
        let ld = OperationBuilder::new("llvm.load", loc)
            .add_operands(&[g.into()])
            .add_results(&[ptr])
            .build()
            .map_err(|e| mlir_err("load", e))?;
        let l = block.append_operation(ld);
        call_args.push(l.result(0).map_err(|e| mlir_err("load", e))?.to_raw());
    }
    call_args.push(
        block
            .argument(1)
            .map_err(|e| mlir_err("argument", e))?
            .to_raw(),
    );
    call_args.push(
        block
            .argument(2)
            .map_err(|e| mlir_err("argument", e))?
            .to_raw(),
    );
    let operands: Vec<_> = call_args.iter().map(|&v| val(v)).collect();
    let call = OperationBuilder::new("llvm.call", loc)
        .add_operands(&operands)
        .add_attributes(&[
            (
                Identifier::new(c, "callee"),
                FlatSymbolRefAttribute::new(c, name).into(),
            ),
            (
                Identifier::new(c, "operandSegmentSizes"),
                DenseI32ArrayAttribute::new(c, &[call_args.len() as i32, 0]).into(),
            ),
            (
                Identifier::new(c, "op_bundle_sizes"),
                DenseI32ArrayAttribute::new(c, &[]).into(),
            ),
        ])
        .build()
        .map_err(|e| mlir_err("call", e))?;
    block.append_operation(call);
    block.append_operation(
        OperationBuilder::new("llvm.return", loc)
            .build()
            .map_err(|e| mlir_err("return", e))?,
    );
    let region = Region::new();
    region.append_block(block);
    let fty = Type::parse(c, "!llvm.func<void (ptr, i64, i64)>")
        .ok_or_else(|| mlir_err("type", "llvm.func"))?;
    let f = OperationBuilder::new("llvm.func", loc)
        .add_attributes(&[
            (
                Identifier::new(c, "sym_name"),
                StringAttribute::new(c, &format!("{name}__entry")).into(),
            ),
            (
                Identifier::new(c, "function_type"),
                TypeAttribute::new(fty).into(),
            ),
        ])
        .add_regions([region])
        .build()
        .map_err(|e| mlir_err("llvm.func", e))?;
    module.body().append_operation(f);
    Ok(())
}

/// Builds one `gpu.module` holding a `gpu.func` kernel per KIR kernel, lowers it to NVVM and
/// translates it to LLVM IR (target triple and data layout are set by [`crate::llvm`]).
pub fn gpu_llvm_ir(c: &Context, kernels: &[Kernel]) -> Result<MlirOutput, CodegenError> {
    let loc = Location::unknown(c);
    let mut module = Module::new(loc);
    let gblock = Block::new(&[]);
    for k in kernels {
        let mut em = Emitter::new(c, Target::Gpu, k);
        let inputs: Vec<Type> = k
            .params
            .iter()
            .map(|p| em.memref(em.storage_ty(p.dtype), p.len, None))
            .collect();
        let mut args: Vec<(Type, Location)> = inputs.iter().map(|&t| (t, loc)).collect();
        let (dyn_offsets, _) = k.dynamic_shared_layout();
        let static_shared: Vec<usize> = (0..k.shared.len())
            .filter(|&i| dyn_offsets[i].is_none())
            .collect();
        for s in static_shared.iter().map(|&i| &k.shared[i]) {
            args.push((
                em.memref(
                    em.storage_ty(s.dtype),
                    s.len,
                    Some("#gpu.address_space<workgroup>"),
                ),
                loc,
            ));
        }
        let entry = Block::new(&args);
        for i in 0..k.params.len() {
            em.params
                .push(entry.argument(i).map_err(|e| mlir_err("arg", e))?.to_raw());
        }
        // Shared buffers in declaration order: static ones are workgroup attributions,
        // dynamic ones views of the launch's dynamic shared memory at their offsets.
        let mut dynamic_base = None;
        for (i, s) in k.shared.iter().enumerate() {
            let v = match dyn_offsets[i] {
                None => {
                    let slot = static_shared.iter().position(|&j| j == i).unwrap_or(0);
                    entry
                        .argument(k.params.len() + slot)
                        .map_err(|e| mlir_err("arg", e))?
                        .to_raw()
                }
                Some(offset) => {
                    let bytes_ty = Type::parse(c, "memref<?xi8, #gpu.address_space<workgroup>>")
                        .ok_or_else(|| mlir_err("type", "dynamic shared memref"))?;
                    let base = match dynamic_base {
                        Some(b) => b,
                        None => {
                            let b = em
                                .op(&entry, "gpu.dynamic_shared_memory", &[], &[bytes_ty], &[])?
                                .ok_or_else(|| mlir_err("op", "gpu.dynamic_shared_memory"))?;
                            dynamic_base = Some(b);
                            b
                        }
                    };
                    let at = em.idx(&entry, offset)?;
                    let ty = em.memref(
                        em.storage_ty(s.dtype),
                        s.len,
                        Some("#gpu.address_space<workgroup>"),
                    );
                    em.op(&entry, "memref.view", &[base, at], &[ty], &[])?
                        .ok_or_else(|| mlir_err("op", "memref.view"))?
                }
            };
            em.shared.push(v);
        }
        em.alloc_entry(&entry)?;
        em.body(&entry, None)?;
        em.op(&entry, "gpu.return", &[], &[], &[])?;
        let region = Region::new();
        region.append_block(entry);
        let f = OperationBuilder::new("gpu.func", loc)
            .add_attributes(&[
                (
                    Identifier::new(c, "sym_name"),
                    StringAttribute::new(c, &k.name).into(),
                ),
                (Identifier::new(c, "function_type"), func_type(c, &inputs)),
                (Identifier::new(c, "gpu.kernel"), Attribute::unit(c)),
                (
                    Identifier::new(c, "workgroup_attributions"),
                    IntegerAttribute::new(
                        IntegerType::new(c, 64).into(),
                        static_shared.len() as i64,
                    )
                    .into(),
                ),
                (
                    Identifier::new(c, "known_block_size"),
                    DenseI32ArrayAttribute::new(c, &[k.block as i32, 1, 1]).into(),
                ),
            ])
            .add_regions([region])
            .build()
            .map_err(|e| mlir_err("gpu.func", e))?;
        gblock.append_operation(f);
    }
    let gregion = Region::new();
    gregion.append_block(gblock);
    let gmod = OperationBuilder::new("gpu.module", loc)
        .add_attributes(&[(
            Identifier::new(c, "sym_name"),
            StringAttribute::new(c, "mmada_kernels").into(),
        )])
        .add_regions([gregion])
        .build()
        .map_err(|e| mlir_err("gpu.module", e))?;
    module.body().append_operation(gmod);
    module
        .as_operation_mut()
        .set_attribute("gpu.container_module", Attribute::unit(c));
    if !module.as_operation().verify() {
        return Err(CodegenError::Mlir(format!(
            "the GPU module does not verify:\n{}",
            module.as_operation()
        )));
    }
    let built = module.as_operation().to_string();
    run_pipeline(c, &mut module, GPU_PIPELINE)?;
    let lowered = module.as_operation().to_string();
    let gpu_module = module
        .body()
        .first_operation()
        .ok_or_else(|| CodegenError::Mlir("the module lost its gpu.module".into()))?;
    let llvm_ir = to_llvm_ir(gpu_module.to_raw())?;
    Ok(MlirOutput {
        built,
        lowered,
        llvm_ir,
    })
}
