//! The gate with two test-only formats on real files: chains that mix them open and read
//! through, the folder policy still decides what is opened, and a parent no registered driver
//! recognises is refused by name.
//!
//! A toy image (`alpha` or `beta`: the same layout under another magic, so that each driver
//! recognises only its own files):
//!
//! ```text
//!   0   magic (8 bytes)           8   virtual size (u64 LE, a multiple of 512)
//!   16  own id (16 bytes)         32  parent: 0 none, 1 by path, 2 by id
//!   33  parent id (16 bytes)      49  parent path length (u16 LE), then the path (UTF-8)
//!   512 one byte per sector: 1 = this image holds it (else the parent's, or zeros)
//!   4096 + 512 * s   sector s
//! ```

use std::path::Path;

use super::*;
use crate::block::BlockDevice;
use crate::host_file::{Access, StdFile};
use crate::image::{BlockState, ImageKind};
use crate::parent::{Locator, LocatorKind, ParentPolicy};
use crate::units::BlockIndex;

const SECTOR: u64 = 512;
const MAP: u64 = 512;
const DATA: u64 = 4096;

#[derive(Debug)]
struct Toy {
    name: &'static str,
    magic: &'static [u8; 8],
}

static ALPHA: Toy = Toy {
    name: "alpha",
    magic: b"ALPHA-01",
};
static BETA: Toy = Toy {
    name: "beta",
    magic: b"BETA--01",
};

impl Toy {
    /// The static this driver is (the gate asks for a `'static` driver).
    fn this(&self) -> &'static Toy {
        if self.name == ALPHA.name {
            &ALPHA
        } else {
            &BETA
        }
    }
}

/// How a toy child names its parent.
enum Link<'a> {
    None,
    Path(&'a str),
    Id([u8; 16]),
}

/// Writes a toy image of `toy`'s format at `path`: `sectors` sectors, identity `id`, holding
/// `own` (sector, fill byte) itself.
fn make(toy: &Toy, path: &Path, sectors: u64, id: u8, link: Link, own: &[(u64, u8)]) {
    let mut bytes = vec![0u8; usize::try_from(DATA + sectors * SECTOR).unwrap()];
    bytes[..8].copy_from_slice(toy.magic);
    bytes[8..16].copy_from_slice(&(sectors * SECTOR).to_le_bytes());
    bytes[16..32].fill(id);
    match link {
        Link::None => {}
        Link::Path(p) => {
            bytes[32] = 1;
            bytes[49..51].copy_from_slice(&u16::try_from(p.len()).unwrap().to_le_bytes());
            bytes[51..51 + p.len()].copy_from_slice(p.as_bytes());
        }
        Link::Id(parent) => {
            bytes[32] = 2;
            bytes[33..49].copy_from_slice(&parent);
        }
    }
    for &(s, fill) in own {
        bytes[usize::try_from(MAP + s).unwrap()] = 1;
        let at = usize::try_from(DATA + s * SECTOR).unwrap();
        bytes[at..at + 512].fill(fill);
    }
    std::fs::write(path, bytes).unwrap();
}

#[derive(Debug)]
struct ToyImage {
    format: &'static str,
    file: Box<dyn HostFile>,
    size: u64,
    id: [u8; 16],
    map: Vec<u8>,
    parent: Option<Backing>,
}

/// The header fields: size, own id, and how the parent is named.
fn header(file: &dyn HostFile) -> Result<(u64, [u8; 16], Option<ParentReference>)> {
    let mut h = [0u8; 512];
    file.read_at(&mut h, 0)?;
    let size = u64::from_le_bytes(h[8..16].try_into().unwrap());
    if size % SECTOR != 0 || size / SECTOR > MAP * 7 {
        return Err(Error::invalid("toy: bad size", 8));
    }
    let id: [u8; 16] = h[16..32].try_into().unwrap();
    let reference = match h[32] {
        0 => None,
        1 => {
            let len = usize::from(u16::from_le_bytes([h[49], h[50]])).min(400);
            let path = String::from_utf8_lossy(&h[51..51 + len]).into_owned();
            Some(ParentReference::new(vec![Locator {
                kind: LocatorKind::WindowsRelative,
                label: "toy path",
                path,
            }]))
        }
        _ => Some(ParentReference::by_id(h[33..49].to_vec())),
    };
    Ok((size, id, reference))
}

