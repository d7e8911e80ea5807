//! The printed label: what the buyer scans and types.
//!
//! About 50 × 30 mm at 300 dpi (591 × 354 dots): on the left a QR code of
//! `https://lookout-<id>.local/#room=<secret>`; on the right the device name,
//! the room secret in 8 groups of 8 characters for typing by hand, and the
//! short SHA-256 fingerprint of the camera's certificate, to compare with
//! the browser's certificate warning. The label is laid out once as vector
//! paths (text included, as glyph outlines) and written as SVG and PNG.
//!
//! The label holds the room secret: its files are written with mode 0600.

use qrcode::{EcLevel, QrCode};

use crate::font::{Font, FontError};
use crate::vector::{Drawing, Path, RasterError};
use crate::Identity;

/// Printer resolution the label is laid out for.
pub const DPI: u32 = 300;
/// Label width in dots (50 mm).
pub const WIDTH: u32 = 591;
/// Label height in dots (30 mm).
pub const HEIGHT: u32 = 354;
/// Modules of white around the QR code, as the standard asks.
pub const QUIET_ZONE: usize = 4;

/// File names of the label next to the identity file.
pub const SVG_FILE_NAME: &str = "label.svg";
pub const PNG_FILE_NAME: &str = "label.png";

const EDGE: f32 = 6.0;
const GAP: f32 = 8.0;
const RIGHT_MARGIN: f32 = 14.0;

/// Why a label could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("cannot encode the QR code: {0}")]
    Qr(String),
    #[error("the QR code does not fit on the label ({0} modules)")]
    QrTooLarge(usize),
    #[error(transparent)]
    Font(#[from] FontError),
    #[error(transparent)]
    Raster(#[from] RasterError),
}

/// A laid-out label.
pub struct Label {
    url: String,
    drawing: Drawing,
}

impl Label {
    /// Lays out the label of `identity`.
    pub fn new(identity: &Identity) -> Result<Label, LabelError> {
        let url = identity.viewer_url(None);
        let font = Font::hack()?;
        let mut paths = Vec::new();

        let qr_size = qr_path(&url, &mut paths)?;
        let left = EDGE + qr_size + GAP;
        let width = WIDTH as f32 - left - RIGHT_MARGIN;
        let mut text = TextColumn { font: &font, left, width, baseline: 30.0, path: Path::default() };

        text.line(&identity.hostname(), 40.0, 0.0);
        text.line("Room secret", 20.0, 10.0);
        let secret = identity.room_secret().expose_hex();
        let groups = secret_groups(&secret);
        for pair in groups.chunks(2) {
            text.line(&pair.join(" "), 27.0, 2.0);
        }
        text.line("Certificate SHA-256", 20.0, 10.0);
        let fingerprint = identity.certificate_fingerprint_short();
        for half in [fingerprint.get(..11), fingerprint.get(12..)].into_iter().flatten() {
            text.line(half, 26.0, 2.0);
        }
        paths.push(text.path);

        Ok(Label { url, drawing: Drawing { width: WIDTH, height: HEIGHT, dpi: DPI, paths } })
    }

    /// The URL the QR code holds (with the secret).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The label as a standalone SVG document (no fonts needed).
    pub fn svg(&self) -> String {
        self.drawing.to_svg()
    }

    /// The label as a greyscale PNG at [`DPI`].
    pub fn png(&self) -> Result<Vec<u8>, LabelError> {
        Ok(self.drawing.to_png()?)
    }
}

/// The 64-character secret as 8 groups of 8, the form printed for typing.
pub fn secret_groups(secret_hex: &str) -> Vec<&str> {
    let mut groups = Vec::with_capacity(8);
    let mut rest = secret_hex;
    while !rest.is_empty() {
        let cut = rest.len().min(8);
        let (group, tail) = rest.split_at(cut);
        groups.push(group);
        rest = tail;
    }
    groups
}

/// Draws the QR code (with its quiet zone) at the label's left edge,
/// vertically centred, with whole dots per module so the print is crisp.
/// Returns the side length in dots.
fn qr_path(url: &str, paths: &mut Vec<Path>) -> Result<f32, LabelError> {
    let code = QrCode::with_error_correction_level(url.as_bytes(), EcLevel::M)
        .map_err(|e| LabelError::Qr(e.to_string()))?;
    let modules = code.width();
    let total = modules + 2 * QUIET_ZONE;
    let module = (HEIGHT as f32 - 2.0 * EDGE) / total as f32;
    let module = module.floor();
    if module < 3.0 {
        return Err(LabelError::QrTooLarge(modules));
    }
    let side = module * total as f32;
    let top = ((HEIGHT as f32 - side) / 2.0).floor();
    let colors = code.to_colors();
    let mut path = Path::default();
    for (row, line) in colors.chunks(modules).enumerate() {
        // One rectangle per run of dark modules keeps the SVG small.
        let mut col = 0;
        while col < modules {
            if line[col] != qrcode::Color::Dark {
                col += 1;
                continue;
            }
            let start = col;
            while col < modules && line[col] == qrcode::Color::Dark {
                col += 1;
            }
            path.rect(
                EDGE + (QUIET_ZONE + start) as f32 * module,
                top + (QUIET_ZONE + row) as f32 * module,
                (col - start) as f32 * module,
                module,
            );
        }
    }
    paths.push(path);
    Ok(side)
}

/// Lines of text stacked down the label's right-hand column.
struct TextColumn<'a> {
    font: &'a Font,
    left: f32,
    width: f32,
    baseline: f32,
    path: Path,
}

impl TextColumn<'_> {
    /// Adds one line, shrunk to the column's width if needed, `space_before`
    /// dots below the previous one.
    fn line(&mut self, text: &str, max_size: f32, space_before: f32) {
        let size = self.font.fit(text, self.width, max_size);
        self.baseline += space_before + size;
        self.font.draw(text, self.left, self.baseline, size, &mut self.path);
        self.baseline += size * 0.15;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceId;

    #[test]
    fn secret_is_grouped_by_eight() {
        let secret = "0123456789abcdef".repeat(4);
        let groups = secret_groups(&secret);
        assert_eq!(groups.len(), 8);
        assert!(groups.iter().all(|g| g.len() == 8));
        assert_eq!(groups.concat(), secret);
    }

    #[test]
    fn label_fits_its_canvas_for_the_longest_id() {
        let identity = Identity::generate(DeviceId::parse("abcdefghijkl").unwrap()).unwrap();
        let label = Label::new(&identity).unwrap();
        assert_eq!(label.url(), identity.viewer_url(None));
        let svg = label.svg();
        assert!(svg.contains("width=\"50.04mm\" height=\"29.97mm\""), "{}", &svg[..300]);
        // Text is outlines: the secret is not in the SVG as text.
        assert!(!svg.contains(&identity.room_secret().expose_hex()[..8]));
        let png = label.png().unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
