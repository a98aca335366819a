//! Text-to-image generation (spec §6.2, MaskGIT with classifier-free guidance): the compiled
//! image step ([`crate::sampler_step::image_step_graph`]) replayed over the resident t2i
//! layout, then the codes decoded by the image tokenizer.
//!
//! Per step the host computes only scalars: how many positions stay masked (the schedule
//! `⌊N·γ((s+1)/K)⌋`, clamped to `[1, unknown − 1]`, where `unknown` is the previous step's
//! count) and the noise scale on the confidences (the reference's compounding temperature
//! `τ ← τ·(1 − ratio)` by default, MaskGIT's `τ0·(1 − ratio)` as an option).

use crate::config::LladaConfig;
use crate::prompt::Layout;
use crate::sampler_step::{image_step_graph, ImageStepSpec, IMAGE_STEP};
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile_entries, CompileOptions, PtxCheck};
use mmada_ir::{DType, Shape, Tensor};
use mmada_runtime::{open_artifact, Executor, Target};

/// The mask schedule γ(r), r in (0, 1]: the fraction of image positions left masked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// `cos(π·r/2)` (the default).
    Cosine,
    /// `1 − r`, at least 1e-6.
    Linear,
    /// `1 − r^e`.
    Pow(f64),
    /// MUSE's sigmoid schedule (start −3, end 3, τ 1), clipped to [1e-6, 1].
    Sigmoid,
}

impl Schedule {
    /// Parses `cosine`, `linear`, `sigmoid` or `pow<e>` (`pow2`, `pow0.5`).
    pub fn parse(s: &str) -> Result<Schedule, ModelsError> {
        match s {
            "cosine" => Ok(Schedule::Cosine),
            "linear" => Ok(Schedule::Linear),
            "sigmoid" => Ok(Schedule::Sigmoid),
            _ => s
                .strip_prefix("pow")
                .and_then(|e| e.parse::<f64>().ok())
                .filter(|e| e.is_finite() && *e > 0.0)
                .map(Schedule::Pow)
                .ok_or_else(|| {
                    ModelsError::Input(format!(
                        "--schedule {s}: expected cosine, linear, sigmoid or pow<e> (e > 0)"
                    ))
                }),
        }
    }

    /// γ(r).
    pub fn gamma(&self, r: f64) -> f64 {
        match *self {
            Schedule::Cosine => (std::f64::consts::FRAC_PI_2 * r).cos(),
            Schedule::Linear => (1.0 - r).max(1e-6),
            Schedule::Pow(e) => 1.0 - r.powf(e),
            Schedule::Sigmoid => {
                let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
                let (start, end, tau) = (-3.0, 3.0, 1.0);
                let (v0, v1) = (sig(start / tau), sig(end / tau));
                let out = sig((r * (end - start) + start) / tau);
                ((v1 - out) / (v1 - v0)).clamp(1e-6, 1.0)
            }
        }
    }
}

/// How the noise on the confidences shrinks over the steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemperatureRule {
    /// The reference's: the running temperature is multiplied by `1 − ratio` every step.
    Compounding,
    /// MaskGIT's: `τ0·(1 − ratio)`.
    MaskGit,
}

/// Options of the image sampler, named as the reference's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageOptions {
    /// Steps K.
    pub timesteps: usize,
    /// Guidance scale w (0: none).
    pub guidance_scale: f32,
    /// Initial temperature τ0 of the confidence noise.
    pub temperature: f32,
    /// Mask schedule.
    pub schedule: Schedule,
    /// Temperature rule.
    pub temperature_rule: TemperatureRule,
    /// Seed of the Philox streams.
    pub seed: u64,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            timesteps: 15,
            guidance_scale: 3.5,
            temperature: 1.0,
            schedule: Schedule::Cosine,
            temperature_rule: TemperatureRule::Compounding,
            seed: 0,
        }
    }
}

impl ImageOptions {
    /// Checks the options.
    pub fn check(&self) -> Result<(), ModelsError> {
        let bad = |m: String| Err(ModelsError::Input(m));
        if self.timesteps == 0 {
            return bad("--timesteps must be positive".into());
        }
        if !self.guidance_scale.is_finite() || self.guidance_scale < 0.0 {
            return bad(format!(
                "--guidance-scale must be finite and ≥ 0, got {}",
                self.guidance_scale
            ));
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "--temperature must be finite and ≥ 0, got {}",
                self.temperature
            ));
        }
        Ok(())
    }
}

