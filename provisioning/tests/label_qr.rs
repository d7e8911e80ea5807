//! The printed label's QR code, read by a real decoder (`zbarimg`), holds
//! exactly the viewer URL with the secret: from the PNG as written, and from
//! the SVG rasterised by `rsvg-convert`.

mod common;

use std::path::Path;

use common::{path_str, provision_ok, tool};
use lookout_provisioning::{Identity, IDENTITY_FILE_NAME};

/// Makes one identity; returns its folder and the identity.
fn one_identity(dir: &Path, prefix: &str) -> (std::path::PathBuf, Identity) {
    let out = dir.join("batch");
    provision_ok(["new", "--out", path_str(&out), "--prefix", prefix]);
    let folder = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
    let identity = Identity::load(&folder.join(IDENTITY_FILE_NAME)).unwrap();
    (folder, identity)
}

fn decode(image: &Path) -> String {
    let output = tool("zbar-tools", "zbarimg", &["--nodbus", "--quiet", "--raw", path_str(image)]);
    String::from_utf8(output.stdout).expect("UTF-8 from zbarimg")
}

/// Width, height and dots per metre from a PNG's IHDR and pHYs chunks.
fn png_facts(png: &[u8]) -> (u32, u32, Option<u32>) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    let phys = png.windows(4).position(|w| w == b"pHYs").map(|at| be(at + 4));
    (be(16), be(20), phys)
}

#[test]
fn png_label_qr_decodes_to_exactly_the_viewer_url() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, identity) = one_identity(dir.path(), "");
    let url = format!(
        "https://lookout-{}.local/#room={}",
        identity.device_id(),
        identity.room_secret().expose_hex()
    );
    assert_eq!(decode(&folder.join("label.png")), format!("{url}\n"));

    // Print-ready: 50 x 30 mm at 300 dpi.
    let (width, height, dots_per_metre) = png_facts(&std::fs::read(folder.join("label.png")).unwrap());
    assert_eq!((width, height), (591, 354));
    assert_eq!(dots_per_metre, Some(11811), "300 dpi");
}

#[test]
fn svg_label_qr_decodes_after_rasterising_with_librsvg() {
    let dir = tempfile::tempdir().unwrap();
    // The longest device ID makes the densest code and the longest name.
    let (folder, identity) = one_identity(dir.path(), "abcdefgh");
    let svg = folder.join("label.svg");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("width=\"50.04mm\" height=\"29.97mm\""), "physical size in the SVG");

    let raster = dir.path().join("from-svg.png");
    tool(
        "librsvg2-bin",
        "rsvg-convert",
        &["--dpi-x", "300", "--dpi-y", "300", "-o", path_str(&raster), path_str(&svg)],
    );
    let (width, height, _) = png_facts(&std::fs::read(&raster).unwrap());
    assert!((590..=592).contains(&width) && (353..=355).contains(&height), "{width}x{height}");
    assert_eq!(decode(&raster), format!("{}\n", identity.viewer_url(None)));

    // Also at a low resolution, as a cheap printer would.
    let small = dir.path().join("from-svg-150.png");
    tool(
        "librsvg2-bin",
        "rsvg-convert",
        &["--dpi-x", "150", "--dpi-y", "150", "-o", path_str(&small), path_str(&svg)],
    );
    assert_eq!(decode(&small), format!("{}\n", identity.viewer_url(None)));
}

#[test]
fn labels_of_two_cameras_differ() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = one_identity(&dir.path().join("a"), "");
    let (b, _) = one_identity(&dir.path().join("b"), "");
    assert_ne!(decode(&a.join("label.png")), decode(&b.join("label.png")));
}
