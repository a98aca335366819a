//! Image input/output for the MAGVIT-v2 image tokenizer.
//!
//! * [`load_rgb`] decodes a PNG, JPEG or WebP file (format sniffed from the
//!   file's bytes, never from its extension) into 8-bit RGB, refusing
//!   oversized images from the header alone, before any pixel buffer is
//!   allocated.
//! * [`preprocess`] turns an RGB image into the tokenizer's input: a planar
//!   CHW `f32` tensor of side `resolution`, normalised to [−1, 1].
//! * [`to_rgb8`] turns a decoded CHW tensor in [−1, 1] back into pixels the
//!   way the reference writes images; [`save_png`] and [`grid`] write them out.
//!
//! # Reference pipeline
//!
//! MMaDA / Show-o prepare images with torchvision on a PIL image:
//! `Resize(res, interpolation=BICUBIC)`, `CenterCrop(res)`, `ToTensor()`,
//! `Normalize(mean=0.5, std=0.5)`, and write generated images with
//! `clamp((x + 1) / 2, 0, 1) * 255` followed by `.astype(np.uint8)`
//! (truncation). [`Fit::ResizeCrop`] follows torchvision's size and crop
//! arithmetic exactly; the resampling itself uses the `image` crate's
//! Catmull-Rom filter, which has the same kernel as PIL's bicubic (a = −0.5)
//! and, like PIL, widens it when downscaling (antialiasing), but works in
//! `f32` rather than PIL's 8-bit fixed point, so some pixels differ from
//! PIL's (on the test pattern in `tests/fixtures/images/parity_*.png`: by at
//! most 1 level out of 255, about one sample in ten). That is accepted.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
/// The 8-bit RGB image type of the `image` crate, which these functions take and return.
pub use image::RgbImage;
use image::{
    DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder, ImageError, ImageFormat,
    ImageReader,
};

/// Errors from reading, converting and writing images. Every variant that
/// concerns a file names it.
#[derive(Debug, thiserror::Error)]
pub enum ImageIoError {
    /// The file could not be opened, read, created or written.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file looks like a supported format but its content is invalid
    /// (corrupt or truncated).
    #[error("cannot decode image {}: {msg}", path.display())]
    Decode { path: PathBuf, msg: String },
    /// The header announces dimensions over [`ImageLimits`]; nothing was
    /// decoded.
    #[error(
        "image {} is {width}x{height} pixels, over the limit of {limit_w}x{limit_h}; refusing to decode it",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        limit_w: u32,
        limit_h: u32,
    },
    /// The dimensions are within limits but decoding would need more memory
    /// than [`ImageLimits::max_alloc_bytes`]; nothing was decoded.
    #[error(
        "decoding image {} ({width}x{height} pixels) would need {needed_bytes} bytes, over the limit of {limit_bytes} bytes; refusing to decode it",
        path.display()
    )]
    MemoryLimit {
        path: PathBuf,
        width: u32,
        height: u32,
        needed_bytes: u64,
        limit_bytes: u64,
    },
    /// Not a PNG, JPEG or WebP file, or a variant of one the decoder does not
    /// handle.
    #[error("unsupported image {}: {msg}", path.display())]
    Unsupported { path: PathBuf, msg: String },
    /// The PNG encoder failed for a reason other than I/O.
    #[error("cannot encode PNG {}: {msg}", path.display())]
    Encode { path: PathBuf, msg: String },
    /// A tensor or image has the wrong size, or a size is zero or overflows.
    #[error("bad image shape: {msg}")]
    Shape { msg: String },
}

/// Limits checked against an image's header before it is decoded, so that a
/// small file announcing a huge image (a decompression bomb) is refused
/// without allocating its pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted width in pixels.
    pub max_width: u32,
    /// Largest accepted height in pixels.
    pub max_height: u32,
    /// Largest number of bytes decoding may allocate: the decoder's native
    /// pixel buffer plus, when that is not already RGB8, the RGB8 copy. Also
    /// handed to the decoders as their own allocation limit (for metadata
    /// chunks and the like).
    pub max_alloc_bytes: u64,
}

impl Default for ImageLimits {
    /// 16384×16384 pixels and 512 MiB.
    fn default() -> Self {
        ImageLimits {
            max_width: 16384,
            max_height: 16384,
            max_alloc_bytes: 512 * 1024 * 1024,
        }
    }
}

