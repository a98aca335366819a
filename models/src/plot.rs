//! A small loss-curve chart written as PNG (axes, grid, the curve and its moving average, and
//! numeric labels drawn with a built-in 5×7 digit font), so training needs no plotting stack.

use std::path::Path;

const W: usize = 800;
const H: usize = 480;
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 20;
const BOTTOM: usize = 40;

/// 5×7 glyphs for the characters labels use.
fn glyph(c: char) -> Option<[u8; 7]> {
    Some(match c {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        '.' => [0, 0, 0, 0, 0, 0x0c, 0x0c],
        '-' => [0, 0, 0, 0x1f, 0, 0, 0],
        'e' => [0, 0, 0x0e, 0x11, 0x1f, 0x10, 0x0e],
        _ => return None,
    })
}

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < W && y < H {
            let i = (y * W + x) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: [u8; 3]) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            self.set(
                (x0 + (x1 - x0) * t) as usize,
                (y0 + (y1 - y0) * t) as usize,
                c,
            );
        }
    }

    fn text(&mut self, x: usize, y: usize, s: &str, c: [u8; 3]) {
        for (k, ch) in s.chars().enumerate() {
            if let Some(g) = glyph(ch) {
                for (row, bits) in g.iter().enumerate() {
                    for col in 0..5 {
                        if bits & (0x10 >> col) != 0 {
                            self.set(x + k * 6 + col, y + row, c);
                        }
                    }
                }
            }
        }
    }
}

/// Writes a chart of `(step, loss)` points to `path`.
pub fn loss_curve_png(points: &[(usize, f64)], path: &Path) -> std::io::Result<()> {
    let mut cv = Canvas {
        px: vec![255; W * H * 3],
    };
    let pts: Vec<(usize, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    let (x0, x1) = (LEFT as f64, (W - RIGHT) as f64);
    let (y0, y1) = (TOP as f64, (H - BOTTOM) as f64);
    let black = [0, 0, 0];
    cv.line(x0, y1, x1, y1, black);
    cv.line(x0, y0, x0, y1, black);
    if let (Some(first), Some(last)) = (pts.first(), pts.last()) {
        let (s0, s1) = (first.0 as f64, (last.0.max(first.0 + 1)) as f64);
        let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else {
            (lo - 1.0, hi + 1.0)
        };
        let px = |s: f64| x0 + (s - s0) / (s1 - s0) * (x1 - x0);
        let py = |v: f64| y1 - (v - lo) / (hi - lo) * (y1 - y0);
        for k in 0..=4 {
            let v = lo + (hi - lo) * k as f64 / 4.0;
            let y = py(v);
            cv.line(x0, y, x1, y, [225, 225, 225]);
            cv.text(4, (y as usize).saturating_sub(3), &format!("{v:.3}"), black);
        }
        for w in pts.windows(2) {
            cv.line(
                px(w[0].0 as f64),
                py(w[0].1),
                px(w[1].0 as f64),
                py(w[1].1),
                [150, 170, 230],
            );
        }
        // Moving average over 5% of the run.
        let k = (pts.len() / 20).max(1);
        let avg: Vec<(f64, f64)> = (0..pts.len())
            .map(|i| {
                let a = i.saturating_sub(k);
                let s: f64 = pts[a..=i].iter().map(|p| p.1).sum();
                (pts[i].0 as f64, s / (i - a + 1) as f64)
            })
            .collect();
        for w in avg.windows(2) {
            cv.line(
                px(w[0].0),
                py(w[0].1),
                px(w[1].0),
                py(w[1].1),
                [200, 30, 30],
            );
        }
        cv.text(LEFT, H - BOTTOM + 8, &format!("{}", first.0), black);
        let ls = format!("{}", last.0);
        cv.text(W - RIGHT - ls.len() * 6, H - BOTTOM + 8, &ls, black);
    }
    let file = std::fs::File::create(path)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W as u32, H as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(&cv.px)
        .map_err(std::io::Error::other)?;
    Ok(())
}