impl FormatDriver for Toy {
    fn id(&self) -> &'static str {
        self.name
    }

    fn extensions(&self) -> &'static [&'static str] {
        if self.name == ALPHA.name {
            &["alpha"]
        } else {
            &["beta"]
        }
    }

    fn probe(&self, file: &dyn HostFile) -> Result<Confidence> {
        let mut magic = [0u8; 8];
        if file.len()? < DATA {
            return Ok(Confidence::No);
        }
        file.read_at(&mut magic, 0)?;
        Ok(if &magic == self.magic {
            Confidence::Yes
        } else if magic[..6] == self.magic[..6] {
            // Right family, unknown version: a damaged or unsupported image.
            Confidence::Maybe
        } else {
            Confidence::No
        })
    }

    fn open(&self, file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
        let (size, id, reference) = header(&*file)?;
        let mut map = vec![0u8; usize::try_from(size / SECTOR).unwrap()];
        file.read_at(&mut map, MAP)?;
        let parent = match &reference {
            None => None,
            Some(reference) => {
                let child = file.path().map(Path::to_path_buf);
                let parent = open_backing(opts, child.as_deref(), reference, self.this())?;
                // The linkage is this driver's to check; toys accept a parent of any format.
                if reference.id.is_some() && parent.image.identity().id != reference.id {
                    return Err(Error::invalid("toy: the parent is another image", 33));
                }
                Some(parent)
            }
        };
        Ok(Box::new(ToyImage {
            format: self.name,
            file,
            size,
            id,
            map,
            parent,
        }))
    }

    fn image_id(&self, file: &dyn HostFile) -> Result<Option<Vec<u8>>> {
        Ok(Some(header(file)?.1.to_vec()))
    }
}

impl BlockDevice for ToyImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        crate::block::check_range(self.size, offset, buf.len())?;
        for (i, chunk) in buf.chunks_mut(512).enumerate() {
            let at = offset + i as u64 * SECTOR;
            assert_eq!(at % SECTOR, 0, "toy reads whole sectors");
            let s = at / SECTOR;
            match &self.parent {
                _ if self.map[usize::try_from(s).unwrap()] == 1 => {
                    self.file.read_at(chunk, DATA + at)?;
                }
                Some(p) if at < p.image.size() => p.image.read_at(chunk, at)?,
                _ => chunk.fill(0),
            }
        }
        Ok(())
    }
}

impl DiskImage for ToyImage {
    fn format(&self) -> &'static str {
        self.format
    }

    fn kind(&self) -> ImageKind {
        if self.parent.is_some() {
            ImageKind::Differencing
        } else {
            ImageKind::Fixed
        }
    }

    fn block_size(&self) -> u64 {
        SECTOR
    }

    fn block_state(&self, block: BlockIndex) -> Result<BlockState> {
        let _ = block;
        Ok(BlockState::Unallocated)
    }

    fn host_file(&self) -> &dyn HostFile {
        &*self.file
    }

    fn parent(&self) -> Option<&dyn DiskImage> {
        self.parent.as_ref().map(|p| &*p.image)
    }

    fn parent_path(&self) -> Option<&Path> {
        self.parent.as_ref().map(|p| p.path.as_path())
    }

    fn image_id(&self) -> Option<Vec<u8>> {
        Some(self.id.to_vec())
    }
}

fn both() -> Registry {
    Registry::new(&[&ALPHA, &BETA])
}

fn read_all(image: &dyn DiskImage) -> Vec<u8> {
    let mut out = vec![0u8; usize::try_from(image.size()).unwrap()];
    image.read_at(&mut out, 0).unwrap();
    out
}

/// What a 4-sector image reads, sector by sector.
fn sectors(fills: [u8; 4]) -> Vec<u8> {
    fills.iter().flat_map(|&f| [f; 512]).collect()
}

#[test]
fn a_chain_that_mixes_formats_opens_and_reads_through_every_level() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // beta base ← alpha middle (named by path) ← beta top (named by the middle's id).
    make(
        &BETA,
        &d.join("base.beta"),
        4,
        1,
        Link::None,
        &[(0, 0xb0), (1, 0xb1), (2, 0xb2)],
    );
    make(
        &ALPHA,
        &d.join("mid.alpha"),
        4,
        2,
        Link::Path("base.beta"),
        &[(1, 0xa1)],
    );
    make(
        &BETA,
        &d.join("top.beta"),
        4,
        3,
        Link::Id([2; 16]),
        &[(2, 0xc2)],
    );

    let top = both()
        .open_path(&d.join("top.beta"), &OpenOptions::read_only())
        .unwrap();
    assert_eq!(read_all(&*top), sectors([0xb0, 0xa1, 0xc2, 0]));
    let formats: Vec<&str> = std::iter::successors(Some(&*top), |i| i.parent())
        .map(|i| i.format())
        .collect();
    assert_eq!(formats, ["beta", "alpha", "beta"]);
    let mid = top.parent().unwrap();
    assert_eq!(read_all(mid), sectors([0xb0, 0xa1, 0xb2, 0]));
    // A driver that links only to its own format refuses the mixed parent, naming both.
    own_format_only(mid, "mid.alpha", "alpha", "x").unwrap();
    let err = own_format_only(mid, "mid.alpha", "beta", "beta ids").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidImage);
    assert!(err.message().contains("is a alpha image"), "{err}");
    assert!(err.message().contains("differencing beta"), "{err}");
    assert_eq!(
        mid.parent_path().unwrap(),
        d.canonicalize().unwrap().join("base.beta")
    );
}

