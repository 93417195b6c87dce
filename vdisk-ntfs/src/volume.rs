//! One analysis of a volume whose boot sector passed: the trust checks and the `$Bitmap` read,
//! all through the `ntfs` crate (MFT records, fixups, attributes, data runs, the root index).

use std::io::SeekFrom;
use std::ops::Range;

use ntfs::attribute_value::NtfsAttributeValue;
use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsIndexRoot, NtfsVolumeFlags};
use ntfs::{
    KnownNtfsFileRecordNumber as Known, Ntfs, NtfsAttributeFlags, NtfsAttributeType, NtfsError,
    NtfsFile, NtfsReadSeek,
};
use vdisk_core::FsUsage;

use crate::bitmap::{FreeClusters, FreeRuns};
use crate::boot_sector::Geometry;
use crate::hiberfile::{self, Hibernation};
use crate::logfile::{self, LogState};
use vdisk_core::fs::StreamReader;

/// Bitmap bytes read per step (the bitmap of a 2 TiB volume in 4 KiB clusters is 64 MiB).
const BITMAP_CHUNK: u64 = 1 << 20;
/// Most data runs accepted for one system file's `$DATA` (bounds the run lists kept).
const MAX_RUNS: usize = 1 << 16;
/// Largest directory index record accepted (Windows uses 4096).
const MAX_INDEX_RECORD: u32 = 64 << 10;

/// Why a volume's free map must not be trusted, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Doubt(pub String);

fn damaged(what: &str) -> impl FnOnce(NtfsError) -> Doubt + '_ {
    move |e| {
        Doubt(format!(
            "ntfs metadata is damaged: cannot read {what} ({e})"
        ))
    }
}

/// Checks that the volume may be trusted and reads its free clusters.
pub(crate) fn examine(fs: &mut StreamReader<'_>, g: &Geometry) -> Result<FsUsage, Doubt> {
    let mut ntfs = Ntfs::new(fs).map_err(damaged("the boot sector"))?;
    if u64::from(ntfs.cluster_size()) != g.cluster_size
        || u64::from(ntfs.file_record_size()) != g.mft_record_size
    {
        return Err(Doubt(
            "the ntfs reader disagrees with the boot sector about the volume geometry".into(),
        ));
    }
    let (version, label) = check_volume_file(&ntfs, fs)?;
    check_journal(&ntfs, fs)?;
    ntfs.read_upcase_table(fs).map_err(damaged("$UpCase"))?;
    check_hibernation(&ntfs, fs)?;
    let (free, bitmap_runs) = read_bitmap(&ntfs, fs, g)?;

    // Clusters the file system certainly uses must be marked used: a cheap guard against a
    // bitmap that is readable but wrong.
    let mut known: Vec<(&str, Range<u64>)> = vec![
        ("the boot sector", 0..1),
        ("$MFT", g.mft_lcn..g.mft_lcn + 1),
        ("$MFTMirr", g.mft_mirror_lcn..g.mft_mirror_lcn + 1),
    ];
    known.extend(bitmap_runs.into_iter().map(|r| ("$Bitmap", r)));
    for (name, record) in [("$MFT", Known::MFT), ("$LogFile", Known::LogFile)] {
        let file = ntfs.file(fs, record as u64).map_err(damaged(name))?;
        let runs = data_runs(&file, fs, name, g)?;
        known.extend(runs.into_iter().map(|r| (name, r)));
    }
    if let Some((name, _)) = known.iter().find(|(_, r)| free.any_free(r)) {
        return Err(Doubt(format!(
            "$Bitmap marks clusters of {name} as free: the bitmap does not match the volume \
             (run chkdsk)"
        )));
    }

    let free_clusters = free.count();
    let details = vec![
        ("label".to_owned(), label),
        ("version".to_owned(), version),
        ("cluster_size".to_owned(), g.cluster_size.to_string()),
        ("clusters".to_owned(), g.cluster_count.to_string()),
        (
            "used_clusters".to_owned(),
            (g.cluster_count - free_clusters).to_string(),
        ),
        ("free_clusters".to_owned(), free_clusters.to_string()),
    ];
    Ok(FsUsage {
        fs: crate::ID,
        cluster_size: g.cluster_size,
        free: free.into_map(),
        details,
    })
}

