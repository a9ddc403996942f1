//! `--svg FILE`: aggregate throughput against threads, one panel per workload, drawn
//! with plotters' SVG backend.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::workloads::Kind;

/// One line of a panel: an implementation's median throughput per thread count.
pub struct Series {
    pub name: String,
    pub kind: Kind,
    /// `(threads, median Mops/s)`.
    pub points: Vec<(usize, f64)>,
}

/// One panel.
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

/// Draws the panels (two per row) as an SVG document.
pub fn render_svg(caption: &str, threads: &[usize], panels: &[Panel]) -> Result<String, String> {
    if panels.is_empty() {
        return Err("nothing to plot".into());
    }
    let cols = if panels.len() > 1 { 2 } else { 1 };
    let rows = panels.len().div_ceil(cols);
    let (w, h) = (560 * cols as u32, 60 + 400 * rows as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        draw(&root, caption, threads, panels, rows, cols).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Where `--svg FILE` goes, checked before anything is measured and written only
/// once the figure is complete: an interrupted run leaves no file, or a truncated
/// one, at FILE.
#[derive(Debug, PartialEq, Eq)]
pub enum Destination {
    /// A regular file, or nothing yet: the figure is written to a temporary file in
    /// the same directory (`dir`), then renamed to `file` (FILE, its symlinks
    /// resolved, so that a link to a file updates that file).
    Replace { file: PathBuf, dir: PathBuf },
    /// Written in place at the end: something other than a regular file (a device,
    /// `/dev/stdout`, a FIFO: nothing there to leave half-written, and renaming over
    /// `/dev/null` would replace the device), or a writable FILE in a directory that
    /// takes no new file (where a temporary file cannot be made; FILE keeps its old
    /// contents until the end).
    InPlace(PathBuf),
}

impl Destination {
    /// Checks that FILE can be written, as `> FILE` would be: a directory is refused,
    /// an existing FILE must open for writing (a read-only one is refused; opened
    /// without truncating it), and a new FILE needs a directory that takes a new file
    /// (one is created and removed at once: no file is left behind).
    pub fn check(path: &Path) -> std::io::Result<Destination> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Err(std::io::Error::from(std::io::ErrorKind::IsADirectory)),
            Ok(m) if !m.is_file() => {
                std::fs::OpenOptions::new().write(true).open(path)?;
                Ok(Destination::InPlace(path.to_path_buf()))
            }
            Ok(_) => {
                std::fs::OpenOptions::new().write(true).open(path)?;
                let file = std::fs::canonicalize(path)?;
                let dir = parent(&file);
                Ok(match probe(&dir, &file) {
                    Ok(()) => Destination::Replace { file, dir },
                    // FILE is writable but no file can be made beside it: as before
                    // the temporary files, FILE itself is written at the end.
                    Err(_) => Destination::InPlace(file),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // `new/` names a directory: refused now (as `> new/`), not after
                // measuring when the rename fails.
                if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
                    return Err(std::io::Error::from(std::io::ErrorKind::IsADirectory));
                }
                // A dangling symlink names the file to make: its target (as
                // `> FILE` would create it), not the link replaced by a file.
                let file = dangling_target(path)?;
                let dir = parent(&file);
                probe(&dir, &file)?;
                Ok(Destination::Replace { file, dir })
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the finished figure: into a temporary file renamed over FILE (keeping
    /// an existing FILE's permissions), or in place.
    pub fn write(&self, svg: &str) -> std::io::Result<()> {
        self.write_with(svg, |from, to| std::fs::rename(from, to))
    }

    /// [`Destination::write`] with `rename` for `std::fs::rename` (for tests). No
    /// temporary file is left whatever fails. A FILE that cannot be renamed over
    /// because it is a mount point of its own (`EBUSY`: a file bind-mounted into a
    /// container; `EXDEV`) is written in place instead, as before the temporary
    /// files.
    fn write_with(
        &self,
        svg: &str,
        rename: impl FnOnce(&Path, &Path) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        match self {
            Destination::InPlace(path) => std::fs::write(path, svg),
            Destination::Replace { file, dir } => {
                let (mut f, temp) = create_temp(dir, file)?;
                let written = f
                    .write_all(svg.as_bytes())
                    .and_then(|()| match std::fs::metadata(file) {
                        Ok(m) => f.set_permissions(m.permissions()),
                        Err(_) => Ok(()),
                    })
                    .and_then(|()| {
                        drop(f);
                        rename(&temp, file)
                    });
                match written {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let _ = std::fs::remove_file(&temp);
                        if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EXDEV))
                            && std::fs::metadata(file).is_ok_and(|m| m.is_file())
                        {
                            std::fs::write(file, svg)
                        } else {
                            Err(e)
                        }
                    }
                }
            }
        }
    }
}

/// The directory of `file` (`.` for a bare name).
fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `path` with its symlinks followed as far as they go (for a path that does not
/// resolve: a name that does not exist, or a link to one). At most 40 links, as the
/// kernel.
fn dangling_target(path: &Path) -> std::io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p)?;
                p = if target.is_absolute() {
                    target
                } else {
                    parent(&p).join(target)
                };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ELOOP))
}

