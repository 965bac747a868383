//! PNG encoding of 8-bit RGB images (the `png` crate) and atomic file writes.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{NativeError, NativeResult};

/// How hard to compress: the `png` crate's presets (each picks a DEFLATE mode and a row filter).
///
/// `Fast` (fdeflate, adaptive filter) is the default: on overlays of photos it encoded about 20×
/// faster than zlib level 6 (`Balanced`) with files no larger (`benches/bench_render.py` prints
/// the table; `docs/render.md` has the figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// fdeflate with the `Up` filter: fastest, largest.
    Fastest,
    /// fdeflate with the adaptive filter.
    Fast,
    /// zlib level 6 with the adaptive filter (what Pillow and libpng use by default).
    Balanced,
    /// zlib level 9 with the adaptive filter: slowest; on overlays barely smaller than `Balanced`.
    High,
}

impl Compression {
    /// Parse `"fastest"`, `"fast"`, `"balanced"` or `"high"`.
    pub fn parse(name: &str) -> NativeResult<Compression> {
        match name {
            "fastest" => Ok(Compression::Fastest),
            "fast" => Ok(Compression::Fast),
            "balanced" => Ok(Compression::Balanced),
            "high" => Ok(Compression::High),
            other => Err(NativeError::Value(format!(
                "compression must be one of \"fastest\", \"fast\", \"balanced\", \"high\", got {other:?}"
            ))),
        }
    }

    fn preset(self) -> ::png::Compression {
        match self {
            Compression::Fastest => ::png::Compression::Fastest,
            Compression::Fast => ::png::Compression::Fast,
            Compression::Balanced => ::png::Compression::Balanced,
            Compression::High => ::png::Compression::High,
        }
    }
}

/// Encode a row-major `height × width` RGB image (`3·width·height` bytes) as a PNG file's bytes.
/// Returns a `ValueError` for a zero or oversized dimension or a wrong buffer length.
pub fn encode_rgb(
    pixels: &[u8],
    (height, width): (usize, usize),
    compression: Compression,
) -> NativeResult<Vec<u8>> {
    let too_big = |n: usize| n == 0 || n > i32::MAX as usize;
    if too_big(height) || too_big(width) {
        return Err(NativeError::Value(format!(
            "a PNG needs 1..=2^31-1 rows and columns, got {height}x{width}"
        )));
    }
    if Some(pixels.len()) != height.checked_mul(width).and_then(|n| n.checked_mul(3)) {
        return Err(NativeError::Value(format!(
            "{} bytes do not make a {height}x{width} RGB image",
            pixels.len()
        )));
    }
    let mut out = Vec::with_capacity(pixels.len() / 2 + 1024);
    let mut encoder = ::png::Encoder::new(&mut out, width as u32, height as u32);
    encoder.set_color(::png::ColorType::Rgb);
    encoder.set_depth(::png::BitDepth::Eight);
    encoder.set_compression(compression.preset());
    let encoding_error =
        |e: ::png::EncodingError| NativeError::Value(format!("PNG encoding failed: {e}"));
    let mut writer = encoder.write_header().map_err(encoding_error)?;
    writer.write_image_data(pixels).map_err(encoding_error)?;
    writer.finish().map_err(encoding_error)?;
    Ok(out)
}

/// Distinguishes temporary names of concurrent writes from one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `path` atomically: into a hidden temporary file in the same directory, then
/// renamed over `path`, so `path` never holds a partial file (if the process dies mid-write, only
/// the temporary file is left behind). The data is not fsynced: this guards against interrupted
/// processes, not power loss. Returns an `OSError` message naming the path on failure, after
/// removing the temporary file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> NativeResult<()> {
    let io_error =
        |what: &str, e: std::io::Error| NativeError::Io(format!("{what} {}: {e}", path.display()));
    let name = path
        .file_name()
        .ok_or_else(|| NativeError::Io(format!("{} is not a file path", path.display())))?;
    let temp = path.with_file_name(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = fs::File::create(&temp)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|e| io_error("cannot write", e))
        .and_then(|()| {
            fs::rename(&temp, path).map_err(|e| io_error("cannot rename a temporary file to", e))
        });
    if written.is_err() {
        // Best effort: the temporary may not exist (create failed); the original error is what matters.
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_valid_png_header() {
        let pixels: Vec<u8> = (0..5 * 7 * 3).map(|i| (i * 37 % 256) as u8).collect();
        for c in ["fastest", "fast", "balanced", "high"] {
            let bytes = encode_rgb(&pixels, (5, 7), Compression::parse(c).unwrap()).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
            let decoder = ::png::Decoder::new(std::io::Cursor::new(bytes));
            let mut reader = decoder.read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size().unwrap()];
            let info = reader.next_frame(&mut buf).unwrap();
            assert_eq!((info.width, info.height), (7, 5));
            assert_eq!(&buf[..info.buffer_size()], &pixels[..]);
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(encode_rgb(&[0; 6], (0, 2), Compression::Fast).is_err());
        assert!(encode_rgb(&[0; 5], (1, 2), Compression::Fast).is_err());
        assert!(Compression::parse("max").is_err());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("gradeclip-png-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.png");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.png")]);
        let err = write_atomic(&dir.join("missing").join("b.png"), b"x").unwrap_err();
        assert!(matches!(err, NativeError::Io(_)));
        fs::remove_dir_all(&dir).unwrap();
    }
}
