//! Rendering a figure to SVG and PNG, atomically.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::error::{Error, Result};
use crate::glyphs::GlyphBackend;

/// The embedded DejaVu Sans (see `assets/DejaVuSans-LICENSE.txt`). No system
/// fonts are looked up, so a figure renders the same on every machine.
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Family name every figure uses. Registering the embedded font under the generic
/// name means SVG viewers without DejaVu fall back to their own sans-serif.
pub(crate) const FONT: &str = "sans-serif";

pub(crate) fn font_bytes() -> &'static [u8] {
    DEJAVU_SANS
}

static FONT_ONCE: Once = Once::new();
static FONT_OK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Registers the embedded font with plotters (once per process).
pub(crate) fn ensure_font() -> Result<()> {
    FONT_ONCE.call_once(|| {
        let ok = register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok();
        FONT_OK.store(ok, Ordering::SeqCst);
    });
    if FONT_OK.load(Ordering::SeqCst) {
        Ok(())
    } else {
        Err(Error::Font)
    }
}

/// The two files a figure function wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FigureFiles {
    /// `<stem>.svg`
    pub svg: PathBuf,
    /// `<stem>.png`
    pub png: PathBuf,
}

/// Which file is being drawn; only the image grid draws differently (raster
/// tiles are blitted into the PNG and embedded as `<image>` in the SVG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Png,
    Svg,
}

pub(crate) type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A validated figure, ready to draw on any plotters backend.
pub(crate) trait Figure {
    /// Short name used in error messages (`"pareto"`).
    fn name(&self) -> &'static str;
    /// Canvas size in pixels (width, height).
    fn size(&self) -> (u32, u32);
    /// Draws the whole figure on `root` (already filled white).
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        target: Target,
    ) -> DrawResult<DB>;
    /// Raw SVG elements appended just before `</svg>` (raster tiles).
    fn svg_extra(&self) -> Result<String> {
        Ok(String::new())
    }
}

fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A temporary sibling of `path` whose name still ends in `ext` (the PNG
/// encoder picks the format from the extension).
fn temp_sibling(path: &Path, ext: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}-{seq}.tmp.{ext}", std::process::id()))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn draw_err<E: std::error::Error + Send + Sync>(
    figure: &'static str,
    e: DrawingAreaErrorKind<E>,
) -> Error {
    Error::Draw {
        figure,
        message: e.to_string(),
    }
}

/// Writes `bytes` to `path` through a temporary sibling and a rename, so a
/// reader never sees a half-written file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], ext: &str) -> Result<()> {
    let tmp = temp_sibling(path, ext);
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

fn render_svg<F: Figure>(fig: &F) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, fig.size()).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(fig.name(), e))?;
        fig.draw(&root, Target::Svg)
            .map_err(|e| draw_err(fig.name(), e))?;
        root.present().map_err(|e| draw_err(fig.name(), e))?;
    }
    let extra = fig.svg_extra()?;
    if !extra.is_empty() {
        match svg.rfind("</svg>") {
            Some(at) => svg.insert_str(at, &extra),
            None => {
                return Err(Error::Draw {
                    figure: fig.name(),
                    message: "SVG backend produced no closing </svg> tag".into(),
                })
            }
        }
    }
    Ok(svg)
}

fn render_png<F: Figure>(fig: &F, path: &Path) -> Result<()> {
    let tmp = temp_sibling(path, "png");
    let drawn = (|| {
        let root = GlyphBackend::new(BitMapBackend::new(&tmp, fig.size()))?.into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(fig.name(), e))?;
        fig.draw(&root, Target::Png)
            .map_err(|e| draw_err(fig.name(), e))?;
        // Encoding and saving happen here, so name the file.
        root.present().map_err(|e| Error::Draw {
            figure: fig.name(),
            message: format!("saving {}: {e}", path.display()),
        })
    })();
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

/// Draws `fig` into `<stem>.svg` and `<stem>.png`.
pub(crate) fn write_figure<F: Figure>(fig: &F, stem: &Path) -> Result<FigureFiles> {
    ensure_font()?;
    let files = FigureFiles {
        svg: with_suffix(stem, ".svg"),
        png: with_suffix(stem, ".png"),
    };
    let svg = render_svg(fig)?;
    write_atomic(&files.svg, svg.as_bytes(), "svg")?;
    render_png(fig, &files.png)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_is_appended_not_substituted() {
        assert_eq!(
            with_suffix(Path::new("out/fig.v1"), ".svg"),
            PathBuf::from("out/fig.v1.svg")
        );
    }

    #[test]
    fn temp_name_keeps_extension_and_directory() {
        let t = temp_sibling(Path::new("/a/b/pareto.png"), "png");
        assert_eq!(t.parent(), Some(Path::new("/a/b")));
        let name = t.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".pareto.png."), "{name}");
        assert!(name.ends_with(".tmp.png"), "{name}");
    }

    #[test]
    fn font_registers() {
        ensure_font().unwrap();
        ensure_font().unwrap();
    }
}