/// Whether `dir` takes a new file: one is created and removed at once.
fn probe(dir: &Path, file: &Path) -> std::io::Result<()> {
    let (probe, temp) = create_temp(dir, file)?;
    drop(probe);
    std::fs::remove_file(&temp)
}

/// A new file in `dir` named after `file` and this process
/// (`.NAME.rseq-bench-PID-N.tmp`), never one that exists already.
fn create_temp(dir: &Path, file: &Path) -> std::io::Result<(std::fs::File, PathBuf)> {
    let name = file
        .file_name()
        .map_or_else(|| "plot".into(), |n| n.to_string_lossy());
    let pid = std::process::id();
    let mut n = 0u32;
    loop {
        let temp = dir.join(format!(".{name}.rseq-bench-{pid}-{n}.tmp"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(f) => return Ok((f, temp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    threads: &[usize],
    panels: &[Panel],
    rows: usize,
    cols: usize,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(caption, ("sans-serif", 16))?;
    let areas = root.split_evenly((rows, cols));
    // The x axis is the index of the thread count, labelled with the count: the
    // measured counts (1, nproc, 4 x nproc) are then evenly spaced.
    let label_of = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < threads.len() {
            threads[i as usize].to_string()
        } else {
            String::new()
        }
    };
    let index_of = |t: usize| threads.iter().position(|&x| x == t).unwrap_or(0) as f64;
    // One colour per baseline name across the panels (Mutex<Vec> is the same colour
    // in the stack and buffer panels).
    let mut baseline_names: Vec<&str> = Vec::new();
    for s in panels.iter().flat_map(|p| &p.series) {
        if s.kind == Kind::Baseline && !baseline_names.contains(&s.name.as_str()) {
            baseline_names.push(&s.name);
        }
    }
    let baseline_color = |name: &str| baseline_names.iter().position(|n| *n == name).unwrap_or(0);
    for (panel, area) in panels.iter().zip(areas) {
        let values = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|v| *v > 0.0 && v.is_finite());
        let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if hi <= 0.0 {
            continue;
        }
        let last = (threads.len().max(1) - 1) as f64;
        // Leave the bottom of the panel free for the legend: the decades the data
        // spans, stretched so that the legend's rows fit under the lowest line.
        let plot_px = 300.0;
        let legend_px = 16.0 * panel.series.len() as f64 + 20.0;
        let top = hi * 2.0;
        let decades = (top / (lo / 1.5)).log10() / (1.0 - (legend_px / plot_px).min(0.7));
        let bottom = top / 10f64.powf(decades);
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.25..last + 0.25, (bottom..top).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("threads")
            .y_desc("Mops/s (log scale)")
            .x_labels(threads.len() * 4 + 1)
            .disable_x_mesh()
            .x_label_formatter(&label_of)
            .y_label_formatter(&|v| format_mops(*v))
            .draw()?;
        let mut rseq_lines = 0;
        for s in &panel.series {
            let (color, width) = match s.kind {
                Kind::Rseq => {
                    rseq_lines += 1;
                    match rseq_lines {
                        1 => (RED.to_rgba(), 3),
                        2 => (RGBColor(150, 0, 40).to_rgba(), 2),
                        _ => (RGBColor(240, 130, 130).to_rgba(), 2),
                    }
                }
                Kind::Baseline => {
                    let c = BASELINE_COLORS[baseline_color(&s.name) % BASELINE_COLORS.len()];
                    (c.to_rgba(), 2)
                }
                Kind::Floor => (RGBColor(120, 120, 120).to_rgba(), 1),
            };
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| p.1 > 0.0)
                .map(|&(t, m)| (index_of(t), m))
                .collect();
            let style = ShapeStyle::from(color).stroke_width(width);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), style))?
                .label(match s.kind {
                    Kind::Floor => format!("{} (floor)", s.name),
                    _ => s.name.clone(),
                })
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            chart.draw_series(
                pts.iter()
                    .map(|&p| Circle::new(p, 3, ShapeStyle::from(color).filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 11))
            .draw()?;
    }
    Ok(())
}

/// Distinct colours for the baselines (Tableau 10 without its red, which marks rseq,
/// and without grey, which marks floors; navy added).
const BASELINE_COLORS: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(57, 59, 121),
];