/// Decodes a PNG, JPEG or WebP file into 8-bit RGB.
///
/// * The format is guessed from the file's first bytes; the extension is
///   ignored. Anything else (GIF, BMP, text, an empty file, ...) is
///   [`ImageIoError::Unsupported`].
/// * The header is read first and its dimensions checked against `limits`
///   ([`ImageIoError::TooLarge`], [`ImageIoError::MemoryLimit`]) before any
///   pixel buffer is allocated.
/// * Greyscale is replicated into R, G and B; 16-bit samples are scaled to
///   8 bits with rounding (`(v + 128) / 257`); palette PNGs are expanded
///   through their palette.
/// * Alpha is DROPPED, not composited: a fully transparent pixel keeps its
///   stored colour. This is what PIL's `Image.convert("RGB")`, used by the
///   reference, does too.
/// * CMYK JPEGs (4 components, as written by Photoshop or Pillow with an
///   Adobe APP14 marker) are converted to RGB by the decoder (zune-jpeg),
///   assuming the usual Adobe-inverted storage: R = C'·K'/255 where C' and
///   K' are the stored (inverted) samples. YCCK JPEGs are converted too.
///   No ICC profile is applied, in any format.
/// * EXIF orientation is NOT applied, matching PIL's `Image.open` without
///   `ImageOps.exif_transpose`.
/// * Only the first frame of an animated PNG or WebP is returned.
/// * A truncated or corrupt PNG or WebP is an error. The JPEG decoder is
///   lenient: a JPEG cut short inside its entropy-coded data may decode,
///   with the missing part filled in, rather than fail.
pub fn load_rgb(path: &Path, limits: &ImageLimits) -> Result<RgbImage, ImageIoError> {
    let file = File::open(path).map_err(|source| ImageIoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|source| ImageIoError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(ImageIoError::Unsupported {
                path: path.to_path_buf(),
                msg: format!("{other:?} images are not supported; expected PNG, JPEG or WebP"),
            })
        }
        None => {
            return Err(ImageIoError::Unsupported {
                path: path.to_path_buf(),
                msg: "unrecognised file content; expected a PNG, JPEG or WebP image".to_string(),
            })
        }
    }

    // The decoders get our allocation limit but no dimension limit: we check
    // the dimensions ourselves below so that the error can name them.
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = None;
    decoder_limits.max_image_height = None;
    decoder_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(decoder_limits);

    // Reads only the header (and, for PNG, the chunks before the first IDAT);
    // no pixel buffer exists yet.
    let decoder = reader.into_decoder().map_err(|e| decode_error(path, e))?;
    let (width, height) = decoder.dimensions();
    if width > limits.max_width || height > limits.max_height {
        return Err(ImageIoError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            limit_w: limits.max_width,
            limit_h: limits.max_height,
        });
    }
    let rgb8_bytes = u64::from(width) * u64::from(height) * 3;
    let needed_bytes = if decoder.color_type() == image::ColorType::Rgb8 {
        decoder.total_bytes()
    } else {
        decoder.total_bytes().saturating_add(rgb8_bytes)
    };
    if needed_bytes > limits.max_alloc_bytes {
        return Err(ImageIoError::MemoryLimit {
            path: path.to_path_buf(),
            width,
            height,
            needed_bytes,
            limit_bytes: limits.max_alloc_bytes,
        });
    }

    let decoded = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(path, e))?;
    Ok(decoded.into_rgb8())
}

/// Maps an error from the `image` crate's decoders onto [`ImageIoError`].
fn decode_error(path: &Path, err: ImageError) -> ImageIoError {
    let path = path.to_path_buf();
    match err {
        // The decoders read through `std::io`, so running out of bytes shows
        // up as an I/O error; it means the file is truncated.
        ImageError::IoError(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageIoError::Decode {
                path,
                msg: format!("file is truncated ({source})"),
            }
        }
        ImageError::IoError(source) => ImageIoError::Io { path, source },
        ImageError::Unsupported(e) => ImageIoError::Unsupported {
            path,
            msg: e.to_string(),
        },
        ImageError::Limits(e) => ImageIoError::Decode {
            path,
            msg: format!("decoder limit exceeded: {e}"),
        },
        other => ImageIoError::Decode {
            path,
            // Some decoder messages end in a newline.
            msg: other.to_string().trim_end().to_string(),
        },
    }
}

/// How [`preprocess`] makes a square image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// The reference's `Resize(res)` + `CenterCrop(res)`: scale so that the
    /// shorter side is `resolution`, keeping the aspect ratio, then cut the
    /// central `resolution`×`resolution` square.
    ResizeCrop,
    /// Scale width and height independently to `resolution` (distorts the
    /// aspect ratio, keeps all content).
    Squash,
}

/// Upper bound on the memory [`preprocess`] lets the resampler use. Only
/// extreme aspect ratios reach it (e.g. a 1×16384 strip with
/// [`Fit::ResizeCrop`] would be scaled to 512×8388608).
const MAX_RESIZE_BYTES: u64 = 1 << 30;