/// Positions left masked after each of `steps` steps over `n` image positions (spec §6.2):
/// `⌊n·γ((s+1)/steps)⌋` clamped to at least 1 and at most `unknown − 1`.
pub fn mask_counts(n: usize, steps: usize, schedule: Schedule) -> Vec<usize> {
    let mut unknown = n;
    (0..steps)
        .map(|s| {
            let ratio = (s + 1) as f64 / steps as f64;
            let want = (n as f64 * schedule.gamma(ratio)).floor() as usize;
            let m = want.min(unknown.saturating_sub(1)).max(1);
            unknown = m;
            m
        })
        .collect()
}

/// The noise scale on the confidences at each step.
pub fn temperatures(t0: f32, steps: usize, rule: TemperatureRule) -> Vec<f32> {
    let mut t = t0 as f64;
    (0..steps)
        .map(|s| {
            let ratio = (s + 1) as f64 / steps as f64;
            match rule {
                TemperatureRule::Compounding => {
                    t *= 1.0 - ratio;
                    t as f32
                }
                TemperatureRule::MaskGit => (t0 as f64 * (1.0 - ratio)) as f32,
            }
        })
        .collect()
}

/// A compiled image sampler with the model's weights resident.
pub struct ImageSampler {
    spec: ImageStepSpec,
    opts: ImageOptions,
    exe: Box<dyn Executor>,
}

impl ImageSampler {
    /// Compiles the step for `batch` t2i layouts like `example` (its image range and length)
    /// over codes `image_offset..image_offset + codebook`, and uploads the weights.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: LladaConfig,
        weights: &IndexMap<String, Tensor>,
        batch: usize,
        example: &Layout,
        (image_offset, codebook): (i64, usize),
        opts: ImageOptions,
        target: Target,
        backend: BackendOptions,
    ) -> Result<ImageSampler, ModelsError> {
        opts.check()?;
        let image = example
            .image
            .clone()
            .ok_or_else(|| ModelsError::Input("the t2i layout has no image part".into()))?;
        if example.len() > cfg.max_sequence_length {
            return Err(ModelsError::Input(format!(
                "the t2i layout has {} positions, more than the model's max_sequence_length {}",
                example.len(),
                cfg.max_sequence_length
            )));
        }
        if image_offset < 0 || image_offset as usize + codebook > cfg.rows() {
            return Err(ModelsError::Input(format!(
                "image ids {image_offset}..{} do not fit the model's {} embedding rows",
                image_offset as usize + codebook,
                cfg.rows()
            )));
        }
        let spec = ImageStepSpec {
            batch,
            seq: example.len(),
            image,
            image_offset,
            codebook,
            cfg: opts.guidance_scale > 0.0,
        };
        let g = image_step_graph(&cfg, &spec)?;
        let copts = CompileOptions {
            name: format!("image_step_b{batch}_l{}", spec.seq),
            backend,
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        };
        let art = compile_entries(&[(IMAGE_STEP, &g)], &copts)?.0;
        let mut exe = open_artifact(art, target)?;
        for (n, t) in weights {
            exe.set_input(n, t)?;
        }
        Ok(ImageSampler { spec, opts, exe })
    }

    /// The resident sequences after the last step: the t2i rows and, with guidance, the null
    /// rows (row-major `[B, L]`).
    pub fn sequences(&mut self) -> Result<(Vec<i64>, Option<Vec<i64>>), ModelsError> {
        let x = self.exe.get_input("x")?.to_i64_vec();
        let xn = if self.spec.cfg {
            Some(self.exe.get_input("x_null")?.to_i64_vec())
        } else {
            None
        };
        Ok((x, xn))
    }

    /// Image positions per row.
    pub fn image_tokens(&self) -> usize {
        self.spec.image.len()
    }

    /// Generates the image codes of each t2i layout in `prompts` (image part all `[MASK]`),
    /// with `null` as the unconditional prompt when guiding; `on_step(done, total)` after each
    /// step. Returns the codes (`0..codebook`) of each row.
    pub fn generate(
        &mut self,
        prompts: &[Layout],
        null: &Layout,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<i64>>, ModelsError> {
        generate_on(
            self.exe.as_mut(),
            &self.spec,
            &self.opts,
            prompts,
            null,
            on_step,
        )
    }
}

