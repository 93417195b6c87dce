//! The one compaction entry point: open, analyse the guest file systems, guard the images that
//! read through this one, plan, apply, report. [`compact_path`] is what the `vdisk` command,
//! the benches and the fuzz targets call, so that the safe path is the easy one; the
//! lower-level [`GenericCompactor`] steps neither analyse nor guard children.

use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use crate::analysis::{
    AnalysisOptions, DiskAnalysis, Guard, GuardOutcome, VolumeReport, VolumeState,
    analyze_disk_with,
};
use crate::children::{ChildIndex, Children};
use crate::compact::{CompactOptions, CompactReport, Compactor, GenericCompactor, Mode};
use crate::error::{Error, ErrorKind};
use crate::format::{OpenOptions, Registry};
use crate::fs::FsAnalyzer;
use crate::image::{DiskImage, ImageKind};
use crate::partition::Layout;
use crate::progress::{CancelToken, Progress};

/// What a program knows: the image formats (a [`Registry`]) and the guest file systems (the
/// [`FsAnalyzer`]s, tried in order on each volume). Also remembers, between calls, what the
/// neighbours of the images it compacted said about their parents ([`ChildIndex`]).
#[derive(Debug)]
pub struct Toolkit {
    registry: Registry,
    analyzers: &'static [&'static dyn FsAnalyzer],
    children: Mutex<ChildIndex>,
}

impl Toolkit {
    /// A toolkit of `registry`'s formats and `analyzers`' file systems.
    pub fn new(registry: Registry, analyzers: &'static [&'static dyn FsAnalyzer]) -> Toolkit {
        Toolkit {
            registry,
            analyzers,
            children: Mutex::new(ChildIndex::default()),
        }
    }

    /// The formats.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The file-system analysers.
    pub fn analyzers(&self) -> &'static [&'static dyn FsAnalyzer] {
        self.analyzers
    }

    /// The images that read through the image at `path`, and the files that might but could
    /// not be told ([`ChildIndex::children_of`]).
    pub fn children_of(&self, path: &Path) -> Children {
        self.children_of_id(path, None)
    }

    /// [`Toolkit::children_of`] for an image whose identity is known
    /// ([`crate::DiskImage::image_id`]), so that children that name their parent by identity
    /// are told too ([`ChildIndex::children_of_id`]).
    pub fn children_of_id(&self, path: &Path, id: Option<&[u8]>) -> Children {
        self.lock_children()
            .children_of_id(path, id, &self.registry)
    }

    fn lock_children(&self) -> std::sync::MutexGuard<'_, ChildIndex> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What to do to one image.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CompactRequest {
    /// What to reclaim.
    pub mode: Mode,
    /// Only work out what would be reclaimed: open read-only, write nothing.
    pub dry_run: bool,
    /// Reclaim file-system free space even when differencing images read through this one
    /// (or might: files that could not be told). Their content then changes: only for
    /// children that will be discarded.
    pub force_children: bool,
    /// How to open the image (parent policy and any other open option); `writable` is set
    /// from [`CompactRequest::dry_run`].
    pub open: OpenOptions,
    /// Which hazards the user accepts when a file system's free space would destroy
    /// something (e.g. NTFS shadow copies): by default none, so such volumes are not trusted.
    pub analysis: AnalysisOptions,
}

impl CompactRequest {
    /// A compaction in `mode` with default open options, writing, guarding children.
    pub fn new(mode: Mode) -> CompactRequest {
        CompactRequest {
            mode,
            ..CompactRequest::default()
        }
    }

    /// Sets [`CompactRequest::dry_run`].
    #[must_use]
    pub fn dry_run(mut self, dry_run: bool) -> CompactRequest {
        self.dry_run = dry_run;
        self
    }

    /// Sets [`CompactRequest::force_children`].
    #[must_use]
    pub fn force_children(mut self, force: bool) -> CompactRequest {
        self.force_children = force;
        self
    }

    /// Sets the open options.
    #[must_use]
    pub fn open_options(mut self, open: OpenOptions) -> CompactRequest {
        self.open = open;
        self
    }

    /// Sets the analysis options (the hazards the user accepts).
    #[must_use]
    pub fn analysis_options(mut self, analysis: AnalysisOptions) -> CompactRequest {
        self.analysis = analysis;
        self
    }
}

/// What a compaction did (or, for a dry run, would do).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Outcome {
    /// Registry id of the image's format.
    pub format: &'static str,
    /// The numbers.
    pub report: CompactReport,
    /// The file-system analysis, for modes that use one (`None` also for a fixed disk in a
    /// block-moving mode, which is refused without reading it).
    pub analysis: Option<DiskAnalysis>,
    /// In words, what the analysis could not use: a partition table not understood, each
    /// volume untrusted or unrecognised, and what happens there instead.
    pub notes: Vec<String>,
    /// When file-system free space was not reclaimed because images read, or might read,
    /// through this one: which (empty otherwise, and always with
    /// [`CompactRequest::force_children`]).
    pub withheld_for: Children,
}