#[test]
fn a_parent_outside_the_allowed_folders_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (inside, outside) = (dir.path().join("vm"), dir.path().join("elsewhere"));
    std::fs::create_dir(&inside).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let base = outside.join("base.beta");
    let child = inside.join("child.alpha");
    make(&BETA, &base, 4, 1, Link::None, &[(0, 0xb0)]);
    make(
        &ALPHA,
        &child,
        4,
        2,
        Link::Path("..\\elsewhere\\base.beta"),
        &[],
    );
    let (base_before, child_before) = (
        std::fs::read(&base).unwrap(),
        std::fs::read(&child).unwrap(),
    );

    let err = both()
        .open_path(&child, &OpenOptions::read_only())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(
        err.message().contains("outside the child's folder"),
        "{err}"
    );
    assert!(err.message().contains("--parent-dir"), "{err}");
    assert_eq!(std::fs::read(&base).unwrap(), base_before);
    assert_eq!(std::fs::read(&child).unwrap(), child_before);

    // Allowing the folder opens the same chain.
    let policy = ParentPolicy {
        explicit: None,
        allowed_dirs: vec![outside.clone()],
    };
    let image = both()
        .open_path(&child, &OpenOptions::read_only().with_parents(policy))
        .unwrap();
    assert_eq!(read_all(&*image), sectors([0xb0, 0, 0, 0]));
}

#[test]
fn a_parent_no_registered_driver_recognises_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let child = d.join("child.alpha");
    make(&ALPHA, &child, 4, 2, Link::Path("base.beta"), &[]);
    // Neither format's bytes.
    std::fs::write(d.join("base.beta"), vec![0x5a; 8192]).unwrap();
    let err = both()
        .open_path(&child, &OpenOptions::read_only())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.message().contains("not a disk image"), "{err}");
    assert!(err.message().contains("alpha, beta"), "{err}");
    assert!(err.to_string().contains("base.beta"), "{err}");

    // Only the family's magic, a version no driver knows: a guess, not grounds to open it.
    let mut damaged = vec![0u8; 8192];
    damaged[..8].copy_from_slice(b"BETA--99");
    std::fs::write(d.join("base.beta"), damaged).unwrap();
    let err = both()
        .open_path(&child, &OpenOptions::read_only())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(
        err.message().contains("damaged or unsupported beta"),
        "{err}"
    );
}

#[test]
fn a_library_caller_with_one_driver_opens_chains_of_that_format_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make(
        &ALPHA,
        &d.join("base.alpha"),
        4,
        1,
        Link::None,
        &[(3, 0xa3)],
    );
    make(
        &ALPHA,
        &d.join("child.alpha"),
        4,
        2,
        Link::Id([1; 16]),
        &[(0, 0xc0)],
    );
    let open = |name: &str| {
        let file = StdFile::open(d.join(name), Access::ReadOnly).unwrap();
        ALPHA.open(Box::new(file), &OpenOptions::read_only())
    };
    let image = open("child.alpha").unwrap();
    assert_eq!(read_all(&*image), sectors([0xc0, 0, 0, 0xa3]));

    // A beta parent needs a registry that knows beta.
    make(&BETA, &d.join("base.beta"), 4, 7, Link::None, &[]);
    make(
        &ALPHA,
        &d.join("other.alpha"),
        4,
        8,
        Link::Path("base.beta"),
        &[],
    );
    let err = open("other.alpha").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.message().contains("tried alpha"), "{err}");
    let file = StdFile::open(d.join("other.alpha"), Access::ReadOnly).unwrap();
    let opts = OpenOptions::read_only().with_registry(both());
    ALPHA.open(Box::new(file), &opts).unwrap();
}

#[test]
fn a_parent_named_for_a_create_is_detected_with_the_specs_registry_and_opens_its_own_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make(&BETA, &d.join("base.beta"), 4, 1, Link::None, &[(0, 0xb0)]);
    make(
        &ALPHA,
        &d.join("mid.alpha"),
        4,
        2,
        Link::Path("base.beta"),
        &[(1, 0xa1)],
    );
    let mid = d.join("mid.alpha");
    let child = d.join("new.beta");
    let bytes = std::fs::read(&mid).unwrap();

    // With both formats: the alpha parent opens, with its beta parent under it.
    let spec = CreateSpec::differencing(&mid, &child).with_registry(both());
    let found = open_named_parent(&spec, &BETA).unwrap();
    assert_eq!(found.image.format(), "alpha");
    assert_eq!(read_all(&*found.image), sectors([0xb0, 0xa1, 0, 0]));
    assert_eq!(found.path, mid.canonicalize().unwrap());
    assert_eq!(found.image.parent().map(|p| p.format()), Some("beta"));

    // Without a registry only the asking driver's format is recognised.
    let err = open_named_parent(&CreateSpec::differencing(&mid, &child), &BETA).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.to_string().contains("mid.alpha"), "{err}");

    // A spec naming no parent is a usage error; a missing file is not found.
    let err = open_named_parent(&CreateSpec::new(ImageKind::Dynamic, 512), &BETA).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let gone = CreateSpec::differencing(d.join("gone.alpha"), &child).with_registry(both());
    assert_eq!(
        open_named_parent(&gone, &BETA).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        std::fs::read(&mid).unwrap(),
        bytes,
        "the parent is never written"
    );
    assert!(!child.exists());
}
