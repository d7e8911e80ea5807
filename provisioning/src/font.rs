//! Text as outlines: glyphs of the Hack typeface turned into vector paths.
//!
//! Hack (MIT and Bitstream Vera licences) is a monospaced font designed to
//! tell `0`/`O` and `1`/`l` apart, which matters for a secret typed by hand.
//! It comes from the `epaint_default_fonts` crate, so nothing is downloaded
//! at run time and the labels print the same on every machine.

use crate::vector::{Path, Segment};

/// A parsed font, ready to lay out single lines of text.
pub struct Font {
    face: ttf_parser::Face<'static>,
}

/// The embedded font could not be parsed (a broken build).
#[derive(Debug, thiserror::Error)]
#[error("the embedded font cannot be read: {0}")]
pub struct FontError(String);

impl Font {
    /// The embedded Hack Regular.
    pub fn hack() -> Result<Font, FontError> {
        let face = ttf_parser::Face::parse(epaint_default_fonts::HACK_REGULAR, 0)
            .map_err(|e| FontError(e.to_string()))?;
        Ok(Font { face })
    }

    fn scale(&self, size: f32) -> f32 {
        size / f32::from(self.face.units_per_em())
    }

    /// Width of `text` at `size` (dots per em).
    pub fn width(&self, text: &str, size: f32) -> f32 {
        text.chars().map(|c| self.advance(c)).sum::<f32>() * self.scale(size)
    }

    /// The largest size (up to `max_size`) at which `text` fits in `width`.
    pub fn fit(&self, text: &str, width: f32, max_size: f32) -> f32 {
        let at_one = self.width(text, 1.0);
        if at_one <= 0.0 {
            return max_size;
        }
        (width / at_one).min(max_size)
    }

    fn glyph(&self, c: char) -> Option<ttf_parser::GlyphId> {
        self.face.glyph_index(c).or_else(|| self.face.glyph_index('?'))
    }

    fn advance(&self, c: char) -> f32 {
        self.glyph(c).and_then(|g| self.face.glyph_hor_advance(g)).map_or(0.0, f32::from)
    }

    /// Appends the outlines of `text`, starting at `x` on the `baseline`, to `path`.
    pub fn draw(&self, text: &str, x: f32, baseline: f32, size: f32, path: &mut Path) {
        let scale = self.scale(size);
        let mut pen = x;
        for c in text.chars() {
            if let Some(glyph) = self.glyph(c) {
                let mut outline = Outline { path: &mut *path, x: pen, y: baseline, scale };
                // Glyphs without outline (the space) are simply skipped.
                let _ = self.face.outline_glyph(glyph, &mut outline);
            }
            pen += self.advance(c) * scale;
        }
    }
}

/// Maps font units (y up) to canvas dots (y down) while collecting a glyph.
struct Outline<'a> {
    path: &'a mut Path,
    x: f32,
    y: f32,
    scale: f32,
}

impl Outline<'_> {
    fn point(&self, x: f32, y: f32) -> (f32, f32) {
        (self.x + x * self.scale, self.y - y * self.scale)
    }
}

impl ttf_parser::OutlineBuilder for Outline<'_> {
    fn move_to(&mut self, x: f32, y: f32) {
        let (x, y) = self.point(x, y);
        self.path.push(Segment::MoveTo(x, y));
    }

    fn line_to(&mut self, x: f32, y: f32) {
        let (x, y) = self.point(x, y);
        self.path.push(Segment::LineTo(x, y));
    }

    fn quad_to(&mut self, x1: f32, y1: f32, x: f32, y: f32) {
        let (x1, y1) = self.point(x1, y1);
        let (x, y) = self.point(x, y);
        self.path.push(Segment::QuadTo(x1, y1, x, y));
    }

    fn curve_to(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, x: f32, y: f32) {
        let (x1, y1) = self.point(x1, y1);
        let (x2, y2) = self.point(x2, y2);
        let (x, y) = self.point(x, y);
        self.path.push(Segment::CubicTo(x1, y1, x2, y2, x, y));
    }

    fn close(&mut self) {
        self.path.push(Segment::Close);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monospace_width_and_fit() {
        let font = Font::hack().unwrap();
        let one = font.width("a", 10.0);
        assert!(one > 5.0 && one < 7.0, "Hack advances about 0.6 em: {one}");
        assert!((font.width("abcd", 10.0) - 4.0 * one).abs() < 1e-3);
        let size = font.fit("abcd", 100.0, 1000.0);
        assert!((font.width("abcd", size) - 100.0).abs() < 1e-2);
        assert_eq!(font.fit("abcd", 1000.0, 12.0), 12.0);
    }

    #[test]
    fn draws_outlines_for_letters_but_not_spaces() {
        let font = Font::hack().unwrap();
        let mut path = Path::default();
        font.draw(" ", 0.0, 10.0, 10.0, &mut path);
        assert!(path.is_empty());
        font.draw("A", 0.0, 10.0, 10.0, &mut path);
        assert!(!path.is_empty());
    }
}