/// `$Volume`: dirty flag, version, label.
fn check_volume_file(ntfs: &Ntfs, fs: &mut StreamReader<'_>) -> Result<(String, String), Doubt> {
    let info = ntfs.volume_info(fs).map_err(damaged("$Volume"))?;
    let flags = info.flags();
    if flags.intersects(NtfsVolumeFlags::IS_DIRTY | NtfsVolumeFlags::CHKDSK_UNDERWAY) {
        return Err(Doubt("volume is marked dirty (chkdsk pending)".into()));
    }
    let (major, minor) = (info.major_version(), info.minor_version());
    if major != 1 && major != 3 {
        return Err(Doubt(format!("unsupported ntfs version {major}.{minor}")));
    }
    let label = match ntfs.volume_name(fs) {
        None => String::new(),
        Some(name) => name
            .map_err(damaged("the volume label"))?
            .name()
            .to_string_lossy(),
    };
    Ok((format!("{major}.{minor}"), label))
}

/// `$LogFile`: see [`logfile::assess`].
fn check_journal(ntfs: &Ntfs, fs: &mut StreamReader<'_>) -> Result<(), Doubt> {
    let file = ntfs
        .file(fs, Known::LogFile as u64)
        .map_err(damaged("$LogFile"))?;
    let item = unnamed_data(&file, fs, "$LogFile")?;
    let attribute = item.to_attribute().map_err(damaged("$LogFile"))?;
    let mut value = attribute.value(fs).map_err(damaged("$LogFile"))?;
    let size = value.len();
    let state = logfile::assess(size, |offset, buf| {
        value.seek(fs, SeekFrom::Start(offset))?;
        value.read_exact(fs, buf)
    })
    .map_err(damaged("$LogFile"))?;
    match state {
        LogState::Empty | LogState::Clean => Ok(()),
        LogState::Unclean => Err(Doubt(
            "volume was not shut down cleanly ($LogFile has pending transactions); mount it in \
             Windows and shut down fully, or run chkdsk"
                .into(),
        )),
        LogState::Inconsistent(why) => Err(Doubt(why)),
    }
}

/// `hiberfil.sys` in the root directory: see [`hiberfile`].
fn check_hibernation(ntfs: &Ntfs, fs: &mut StreamReader<'_>) -> Result<(), Doubt> {
    let root = ntfs
        .root_directory(fs)
        .map_err(damaged("the root directory"))?;
    // The crate sizes index record buffers by this field: bound it first.
    for attribute in root.attributes_raw() {
        let attribute = attribute.map_err(damaged("the root directory"))?;
        if attribute.ty().ok() != Some(NtfsAttributeType::IndexRoot) {
            continue;
        }
        let root_index = attribute
            .resident_structured_value::<NtfsIndexRoot>()
            .map_err(damaged("the root directory index"))?;
        let size = root_index.index_record_size();
        if size > MAX_INDEX_RECORD {
            return Err(Doubt(format!(
                "ntfs metadata is damaged: the root directory index claims {size}-byte records"
            )));
        }
    }
    let index = root
        .directory_index(fs)
        .map_err(damaged("the root directory index"))?;
    let mut finder = index.finder();
    let Some(entry) = NtfsFileNameIndex::find(&mut finder, ntfs, fs, "hiberfil.sys") else {
        return Ok(());
    };
    let entry = entry.map_err(damaged("the root directory index"))?;
    let file = entry.to_file(ntfs, fs).map_err(damaged("hiberfil.sys"))?;
    let item = unnamed_data(&file, fs, "hiberfil.sys")?;
    let attribute = item.to_attribute().map_err(damaged("hiberfil.sys"))?;
    let mut value = attribute.value(fs).map_err(damaged("hiberfil.sys"))?;
    let len = value.len().min(hiberfile::HEADER_LEN as u64);
    let mut head = vec![0u8; usize::try_from(len).unwrap_or(0)];
    value
        .read_exact(fs, &mut head)
        .map_err(damaged("hiberfil.sys"))?;
    match hiberfile::classify(&head) {
        Hibernation::Inactive => Ok(()),
        Hibernation::Active => Err(Doubt(
            "Windows is hibernated (hiberfil.sys is active); shut down fully".into(),
        )),
        Hibernation::Truncated => Err(Doubt(
            "hiberfil.sys is shorter than its header, so Windows may be hibernated on this \
             volume; shut down fully"
                .into(),
        )),
    }
}