fn format_mops(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVG: &str = "<svg>the figure</svg>\n";

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .expect("the scratch directory")
            .map(|e| e.expect("an entry").file_name().to_string_lossy().into())
            .collect();
        n.sort();
        n
    }

    fn scratch(name: &str) -> restartable_test_support::Scratch {
        restartable_test_support::scratch_in(&std::env::temp_dir().join("rseq-plot-tests"), name)
    }

    /// A FILE that is a mount point of its own (a bind-mounted file) cannot be
    /// renamed over (`EBUSY`): the figure is written into it instead, as before the
    /// temporary files, and the temporary file is gone.
    #[test]
    fn a_file_that_cannot_be_renamed_over_is_written_in_place() {
        let dir = scratch("busy");
        let file = dir.join("plot.svg");
        std::fs::write(&file, "old").unwrap();
        let d = Destination::check(&file).expect("a writable destination");
        assert!(matches!(d, Destination::Replace { .. }), "{d:?}");
        d.write_with(SVG, |_, _| {
            Err(std::io::Error::from_raw_os_error(libc::EBUSY))
        })
        .expect("written in place");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), SVG);
        assert_eq!(names(&dir), ["plot.svg"]);
    }

    /// Another failure of the rename is an error: FILE keeps its old contents and no
    /// temporary file is left.
    #[test]
    fn a_failed_rename_leaves_the_file_and_no_temporary_file() {
        let dir = scratch("rename-fails");
        let file = dir.join("plot.svg");
        std::fs::write(&file, "old").unwrap();
        let d = Destination::check(&file).expect("a writable destination");
        let e = d
            .write_with(SVG, |_, _| {
                Err(std::io::Error::from_raw_os_error(libc::EIO))
            })
            .expect_err("the rename's error");
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "old");
        assert_eq!(names(&dir), ["plot.svg"]);
    }

    /// A dangling symlink at FILE: the figure goes to the file it names (as `> FILE`
    /// would), the link stays a link.
    #[test]
    fn a_dangling_symlink_gets_its_target_written() {
        let dir = scratch("dangling");
        let link = dir.join("plot.svg");
        std::os::unix::fs::symlink("target.svg", &link).unwrap();
        let d = Destination::check(&link).expect("a writable destination");
        assert_eq!(names(&dir), ["plot.svg"], "the check left a file");
        d.write(SVG).expect("written");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_to_string(dir.join("target.svg")).unwrap(),
            SVG
        );
        assert_eq!(names(&dir), ["plot.svg", "target.svg"]);
    }

    /// A new FILE named as a directory (`new/`) is refused by the check, before
    /// anything is measured, and nothing is made.
    #[test]
    fn a_new_path_ending_in_a_slash_is_refused_by_the_check() {
        let dir = scratch("slash");
        let mut p = dir.join("new").into_os_string();
        p.push("/");
        let e = Destination::check(Path::new(&p)).expect_err("a directory name");
        assert_eq!(e.kind(), std::io::ErrorKind::IsADirectory);
        assert!(names(&dir).is_empty(), "{:?}", names(&dir));
    }

    /// An existing FILE: renamed over, keeping its permissions; a new FILE: made.
    #[test]
    fn a_file_is_replaced_keeping_its_permissions() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch("replace");
        let file = dir.join("plot.svg");
        std::fs::write(&file, "old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        Destination::check(&file).unwrap().write(SVG).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), SVG);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);
        let new = dir.join("new.svg");
        let d = Destination::check(&new).unwrap();
        assert!(!new.exists(), "the check made FILE");
        d.write(SVG).unwrap();
        assert_eq!(std::fs::read_to_string(&new).unwrap(), SVG);
        assert_eq!(names(&dir), ["new.svg", "plot.svg"]);
    }
}