/// Makes the tokenizer's input from an RGB image: a planar CHW `f32` vector
/// of length `3 * resolution * resolution` (all of R, then G, then B, each
/// row-major), with every sample `x / 255 * 2 - 1` in [−1, 1] (bit-identical
/// to torchvision's `ToTensor` then `Normalize(0.5, 0.5)`).
///
/// Resampling is bicubic ([`FilterType::CatmullRom`]); when the size does not
/// change the pixels are used as they are.
///
/// [`Fit::ResizeCrop`] follows torchvision's arithmetic exactly: the longer
/// side becomes `floor(resolution * long / short)` (torchvision truncates
/// with `int(...)`), and the crop offset along each axis is
/// `round((len - resolution) / 2)` with Python's round-half-to-even — e.g.
/// offset 1 for a spare 3 pixels but 2 for a spare 5 — as in
/// `torchvision.transforms.functional.center_crop`.
///
/// Errors ([`ImageIoError::Shape`]) if the image is empty, `resolution` is
/// zero, or the sizes involved overflow or would need more than 1 GiB while
/// resampling.
pub fn preprocess(img: &RgbImage, resolution: u32, fit: Fit) -> Result<Vec<f32>, ImageIoError> {
    let (width, height) = img.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageIoError::Shape {
            msg: format!("cannot preprocess an empty {width}x{height} image"),
        });
    }
    if resolution == 0 {
        return Err(ImageIoError::Shape {
            msg: "preprocess resolution must be at least 1".to_string(),
        });
    }

    let (new_w, new_h) = match fit {
        Fit::Squash => (resolution, resolution),
        Fit::ResizeCrop => {
            let short = width.min(height);
            let long = width.max(height);
            let new_long = u64::from(resolution) * u64::from(long) / u64::from(short);
            let new_long = u32::try_from(new_long).map_err(|_| ImageIoError::Shape {
                msg: format!(
                    "resizing a {width}x{height} image to a shorter side of {resolution} \
                     gives a longer side of {new_long}, which overflows u32"
                ),
            })?;
            if width <= height {
                (resolution, new_long)
            } else {
                (new_long, resolution)
            }
        }
    };

    let resized: Cow<'_, RgbImage> = if (new_w, new_h) == (width, height) {
        Cow::Borrowed(img)
    } else {
        // The resampler's vertical pass makes a width×new_h RGBA f32 image
        // (16 bytes a pixel); the result is new_w×new_h RGB8.
        let resize_bytes =
            u64::from(width) * u64::from(new_h) * 16 + u64::from(new_w) * u64::from(new_h) * 3;
        if resize_bytes > MAX_RESIZE_BYTES {
            return Err(ImageIoError::Shape {
                msg: format!(
                    "resizing a {width}x{height} image to {new_w}x{new_h} would need \
                     {resize_bytes} bytes, over the {MAX_RESIZE_BYTES}-byte limit"
                ),
            });
        }
        Cow::Owned(image::imageops::resize(
            img,
            new_w,
            new_h,
            FilterType::CatmullRom,
        ))
    };

    let left = centre_crop_offset(new_w, resolution);
    let top = centre_crop_offset(new_h, resolution);
    let res = resolution as usize;
    let plane = res.checked_mul(res).ok_or_else(|| ImageIoError::Shape {
        msg: format!("resolution {resolution} squared overflows usize"),
    })?;
    let total = plane.checked_mul(3).ok_or_else(|| ImageIoError::Shape {
        msg: format!("3x{resolution}x{resolution} overflows usize"),
    })?;
    let mut out = vec![0.0f32; total];
    for y in 0..resolution {
        for x in 0..resolution {
            let pixel = resized.get_pixel(left + x, top + y);
            let index = y as usize * res + x as usize;
            for (channel, &value) in pixel.0.iter().enumerate() {
                out[channel * plane + index] = f32::from(value) / 255.0 * 2.0 - 1.0;
            }
        }
    }
    Ok(out)
}