/// A compaction that failed, and what that means for the file.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: Error,
    /// True if nothing was written: the file is as it was. False if the failure came while
    /// writing: the image is valid (every step leaves it so) and the same call finishes the
    /// job.
    pub untouched: bool,
    /// What opening the image changed in the file by itself before the failure
    /// ([`DiskImage::implicit_changes`], e.g. a VHDX log replayed onto the file). When this
    /// is not empty, the file was changed even if `untouched` is true.
    pub implicit_changes: Vec<String>,
}

impl Failure {
    fn untouched(error: Error) -> Failure {
        Failure {
            error,
            untouched: true,
            implicit_changes: Vec::new(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let promise = if self.untouched && self.implicit_changes.is_empty() {
            "the file was not changed"
        } else if self.untouched {
            "the file was changed only by what its open did: a pending log was replayed"
        } else {
            "the image is valid; run the same compaction again to finish"
        };
        write!(f, "{} ({promise})", self.error)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Compacts the image at `path` as `request` says: opens it (exclusively, or read-only for a
/// dry run) with `request.open`, analyses its file systems with `toolkit`'s analysers (modes
/// that use them), withholds file-system free space if differencing images in its folder read
/// through it or might ([`Toolkit::children_of`]) unless `request.force_children`, plans,
/// and applies unless it is a dry run or nothing would change. Progress goes to `progress`;
/// `cancel` stops it at the next safe point.
///
/// Every virtual byte reads the same afterwards, except inside file-system-free ranges in
/// modes that use them; the children found read the same unless forced.
///
/// ```
/// use vdisk_core::{
///     BlockDevice, CancelToken, CompactRequest, CreateSpec, FormatDriver, ImageKind, Mode,
///     NoProgress, OpenOptions, Registry, StdFile, Toolkit, compact_path,
/// };
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("disk.vhd");
/// // A 16 MiB dynamic VHD (2 MiB blocks): one block of data, one that was written and
/// // then overwritten with zeros (it still holds host space).
/// let image = vdisk_vhd::DRIVER.create(
///     Box::new(StdFile::create_new(&path)?),
///     &CreateSpec::new(ImageKind::Dynamic, 16 << 20),
/// )?;
/// image.write_at(&[7u8; 4096], 0)?;
/// image.write_at(&[9u8; 4096], 4 << 20)?;
/// image.write_at(&vec![0u8; 2 << 20], 4 << 20)?;
/// image.flush()?;
/// drop(image);
///
/// // The program's formats and file systems (no file-system analyser in this example).
/// let toolkit = Toolkit::new(Registry::new(&[&vdisk_vhd::DRIVER]), &[]);
/// let request = CompactRequest::new(Mode::Full);
/// let done = compact_path(&path, &toolkit, &request, &NoProgress, &CancelToken::new())
///     .map_err(|f| f.error)?;
/// assert_eq!(done.format, "vhd");
/// assert_eq!(done.report.blocks_reclaimed_zero, 1);
/// assert!(done.report.bytes_after < done.report.bytes_before);
///
/// // The data is still there.
/// let image = toolkit.registry().open_path(&path, &OpenOptions::read_only())?;
/// let mut buf = [0u8; 4096];
/// image.read_at(&mut buf, 0)?;
/// assert_eq!(buf, [7u8; 4096]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn compact_path(
    path: &Path,
    toolkit: &Toolkit,
    request: &CompactRequest,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<Outcome, Failure> {
    if cancel.is_cancelled() {
        return Err(Failure::untouched(Error::new(
            ErrorKind::Cancelled,
            "cancelled before this file was started",
        )));
    }
    let mut open = request.open.clone();
    open.writable = !request.dry_run;
    // While its exclusive lock keeps this toolkit's other compactions (batch jobs in the same
    // folder) from reading it, they are told what it says about its parent.
    let own =
        (!request.dry_run).then(|| toolkit.lock_children().begin_own(path, &toolkit.registry));
    let result = toolkit
        .registry
        .open_path(path, &open)
        .map_err(Failure::untouched)
        .and_then(|mut image| compact_image(&mut *image, toolkit, request, progress, cancel));
    if let Some(own) = own.flatten() {
        toolkit.lock_children().end_own(own);
    }
    result
}

/// [`compact_path`] for an image already open (writable unless `request.dry_run`;
/// `request.open` is not used). Children are looked for beside the image's host file
/// ([`crate::HostFile::path`]); an image without a host path (in memory) has no neighbours
/// that could name it.
pub fn compact_image(
    image: &mut dyn DiskImage,
    toolkit: &Toolkit,
    request: &CompactRequest,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<Outcome, Failure> {
    // What the open left pending or did by itself (a VHDX log) is said either way: a replayed
    // log is a change, so a failure after it never claims the file was not changed.
    match compact_opened(image, toolkit, request, progress, cancel) {
        Ok(mut done) => {
            done.notes.extend(image.implicit_changes());
            Ok(done)
        }
        Err(mut failure) => {
            failure.implicit_changes = image.implicit_changes();
            Err(failure)
        }
    }
}

fn compact_opened(
    image: &mut dyn DiskImage,
    toolkit: &Toolkit,
    request: &CompactRequest,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<Outcome, Failure> {
    let mode = request.mode;
    let format = image.format();
    let mut opts = CompactOptions::new(mode);
    let mut notes = Vec::new();
    let mut withheld_for = Children::default();
    // A fixed disk in a block-moving mode is refused by the planner: no need to read it first.
    let refused = image.kind() == ImageKind::Fixed && mode.moves_blocks();
    let analysis = if mode.uses_file_system() && !refused {
        let disk: &dyn DiskImage = image;
        let analysis = analyze_disk_with(disk, toolkit.analyzers, &request.analysis)
            .map_err(Failure::untouched)?;
        notes = volume_notes(&analysis, mode);
        let children = match image.host_file().path() {
            Some(p) if !request.force_children && !analysis.free.is_empty() => {
                toolkit.children_of_id(p, image.image_id().as_deref())
            }
            _ => Children::default(),
        };
        if children.is_empty() {
            opts.fs_free = Some(analysis.free.whole_blocks(image.block_size()));
        } else {
            withheld_for = children;
        }
        Some(analysis)
    } else {
        None
    };
    let compactor = GenericCompactor;
    let plan = compactor
        .plan(image, &opts, progress, cancel)
        .map_err(Failure::untouched)?;
    let applying = |error| Failure {
        error,
        untouched: false,
        implicit_changes: Vec::new(),
    };
    let report = if request.dry_run {
        plan.report(true)
    } else if nothing_to_reclaim(&plan.report(true)) {
        // Nothing to reclaim: only what the open left pending in memory (a VHDX log) is
        // written, so that a re-run after an interruption finishes the job.
        image.prepare_write().map_err(applying)?;
        plan.report(false)
    } else {
        compactor
            .apply(image, &plan, progress, cancel)
            .map_err(applying)?
    };
    Ok(Outcome {
        format,
        report,
        analysis,
        notes,
        withheld_for,
    })
}

/// True if a compaction with this report changes nothing in the file.
pub fn nothing_to_reclaim(r: &CompactReport) -> bool {
    r.blocks_reclaimed == 0
        && r.blocks_moved == 0
        && r.bytes_punched == 0
        && r.bytes_after == r.bytes_before
}

/// The notes a compaction in `mode` gives about `analysis`: the table's own notes, an unknown
/// table, and each volume that is untrusted or unrecognised, with what happens there instead.
pub fn volume_notes(analysis: &DiskAnalysis, mode: Mode) -> Vec<String> {
    let instead = if mode.scans_for_zeros() {
        "only its blocks that hold nothing but zeros are given back"
    } else {
        "nothing of it is given back (quick mode does not look for blocks of zeros)"
    };
    let mut notes = Vec::new();
    match &analysis.layout {
        Layout::Unknown { reason } => notes.push(format!(
            "partition table not understood ({reason}); the space of deleted files is not given back on this disk"
        )),
        Layout::Table(t) => notes.extend(t.notes.iter().cloned()),
        Layout::Unpartitioned => {}
    }
    for v in &analysis.volumes {
        if let Some(g) = &v.guard {
            notes.extend(guard_note(v, g));
        }
        match &v.state {
            VolumeState::Trusted(_) => {}
            VolumeState::Untrusted { fs, reason } => {
                let anyway = match &v.guard {
                    // Front ends offer each hazard as `--discard-<hazard>` (the CLI does).
                    Some(g) => format!(" (--discard-{} reclaims it anyway)", g.hazard),
                    None => String::new(),
                };
                notes.push(format!("{} ({fs}): {reason}; {instead}{anyway}", v.name()));
            }
            VolumeState::Unrecognised => {
                let what = match (&v.partition, &v.inside) {
                    (Some(p), _) => {
                        format!("{}: no known file system ({})", v.name(), p.kind.describe())
                    }
                    (None, Some(_)) => format!("{}: no known file system", v.name()),
                    (None, None) => {
                        "no partition table and no known file system on the disk".to_string()
                    }
                };
                notes.push(format!("{what}; {instead}"));
            }
            VolumeState::Skipped { reason } => {
                notes.push(format!("{}: not examined, {reason}; {instead}", v.name()));
            }
        }
    }
    if mode == Mode::Quick && !analysis.any_trusted() {
        notes.push(
            "quick: no trusted file system on this disk, so only blocks the image already marks \
             trimmed are reclaimed; use --mode full to also reclaim all-zero blocks"
                .to_string(),
        );
    }
    notes
}

/// What a compaction says about a volume's hazard beyond its untrusted note.
fn guard_note(v: &VolumeReport, g: &Guard) -> Option<String> {
    let fs = v.fs().unwrap_or("?");
    match g.outcome {
        GuardOutcome::Accepted => Some(format!(
            "{} ({fs}): {}; --discard-{}: reclaimed anyway, so that data is discarded",
            v.name(),
            g.reason,
            g.hazard
        )),
        GuardOutcome::Kept => Some(format!(
            "{} ({fs}): {}: the space they need is kept",
            v.name(),
            g.reason
        )),
        GuardOutcome::Refused => None,
    }
}