/// Uploads the rows' ids and key masks into the resident inputs `ids` and `keys`.
fn upload(
    exe: &mut dyn Executor,
    spec: &ImageStepSpec,
    (ids, keys): (&str, &str),
    rows: &[&Layout],
) -> Result<(), ModelsError> {
    let (b, l) = (spec.batch, spec.seq);
    let mut x = Vec::with_capacity(b * l);
    let mut k = Vec::with_capacity(b * l);
    for (r, lay) in rows.iter().enumerate() {
        if lay.len() != l || lay.image != Some(spec.image.clone()) {
            return Err(ModelsError::Input(format!(
                "layout {r} has {} positions and image {:?}; the sampler was compiled for \
                 {l} and {:?}",
                lay.len(),
                lay.image,
                spec.image
            )));
        }
        x.extend_from_slice(&lay.ids);
        k.extend(lay.key_mask.iter().map(|&m| f64::from(u8::from(m))));
    }
    exe.set_input(ids, &Tensor::from_i64(Shape(vec![b, l]), x)?)?;
    let km = Tensor::from_f64(DType::Bool, Shape(vec![b, l]), &k)?;
    exe.set_input(keys, &km)?;
    Ok(())
}

/// The sampling loop on any executor holding the [`IMAGE_STEP`] entry of `spec` and the
/// model's weights (the [`ImageSampler`]'s own, or the UniGRPO artifact, whose rollouts read
/// the parameters being trained): generates the codes of each t2i layout in `prompts` (image
/// part all `[MASK]`), with `null` as the unconditional prompt when `spec.cfg`;
/// `on_step(done, total)` after each step. Returns the codes (`0..codebook`) of each row.
pub fn generate_on(
    exe: &mut dyn Executor,
    spec: &ImageStepSpec,
    opts: &ImageOptions,
    prompts: &[Layout],
    null: &Layout,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<i64>>, ModelsError> {
    opts.check()?;
    let b = spec.batch;
    if prompts.len() != b {
        return Err(ModelsError::Input(format!(
            "the sampler was compiled for {b} prompts, got {}",
            prompts.len()
        )));
    }
    if spec.cfg != (opts.guidance_scale > 0.0) {
        return Err(ModelsError::Input(format!(
            "the image step was compiled {} guidance, the options ask for a scale of {}",
            if spec.cfg { "with" } else { "without" },
            opts.guidance_scale
        )));
    }
    let rows: Vec<&Layout> = prompts.iter().collect();
    upload(exe, spec, ("x", "key_mask"), &rows)?;
    if spec.cfg {
        upload(exe, spec, ("x_null", "key_mask_null"), &vec![null; b])?;
    }
    let k = opts.timesteps;
    let n = spec.image.len();
    let counts = mask_counts(n, k, opts.schedule);
    let temps = temperatures(opts.temperature, k, opts.temperature_rule);
    let draws = (b * n * spec.codebook) as i64;
    let scalar_f = |v: f32| Tensor::from_f32(Shape::scalar(), vec![v]);
    let scalar_i = |v: i64| Tensor::from_i64(Shape::scalar(), vec![v]);
    for step in 0..k {
        let mut ins = IndexMap::new();
        ins.insert("seed".into(), scalar_i(opts.seed as i64)?);
        ins.insert("offset".into(), scalar_i(step as i64 * draws)?);
        ins.insert("nmask".into(), scalar_i(counts[step] as i64)?);
        ins.insert("temperature".into(), scalar_f(temps[step])?);
        if spec.cfg {
            ins.insert("cfg_scale".into(), scalar_f(opts.guidance_scale)?);
        }
        exe.run_entry(IMAGE_STEP, &ins)?;
        let bad = exe.read_output(IMAGE_STEP, "nonfinite")?.to_f64_vec();
        if bad.first().copied().unwrap_or(0.0) != 0.0 {
            return Err(ModelsError::Input(format!(
                "step {} of {k}: the model produced {} NaN or infinite image logits; \
                 generation stopped",
                step + 1,
                bad[0]
            )));
        }
        on_step(step + 1, k);
    }
    let s = exe.read_output(IMAGE_STEP, "samples")?.to_i64_vec();
    Ok(s.chunks(n).map(|c| c.to_vec()).collect())
}