/// torchvision's centre-crop offset along one axis of length `len` ≥ `crop`:
/// `int(round((len - crop) / 2.0))`, where Python rounds halves to even.
fn centre_crop_offset(len: u32, crop: u32) -> u32 {
    let spare = len.saturating_sub(crop);
    let half = spare / 2;
    if spare % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Turns a planar CHW tensor (length `3 * width * height`, values nominally
/// in [−1, 1]) into an RGB8 image the way the reference writes images:
/// `v = clamp((x + 1) / 2, 0, 1) * 255` computed in `f32`, then TRUNCATED to
/// `u8` (so 254.87 becomes 254, not 255). NaN becomes 0; +∞ becomes 255 and
/// −∞ becomes 0.
///
/// Like the reference, this is not an exact inverse of [`preprocess`]'s
/// normalisation: in `f32`, bytes 1..=63 come back one level lower (the
/// value lands just under the integer before truncation).
///
/// Errors ([`ImageIoError::Shape`]) if a dimension is zero or the length is
/// not `3 * width * height`.
pub fn to_rgb8(chw: &[f32], width: u32, height: u32) -> Result<RgbImage, ImageIoError> {
    if width == 0 || height == 0 {
        return Err(ImageIoError::Shape {
            msg: format!("cannot make an empty {width}x{height} image"),
        });
    }
    let plane = (width as usize)
        .checked_mul(height as usize)
        .ok_or_else(|| ImageIoError::Shape {
            msg: format!("{width}x{height} overflows usize"),
        })?;
    let expected = plane.checked_mul(3).ok_or_else(|| ImageIoError::Shape {
        msg: format!("3x{height}x{width} overflows usize"),
    })?;
    if chw.len() != expected {
        return Err(ImageIoError::Shape {
            msg: format!(
                "CHW tensor has {} values, expected 3x{height}x{width} = {expected}",
                chw.len()
            ),
        });
    }
    let mut raw = Vec::with_capacity(expected);
    for index in 0..plane {
        for channel in 0..3 {
            raw.push(unit_to_u8(chw[channel * plane + index]));
        }
    }
    RgbImage::from_raw(width, height, raw).ok_or_else(|| ImageIoError::Shape {
        msg: format!("pixel buffer does not fit a {width}x{height} RGB image"),
    })
}

/// One sample of [`to_rgb8`]: [−1, 1] to 0..=255, clamped, truncated, NaN → 0.
fn unit_to_u8(x: f32) -> u8 {
    let v = ((x + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0;
    if v.is_nan() {
        0
    } else {
        // `v` is in [0, 255] here, so the cast only truncates the fraction.
        v as u8
    }
}

/// Writes an RGB8 image as a PNG file, replacing any existing file.
///
/// Errors: [`ImageIoError::Shape`] for an empty image, [`ImageIoError::Io`]
/// if the file cannot be created or written, [`ImageIoError::Encode`] for
/// any other encoder failure.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<(), ImageIoError> {
    let (width, height) = img.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageIoError::Shape {
            msg: format!(
                "cannot save an empty {width}x{height} image to {}",
                path.display()
            ),
        });
    }
    let io_error = |source| ImageIoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(path).map_err(io_error)?;
    let mut writer = BufWriter::new(file);
    PngEncoder::new(&mut writer)
        .write_image(img.as_raw(), width, height, ExtendedColorType::Rgb8)
        .map_err(|e| match e {
            ImageError::IoError(source) => ImageIoError::Io {
                path: path.to_path_buf(),
                source,
            },
            other => ImageIoError::Encode {
                path: path.to_path_buf(),
                msg: other.to_string(),
            },
        })?;
    writer.flush().map_err(io_error)
}

/// Lays images out in a grid for side-by-side figures, like torchvision's
/// `make_grid`: `min(cols, n)` columns, as many rows as needed, filled row by
/// row, with `pad` black pixels between the cells and around the border.
/// Unused cells in the last row stay black.
///
/// Errors ([`ImageIoError::Shape`]) if `images` is empty, `cols` is zero,
/// the images do not all have the same size, or the grid would be larger
/// than `u32::MAX` pixels on a side.
pub fn grid(images: &[RgbImage], cols: u32, pad: u32) -> Result<RgbImage, ImageIoError> {
    let Some(first) = images.first() else {
        return Err(ImageIoError::Shape {
            msg: "grid needs at least one image".to_string(),
        });
    };
    if cols == 0 {
        return Err(ImageIoError::Shape {
            msg: "grid needs at least one column".to_string(),
        });
    }
    let (cell_w, cell_h) = first.dimensions();
    if let Some((index, other)) = images
        .iter()
        .enumerate()
        .find(|(_, img)| img.dimensions() != (cell_w, cell_h))
    {
        return Err(ImageIoError::Shape {
            msg: format!(
                "grid images must all be {cell_w}x{cell_h}, but image {index} is {}x{}",
                other.width(),
                other.height()
            ),
        });
    }

    let count = images.len() as u64;
    let cols = u64::from(cols).min(count);
    let rows = count.div_ceil(cols);
    let step_x = u64::from(cell_w) + u64::from(pad);
    let step_y = u64::from(cell_h) + u64::from(pad);
    let side = |cells: u64, step: u64| -> Result<u32, ImageIoError> {
        let len = cells * step + u64::from(pad);
        u32::try_from(len).map_err(|_| ImageIoError::Shape {
            msg: format!("grid side of {len} pixels overflows u32"),
        })
    };
    let width = side(cols, step_x)?;
    let height = side(rows, step_y)?;

    let mut canvas = RgbImage::new(width, height);
    for (index, img) in images.iter().enumerate() {
        let index = index as u64;
        let x = u64::from(pad) + (index % cols) * step_x;
        let y = u64::from(pad) + (index / cols) * step_y;
        // Both fit in u32 (they are below `width` and `height`), hence in i64.
        image::imageops::replace(&mut canvas, img, x as i64, y as i64);
    }
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::webp::WebPEncoder;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/images")
            .join(name)
    }

    /// Encodes raw samples as a PNG in memory.
    fn encode_png(raw: &[u8], width: u32, height: u32, color: ExtendedColorType) -> Vec<u8> {
        let mut bytes = Vec::new();
        PngEncoder::new(&mut bytes)
            .write_image(raw, width, height, color)
            .unwrap();
        bytes
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// CRC-32 (IEEE, as PNG uses), bit by bit.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(data);
        out.extend_from_slice(&crc_input);
        out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    }

    /// A PNG whose IHDR announces `width`×`height` RGB8 but whose IDAT holds
    /// only a few bytes of zlib stream.
    fn bomb_png(width: u32, height: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
        png_chunk(&mut png, b"IHDR", &ihdr);
        png_chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00]);
        png_chunk(&mut png, b"IEND", &[]);
        png
    }

    #[test]
    fn crc32_matches_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn decompression_bomb_is_refused_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "bomb.png", &bomb_png(100_000, 100_000));
        let err = load_rgb(&path, &ImageLimits::default()).unwrap_err();
        match &err {
            ImageIoError::TooLarge {
                width,
                height,
                limit_w,
                limit_h,
                ..
            } => {
                assert_eq!((*width, *height), (100_000, 100_000));
                assert_eq!((*limit_w, *limit_h), (16384, 16384));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("bomb.png"), "{msg}");
        assert!(msg.contains("100000x100000"), "{msg}");
    }

    #[test]
    fn allocation_limit_is_checked_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        // 16000×16000 RGB8 is within the default dimensions but needs 768 MB.
        let path = write(&dir, "big.png", &bomb_png(16_000, 16_000));
        let err = load_rgb(&path, &ImageLimits::default()).unwrap_err();
        match &err {
            ImageIoError::MemoryLimit {
                width,
                height,
                needed_bytes,
                limit_bytes,
                ..
            } => {
                assert_eq!((*width, *height), (16_000, 16_000));
                assert_eq!(*needed_bytes, 16_000 * 16_000 * 3);
                assert_eq!(*limit_bytes, 512 * 1024 * 1024);
            }
            other => panic!("expected MemoryLimit, got {other:?}"),
        }
        assert!(err.to_string().contains("big.png"), "{err}");
    }

    #[test]
    fn small_header_with_stub_idat_is_a_decode_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "stub.png", &bomb_png(64, 64));
        let err = load_rgb(&path, &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ImageIoError::Decode { .. }), "{err:?}");
        assert!(err.to_string().contains("stub.png"), "{err}");
    }

    #[test]
    fn truncated_png_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        // Noise, so that the compressed data is long enough to cut.
        let raw: Vec<u8> = (0..32u32 * 32 * 3)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let png = encode_png(&raw, 32, 32, ExtendedColorType::Rgb8);
        let path = write(&dir, "cut.png", &png[..png.len() / 2]);
        let err = load_rgb(&path, &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ImageIoError::Decode { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("cut.png"), "{msg}");
    }

    #[test]
    fn text_file_named_png_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "x.png", b"this is not an image\n");
        let err = load_rgb(&path, &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ImageIoError::Unsupported { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("x.png"), "{msg}");
        assert!(msg.contains("PNG, JPEG or WebP"), "{msg}");
    }

    #[test]
    fn empty_file_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "empty.jpg", b"");
        let err = load_rgb(&path, &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ImageIoError::Unsupported { .. }), "{err:?}");
    }

    #[test]
    fn other_known_formats_are_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let gif = write(&dir, "anim.png", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;");
        let err = load_rgb(&gif, &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ImageIoError::Unsupported { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("anim.png") && msg.contains("Gif"), "{msg}");

        let bmp = write(
            &dir,
            "pic.webp",
            b"BM\x1e\x00\x00\x00\x00\x00\x00\x00\x1a\x00\x00\x00",
        );
        let err = load_rgb(&bmp, &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ImageIoError::Unsupported { .. }), "{err:?}");
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.png");
        let err = load_rgb(&path, &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ImageIoError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("nope.png"), "{err}");
    }

    #[test]
    fn format_comes_from_content_not_extension() {
        let dir = tempfile::tempdir().unwrap();
        let png = encode_png(&[1, 2, 3, 4, 5, 6], 2, 1, ExtendedColorType::Rgb8);
        let path = write(&dir, "really_a_png.jpg", &png);
        let img = load_rgb(&path, &ImageLimits::default()).unwrap();
        assert_eq!(img.as_raw(), &vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn greyscale_png_is_replicated() {
        let dir = tempfile::tempdir().unwrap();
        let png = encode_png(&[0, 77, 255], 3, 1, ExtendedColorType::L8);
        let img = load_rgb(&write(&dir, "l8.png", &png), &ImageLimits::default()).unwrap();
        assert_eq!(img.as_raw(), &vec![0, 0, 0, 77, 77, 77, 255, 255, 255]);
    }

    #[test]
    fn grey_alpha_png_drops_alpha() {
        let dir = tempfile::tempdir().unwrap();
        let img = ImageBuffer::<LumaA<u8>, _>::from_raw(2, 1, vec![200, 0, 50, 128]).unwrap();
        let path = dir.path().join("la8.png");
        img.save(&path).unwrap();
        let rgb = load_rgb(&path, &ImageLimits::default()).unwrap();
        assert_eq!(rgb.as_raw(), &vec![200, 200, 200, 50, 50, 50]);
    }

    #[test]
    fn rgba_png_drops_alpha_without_compositing() {
        let dir = tempfile::tempdir().unwrap();
        let img =
            ImageBuffer::<Rgba<u8>, _>::from_raw(2, 1, vec![10, 20, 30, 0, 200, 100, 50, 255])
                .unwrap();
        let path = dir.path().join("rgba.png");
        img.save(&path).unwrap();
        let rgb = load_rgb(&path, &ImageLimits::default()).unwrap();
        // The fully transparent pixel keeps its colour.
        assert_eq!(rgb.as_raw(), &vec![10, 20, 30, 200, 100, 50]);
    }

    #[test]
    fn sixteen_bit_pngs_are_scaled_with_rounding() {
        let dir = tempfile::tempdir().unwrap();
        let samples: [u16; 6] = [0, 65535, 25700, 0x8080, 0x807F, 129];
        let rgb16 = ImageBuffer::<Rgb<u16>, _>::from_raw(2, 1, samples.to_vec()).unwrap();
        let path = dir.path().join("rgb16.png");
        rgb16.save(&path).unwrap();
        let rgb = load_rgb(&path, &ImageLimits::default()).unwrap();
        // (v + 128) / 257: 0, 255, 100, 128, 128, 1.
        assert_eq!(rgb.as_raw(), &vec![0, 255, 100, 128, 128, 1]);

        let grey16 = ImageBuffer::<Luma<u16>, _>::from_raw(2, 1, vec![65535, 25700]).unwrap();
        let path = dir.path().join("l16.png");
        grey16.save(&path).unwrap();
        let rgb = load_rgb(&path, &ImageLimits::default()).unwrap();
        assert_eq!(rgb.as_raw(), &vec![255, 255, 255, 100, 100, 100]);
    }

    #[test]
    fn palette_png_is_expanded() {
        // Hand-built 3×1 palette PNG, 8-bit indices [2, 0, 1], with a tRNS
        // chunk making entry 0 transparent (which must be dropped, not
        // composited).
        let palette = [255u8, 0, 0, 0, 255, 0, 10, 20, 30];
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&3u32.to_be_bytes());
        ihdr.extend_from_slice(&1u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 3, 0, 0, 0]); // 8-bit indexed
        png_chunk(&mut png, b"IHDR", &ihdr);
        png_chunk(&mut png, b"PLTE", &palette);
        png_chunk(&mut png, b"tRNS", &[0]);
        // zlib stream, stored (uncompressed) block: filter byte 0 + 3 indices.
        let scanline = [0u8, 2, 0, 1];
        let mut zlib = vec![0x78, 0x01, 0x01];
        zlib.extend_from_slice(&(scanline.len() as u16).to_le_bytes());
        zlib.extend_from_slice(&(!(scanline.len() as u16)).to_le_bytes());
        zlib.extend_from_slice(&scanline);
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in &scanline {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
        png_chunk(&mut png, b"IDAT", &zlib);
        png_chunk(&mut png, b"IEND", &[]);

        let dir = tempfile::tempdir().unwrap();
        let img = load_rgb(&write(&dir, "pal.png", &png), &ImageLimits::default()).unwrap();
        assert_eq!(img.as_raw(), &vec![10, 20, 30, 255, 0, 0, 0, 255, 0]);
    }

    #[test]
    fn cmyk_jpeg_is_converted_to_rgb() {
        // 16×16 CMYK JPEG written by Pillow 13 (Adobe APP14, transform 0,
        // inverted samples), four 8×8 blocks: cyan (255,0,0,0), red
        // (0,255,255,0), 50% black (0,0,0,128), white (0,0,0,0). Pillow
        // itself converts these to (0,255,255), (255,0,0), (127,127,127),
        // (255,255,255).
        let path = fixture("cmyk_adobe.jpg");
        let img = load_rgb(&path, &ImageLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (16, 16));
        let expected = [
            ((3, 3), [0u8, 255, 255]),
            ((12, 3), [255, 0, 0]),
            ((3, 12), [127, 127, 127]),
            ((12, 12), [255, 255, 255]),
        ];
        for ((x, y), want) in expected {
            let got = img.get_pixel(x, y).0;
            for c in 0..3 {
                let diff = (i16::from(got[c]) - i16::from(want[c])).abs();
                assert!(
                    diff <= 3,
                    "pixel ({x},{y}) = {got:?}, expected about {want:?}"
                );
            }
        }
    }

    #[test]
    fn webp_lossless_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let raw: Vec<u8> = (0..4u8 * 3 * 3).map(|i| i * 7).collect();
        let mut bytes = Vec::new();
        WebPEncoder::new_lossless(&mut bytes)
            .encode(&raw, 4, 3, ExtendedColorType::Rgb8)
            .unwrap();
        // Named .bin: the format must be sniffed.
        let img = load_rgb(&write(&dir, "small.bin", &bytes), &ImageLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (4, 3));
        assert_eq!(img.as_raw(), &raw);
    }

    #[test]
    fn truncated_webp_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let raw: Vec<u8> = (0..32u32 * 32 * 3)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut bytes = Vec::new();
        WebPEncoder::new_lossless(&mut bytes)
            .encode(&raw, 32, 32, ExtendedColorType::Rgb8)
            .unwrap();
        let path = write(&dir, "cut.webp", &bytes[..bytes.len() / 2]);
        let err = load_rgb(&path, &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ImageIoError::Decode { .. }), "{err:?}");
        assert!(err.to_string().contains("cut.webp"), "{err}");
    }

    #[test]
    fn png_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let raw: Vec<u8> = (0..5u32 * 3 * 3).map(|i| (i * 17 % 256) as u8).collect();
        let img = RgbImage::from_raw(5, 3, raw).unwrap();
        let path = dir.path().join("round.png");
        save_png(&img, &path).unwrap();
        let back = load_rgb(&path, &ImageLimits::default()).unwrap();
        assert_eq!(back, img);
    }

    #[test]
    fn save_png_errors() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::new(2, 2);
        let err = save_png(&img, &dir.path().join("no_such_dir/out.png")).unwrap_err();
        assert!(matches!(err, ImageIoError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("out.png"), "{err}");
        let err = save_png(&RgbImage::new(0, 2), &dir.path().join("e.png")).unwrap_err();
        assert!(matches!(err, ImageIoError::Shape { .. }), "{err:?}");
    }

    /// A 4×2 image whose left half is (10, 20, 30) and right half
    /// (200, 150, 100).
    fn halves_4x2() -> RgbImage {
        RgbImage::from_fn(4, 2, |x, _| {
            if x < 2 {
                Rgb([10, 20, 30])
            } else {
                Rgb([200, 150, 100])
            }
        })
    }

    fn norm(v: u8) -> f32 {
        f32::from(v) / 255.0 * 2.0 - 1.0
    }

    #[test]
    fn normalisation_matches_torchvision_bit_for_bit() {
        for v in 0..=255u8 {
            let torch = (f32::from(v) / 255.0 - 0.5) / 0.5;
            assert_eq!(norm(v).to_bits(), torch.to_bits(), "v = {v}");
        }
    }

    #[test]
    fn preprocess_resize_crop_is_centred() {
        // Shorter side 2 = resolution: no resampling, crop columns 1..3.
        let out = preprocess(&halves_4x2(), 2, Fit::ResizeCrop).unwrap();
        assert_eq!(out.len(), 3 * 2 * 2);
        let left = [10u8, 20, 30];
        let right = [200u8, 150, 100];
        for c in 0..3 {
            for y in 0..2 {
                assert_eq!(out[c * 4 + y * 2], norm(left[c]));
                assert_eq!(out[c * 4 + y * 2 + 1], norm(right[c]));
            }
        }
    }

    #[test]
    fn preprocess_squash_mixes_halves_as_bicubic_predicts() {
        let out = preprocess(&halves_4x2(), 2, Fit::Squash).unwrap();
        assert_eq!(out.len(), 12);
        // Halving the width widens the kernel to 4 source pixels, so each
        // output column sees the whole row. Output column 0 is centred at
        // source x = 0.5; its taps at distances 0.25, 0.25, 0.75, 1.25 (in
        // output pixels) weigh 0.8672, 0.8672, 0.2266, -0.0703, so the
        // right half contributes s = 0.1563 / 1.8906 = 0.0826 (PIL's bicubic
        // gives the same weights).
        let s = 0.15625f32 / 1.890625;
        let left = [10.0f32, 20.0, 30.0];
        let right = [200.0f32, 150.0, 100.0];
        for c in 0..3 {
            let want_left = left[c] + (right[c] - left[c]) * s;
            let want_right = right[c] - (right[c] - left[c]) * s;
            for y in 0..2 {
                let got_left = (out[c * 4 + y * 2] + 1.0) / 2.0 * 255.0;
                let got_right = (out[c * 4 + y * 2 + 1] + 1.0) / 2.0 * 255.0;
                assert!(
                    (got_left - want_left).abs() <= 1.0,
                    "{got_left} vs {want_left}"
                );
                assert!(
                    (got_right - want_right).abs() <= 1.0,
                    "{got_right} vs {want_right}"
                );
            }
        }
        // Rows are identical (the source has no vertical variation).
        for c in 0..3 {
            assert_eq!(out[c * 4], out[c * 4 + 2]);
            assert_eq!(out[c * 4 + 1], out[c * 4 + 3]);
        }
    }

    #[test]
    fn preprocess_output_range_and_shape() {
        let img = RgbImage::from_fn(7, 5, |x, y| Rgb([(x * 40) as u8, (y * 60) as u8, 255]));
        for fit in [Fit::ResizeCrop, Fit::Squash] {
            for res in [1, 3, 8, 16] {
                let out = preprocess(&img, res, fit).unwrap();
                assert_eq!(out.len(), (3 * res * res) as usize);
                assert!(
                    out.iter().all(|v| (-1.0..=1.0).contains(v)),
                    "{fit:?} {res}"
                );
            }
        }
    }

    #[test]
    fn preprocess_tall_image_crops_vertically() {
        // 2×6, rows 0..2 red, 2..4 green, 4..6 blue; shorter side already 2,
        // spare 4, offset 2: the green band.
        let img = RgbImage::from_fn(2, 6, |_, y| match y / 2 {
            0 => Rgb([255, 0, 0]),
            1 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        });
        let out = preprocess(&img, 2, Fit::ResizeCrop).unwrap();
        assert_eq!(&out[0..4], &[-1.0; 4]);
        assert_eq!(&out[4..8], &[1.0; 4]);
        assert_eq!(&out[8..12], &[-1.0; 4]);
    }

    #[test]
    fn centre_crop_offset_rounds_half_to_even_like_python() {
        // Python: int(round(spare / 2.0)).
        let cases = [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 2),
            (6, 3),
            (7, 4),
            (9, 4),
        ];
        for (spare, want) in cases {
            assert_eq!(centre_crop_offset(16 + spare, 16), want, "spare {spare}");
        }
    }

    #[test]
    fn preprocess_rejects_bad_input() {
        assert!(matches!(
            preprocess(&RgbImage::new(0, 3), 4, Fit::Squash),
            Err(ImageIoError::Shape { .. })
        ));
        assert!(matches!(
            preprocess(&RgbImage::new(3, 3), 0, Fit::Squash),
            Err(ImageIoError::Shape { .. })
        ));
        // A 1×16384 strip would be resampled to 512×8388608.
        assert!(matches!(
            preprocess(&RgbImage::new(1, 16384), 512, Fit::ResizeCrop),
            Err(ImageIoError::Shape { .. })
        ));
    }

    /// Compares with Pillow 13's `resize(..., BICUBIC)` (what torchvision's
    /// `Resize` calls on a PIL image) on a 40×27 test pattern: ResizeCrop to
    /// 16 scales to 23×16 and crops at x = round(3.5) = 4.
    #[test]
    fn preprocess_is_close_to_pil() {
        let limits = ImageLimits::default();
        let src = load_rgb(&fixture("parity_src.png"), &limits).unwrap();
        assert_eq!(src.dimensions(), (40, 27));
        for (fit, name) in [
            (Fit::ResizeCrop, "parity_pil_resizecrop16.png"),
            (Fit::Squash, "parity_pil_squash16.png"),
        ] {
            let pil = load_rgb(&fixture(name), &limits).unwrap();
            let ours = to_rgb8_rounded(&preprocess(&src, 16, fit).unwrap(), 16);
            let mut max_diff = 0i32;
            let mut sum_diff = 0i32;
            for (a, b) in ours.iter().zip(pil.as_raw()) {
                let d = (i32::from(*a) - i32::from(*b)).abs();
                max_diff = max_diff.max(d);
                sum_diff += d;
            }
            let mean = sum_diff as f64 / ours.len() as f64;
            // Measured: max 1, mean 0.09 (about 1 value in 10 off by one).
            assert!(
                max_diff <= 1 && mean <= 0.2,
                "{fit:?}: max {max_diff}, mean {mean}"
            );
        }
    }

    /// CHW in [−1, 1] back to interleaved RGB bytes, rounded (exact inverse
    /// of the normalisation, for comparisons).
    fn to_rgb8_rounded(chw: &[f32], res: usize) -> Vec<u8> {
        let plane = res * res;
        let mut raw = Vec::new();
        for i in 0..plane {
            for c in 0..3 {
                raw.push(((chw[c * plane + i] + 1.0) / 2.0 * 255.0).round() as u8);
            }
        }
        raw
    }

    #[test]
    fn to_rgb8_truncates_like_the_reference() {
        let cases = [
            (0.999f32, 254u8),
            (1.0, 255),
            (-1.0, 0),
            (2.0, 255),
            (-3.0, 0),
            (f32::NAN, 0),
            (f32::INFINITY, 255),
            (f32::NEG_INFINITY, 0),
            (0.0, 127),
        ];
        for (x, want) in cases {
            assert_eq!(unit_to_u8(x), want, "x = {x}");
        }
        // Planar in, interleaved out: R plane, then G, then B.
        let chw = [-1.0, 1.0, 0.999, 0.0, 2.0, f32::NAN];
        let img = to_rgb8(&chw, 2, 1).unwrap();
        assert_eq!(img.as_raw(), &vec![0, 254, 255, 255, 127, 0]);
    }

    #[test]
    fn to_rgb8_checks_the_length() {
        let err = to_rgb8(&[0.0; 11], 2, 2).unwrap_err();
        assert!(matches!(err, ImageIoError::Shape { .. }), "{err:?}");
        assert!(err.to_string().contains("expected 3x2x2 = 12"), "{err}");
        assert!(to_rgb8(&[], 0, 0).is_err());
    }

    #[test]
    fn normalise_then_to_rgb8_loses_a_level_below_64() {
        // In f32, ((v / 255 * 2 - 1) + 1) / 2 * 255 lands just under v for
        // v = 1..=63, so the truncating write-out gives v - 1 there, exactly
        // as the reference's torch code does; every other byte comes back.
        for v in 0..=255u8 {
            let want = if (1..=63).contains(&v) { v - 1 } else { v };
            assert_eq!(unit_to_u8(norm(v)), want, "v = {v}");
        }
        let img =
            RgbImage::from_raw(16, 16, (0..=255u8).flat_map(|v| [v, v, v]).collect()).unwrap();
        let back = to_rgb8(&preprocess(&img, 16, Fit::Squash).unwrap(), 16, 16).unwrap();
        for (a, b) in back.as_raw().iter().zip(img.as_raw()) {
            assert_eq!(*a, if (1..=63).contains(b) { b - 1 } else { *b });
        }
    }

    #[test]
    fn grid_lays_out_rows_with_padding() {
        let a = RgbImage::from_pixel(2, 1, Rgb([255, 0, 0]));
        let b = RgbImage::from_pixel(2, 1, Rgb([0, 255, 0]));
        let c = RgbImage::from_pixel(2, 1, Rgb([0, 0, 255]));
        let g = grid(&[a.clone(), b, c], 2, 1).unwrap();
        // 2 columns × 2 rows: width 2*(2+1)+1 = 7, height 2*(1+1)+1 = 5.
        assert_eq!(g.dimensions(), (7, 5));
        assert_eq!(g.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(g.get_pixel(1, 1).0, [255, 0, 0]);
        assert_eq!(g.get_pixel(2, 1).0, [255, 0, 0]);
        assert_eq!(g.get_pixel(3, 1).0, [0, 0, 0]);
        assert_eq!(g.get_pixel(4, 1).0, [0, 255, 0]);
        assert_eq!(g.get_pixel(1, 3).0, [0, 0, 255]);
        assert_eq!(g.get_pixel(4, 3).0, [0, 0, 0]);
        // More columns than images: one row, only as wide as needed.
        assert_eq!(grid(&[a], 8, 0).unwrap().dimensions(), (2, 1));
    }

    #[test]
    fn grid_rejects_bad_input() {
        assert!(matches!(grid(&[], 2, 1), Err(ImageIoError::Shape { .. })));
        let a = RgbImage::new(2, 2);
        assert!(matches!(
            grid(std::slice::from_ref(&a), 0, 1),
            Err(ImageIoError::Shape { .. })
        ));
        let err = grid(&[a, RgbImage::new(3, 2)], 2, 1).unwrap_err();
        assert!(err.to_string().contains("image 1 is 3x2"), "{err}");
    }
}
