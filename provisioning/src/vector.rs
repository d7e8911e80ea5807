//! A tiny vector drawing model for the label: filled paths on a canvas
//! measured in printer dots. The same drawing is written out as SVG path data
//! and rasterised with tiny-skia, so the SVG and the PNG label cannot drift
//! apart, and the SVG needs no font to print.

use std::fmt::Write as _;

/// One step of a path outline, in canvas units (dots).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Segment {
    MoveTo(f32, f32),
    LineTo(f32, f32),
    QuadTo(f32, f32, f32, f32),
    CubicTo(f32, f32, f32, f32, f32, f32),
    Close,
}

/// A filled outline (non-zero winding), made of closed contours.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Path {
    segments: Vec<Segment>,
}

impl Path {
    pub fn push(&mut self, segment: Segment) {
        self.segments.push(segment);
    }

    /// Adds an axis-aligned rectangle as a clockwise contour.
    pub fn rect(&mut self, x: f32, y: f32, width: f32, height: f32) {
        self.segments.extend([
            Segment::MoveTo(x, y),
            Segment::LineTo(x + width, y),
            Segment::LineTo(x + width, y + height),
            Segment::LineTo(x, y + height),
            Segment::Close,
        ]);
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The outline as the `d` attribute of an SVG `<path>`.
    pub fn svg_data(&self) -> String {
        let mut d = String::new();
        for segment in &self.segments {
            // Writing to a String cannot fail.
            let _ = match *segment {
                Segment::MoveTo(x, y) => write!(d, "M{}{} ", num(x), sep_num(y)),
                Segment::LineTo(x, y) => write!(d, "L{}{} ", num(x), sep_num(y)),
                Segment::QuadTo(x1, y1, x, y) => {
                    write!(d, "Q{}{}{}{} ", num(x1), sep_num(y1), sep_num(x), sep_num(y))
                }
                Segment::CubicTo(x1, y1, x2, y2, x, y) => write!(
                    d,
                    "C{}{}{}{}{}{} ",
                    num(x1),
                    sep_num(y1),
                    sep_num(x2),
                    sep_num(y2),
                    sep_num(x),
                    sep_num(y)
                ),
                Segment::Close => write!(d, "Z "),
            };
        }
        d.truncate(d.trim_end().len());
        d
    }

    /// The outline as a tiny-skia path (`None` when empty).
    fn to_skia(&self) -> Option<tiny_skia::Path> {
        let mut builder = tiny_skia::PathBuilder::new();
        for segment in &self.segments {
            match *segment {
                Segment::MoveTo(x, y) => builder.move_to(x, y),
                Segment::LineTo(x, y) => builder.line_to(x, y),
                Segment::QuadTo(x1, y1, x, y) => builder.quad_to(x1, y1, x, y),
                Segment::CubicTo(x1, y1, x2, y2, x, y) => builder.cubic_to(x1, y1, x2, y2, x, y),
                Segment::Close => builder.close(),
            }
        }
        builder.finish()
    }
}

/// A number with at most two decimals and no trailing zeros.
fn num(value: f32) -> String {
    let text = format!("{:.2}", value);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// Like [`num`], with a separating space unless the sign separates already.
fn sep_num(value: f32) -> String {
    let text = num(value);
    if text.starts_with('-') {
        text
    } else {
        format!(" {text}")
    }
}

/// Black paths on a white canvas of `width` × `height` dots at `dpi`.
#[derive(Clone, Debug)]
pub struct Drawing {
    pub width: u32,
    pub height: u32,
    pub dpi: u32,
    pub paths: Vec<Path>,
}

/// The PNG encoder failed (only possible on an internal error).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the PNG: {0}")]
pub struct RasterError(String);

impl Drawing {
    /// Physical size in millimetres.
    pub fn size_mm(&self) -> (f32, f32) {
        let mm = |dots: u32| dots as f32 * 25.4 / self.dpi as f32;
        (mm(self.width), mm(self.height))
    }

    /// A standalone SVG document with its physical size in millimetres.
    pub fn to_svg(&self) -> String {
        let (width_mm, height_mm) = self.size_mm();
        let mut svg = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" \
             width=\"{w}mm\" height=\"{h}mm\" viewBox=\"0 0 {vw} {vh}\">\n\
             <rect x=\"0\" y=\"0\" width=\"{vw}\" height=\"{vh}\" fill=\"#ffffff\"/>\n",
            w = num(width_mm),
            h = num(height_mm),
            vw = self.width,
            vh = self.height,
        );
        for path in self.paths.iter().filter(|p| !p.is_empty()) {
            let _ = writeln!(svg, "<path fill=\"#000000\" d=\"{}\"/>", path.svg_data());
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// Rasterises the drawing into an 8-bit greyscale PNG whose pHYs chunk
    /// carries the resolution, so it prints at its physical size.
    pub fn to_png(&self) -> Result<Vec<u8>, RasterError> {
        let mut pixmap = tiny_skia::Pixmap::new(self.width, self.height)
            .ok_or_else(|| RasterError(format!("invalid canvas size {}x{}", self.width, self.height)))?;
        pixmap.fill(tiny_skia::Color::WHITE);
        let mut paint = tiny_skia::Paint::default();
        paint.set_color(tiny_skia::Color::BLACK);
        paint.anti_alias = true;
        for path in self.paths.iter().filter_map(Path::to_skia) {
            pixmap.fill_path(
                &path,
                &paint,
                tiny_skia::FillRule::Winding,
                tiny_skia::Transform::identity(),
                None,
            );
        }
        // Opaque black on opaque white: the red channel is the grey level.
        let grey: Vec<u8> = pixmap.pixels().iter().map(|p| p.red()).collect();

        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let dots_per_metre = (self.dpi as f64 / 0.0254).round() as u32;
        encoder.set_pixel_dims(Some(png::PixelDimensions {
            xppu: dots_per_metre,
            yppu: dots_per_metre,
            unit: png::Unit::Meter,
        }));
        let mut writer = encoder.write_header().map_err(|e| RasterError(e.to_string()))?;
        writer.write_image_data(&grey).map_err(|e| RasterError(e.to_string()))?;
        writer.finish().map_err(|e| RasterError(e.to_string()))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_path_data_is_compact() {
        let mut path = Path::default();
        path.rect(1.0, 2.5, 3.0, -0.25);
        assert_eq!(path.svg_data(), "M1 2.5 L4 2.5 L4 2.25 L1 2.25 Z");
    }

    #[test]
    fn png_has_the_canvas_size_and_draws_black() {
        let mut path = Path::default();
        path.rect(0.0, 0.0, 5.0, 5.0);
        let drawing = Drawing { width: 10, height: 8, dpi: 300, paths: vec![path] };
        let png = drawing.to_png().unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), (10, 8));
        assert_eq!(info.pixel_dims.map(|d| d.xppu), Some(11811));
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut pixels).unwrap();
        assert_eq!(pixels[0], 0, "inside the square is black");
        assert_eq!(pixels[9], 255, "outside is white");
    }
}