/// Streams `$Bitmap` into free runs; also returns the clusters `$Bitmap` itself occupies.
fn read_bitmap(
    ntfs: &Ntfs,
    fs: &mut StreamReader<'_>,
    g: &Geometry,
) -> Result<(FreeClusters, Vec<Range<u64>>), Doubt> {
    let file = ntfs
        .file(fs, Known::Bitmap as u64)
        .map_err(damaged("$Bitmap"))?;
    let own_runs = data_runs(&file, fs, "$Bitmap", g)?;
    let item = unnamed_data(&file, fs, "$Bitmap")?;
    let attribute = item.to_attribute().map_err(damaged("$Bitmap"))?;
    let odd = NtfsAttributeFlags::COMPRESSED | NtfsAttributeFlags::ENCRYPTED;
    if attribute
        .flags()
        .intersects(odd | NtfsAttributeFlags::SPARSE)
    {
        return Err(Doubt("$Bitmap is compressed, encrypted or sparse".into()));
    }
    let needed = g.cluster_count.div_ceil(8);
    let have = attribute.value_length();
    if have < needed {
        return Err(Doubt(format!(
            "$Bitmap holds {have} bytes but the volume's {} clusters need {needed}",
            g.cluster_count
        )));
    }
    let mut value = attribute.value(fs).map_err(damaged("$Bitmap"))?;
    let mut runs = FreeRuns::new(g.cluster_count, g.cluster_size, fs.size());
    let mut buf = vec![0u8; usize::try_from(needed.min(BITMAP_CHUNK)).unwrap_or(0)];
    loop {
        let want = runs.bytes_wanted().min(buf.len() as u64);
        let Ok(want) = usize::try_from(want) else {
            break;
        };
        if want == 0 {
            break;
        }
        value
            .read_exact(fs, &mut buf[..want])
            .map_err(damaged("$Bitmap"))?;
        runs.push(&buf[..want]);
    }
    if !runs.is_complete() {
        return Err(Doubt("$Bitmap ended before the last cluster".into()));
    }
    Ok((runs.finish(), own_runs))
}

fn unnamed_data<'n, 'f>(
    file: &'f NtfsFile<'n>,
    fs: &mut StreamReader<'_>,
    name: &str,
) -> Result<ntfs::NtfsAttributeItem<'n, 'f>, Doubt> {
    match file.data(fs, "") {
        Some(item) => item.map_err(damaged(name)),
        None => Err(Doubt(format!(
            "ntfs metadata is damaged: {name} has no data attribute"
        ))),
    }
}

/// The clusters of `file`'s unnamed `$DATA` (none if resident). Sparse runs and runs outside
/// the volume are damage.
fn data_runs(
    file: &NtfsFile<'_>,
    fs: &mut StreamReader<'_>,
    name: &str,
    g: &Geometry,
) -> Result<Vec<Range<u64>>, Doubt> {
    let item = unnamed_data(file, fs, name)?;
    let attribute = item.to_attribute().map_err(damaged(name))?;
    let value = attribute.value(fs).map_err(damaged(name))?;
    let NtfsAttributeValue::NonResident(value) = value else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for run in value.data_runs() {
        let run = run.map_err(damaged(name))?;
        if out.len() >= MAX_RUNS {
            return Err(Doubt(format!("{name} has more than {MAX_RUNS} data runs")));
        }
        let Some(position) = run.data_position().value() else {
            return Err(Doubt(format!("{name} has a sparse data run")));
        };
        let start = position.get() / g.cluster_size;
        let end = start.saturating_add(run.allocated_size() / g.cluster_size);
        if end > g.cluster_count || position.get() % g.cluster_size != 0 {
            return Err(Doubt(format!(
                "ntfs metadata is damaged: {name} has a data run past the end of the volume"
            )));
        }
        out.push(start..end);
    }
    Ok(out)
}
