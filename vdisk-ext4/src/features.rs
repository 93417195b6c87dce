//! Feature flags: compatible, incompatible and read-only compatible sets.
//!
//! An incompatible feature changes how the volume must be read; a read-only compatible one how
//! it may be written (bigalloc, for one, changes what a bitmap bit means). The analyser refuses
//! (untrusted) any bit of either set it does not know, and the few known ones whose meaning
//! for allocation it cannot vouch for (compression, dirdata, snapshots, replicas). Unknown
//! compatible features are harmless by definition (an old kernel writes such a volume safely,
//! so every block they use is allocated in the bitmaps); they are listed, not refused.

/// The three feature words of the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Features {
    /// `s_feature_compat`.
    pub compat: u32,
    /// `s_feature_incompat`.
    pub incompat: u32,
    /// `s_feature_ro_compat`.
    pub ro_compat: u32,
}

/// `s_feature_compat` bits.
pub(crate) struct Compat;
impl Compat {
    pub const HAS_JOURNAL: u32 = 0x4;
}

/// `s_feature_incompat` bits.
pub(crate) struct Incompat;
impl Incompat {
    pub const RECOVER: u32 = 0x4;
    pub const JOURNAL_DEV: u32 = 0x8;
    pub const META_BG: u32 = 0x10;
    pub const BIT64: u32 = 0x80;
    pub const MMP: u32 = 0x100;
    pub const CSUM_SEED: u32 = 0x2000;
}

/// `s_feature_ro_compat` bits.
pub(crate) struct RoCompat;
impl RoCompat {
    pub const SPARSE_SUPER: u32 = 0x1;
    pub const GDT_CSUM: u32 = 0x10;
    pub const BIGALLOC: u32 = 0x200;
    pub const METADATA_CSUM: u32 = 0x400;
    pub const ORPHAN_PRESENT: u32 = 0x1_0000;
}

/// Compatible features by bit (names as `mke2fs -O` spells them).
const COMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x2, "imagic_inodes"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x40, "lazy_bg"),
    (0x80, "exclude_inode"),
    (0x100, "exclude_bitmap"),
    (0x200, "sparse_super2"),
    (0x400, "fast_commit"),
    (0x800, "stable_inodes"),
    (0x1000, "orphan_file"),
];

/// Incompatible features the analyser understands.
const INCOMPAT_NAMES: &[(u32, &str)] = &[
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x1_0000, "encrypt"),
    (0x2_0000, "casefold"),
];

/// Incompatible features known but refused: what they do to allocation is not vouched for.
const INCOMPAT_REFUSED: &[(u32, &str)] = &[(0x1, "compression"), (0x1000, "dirdata")];

/// Read-only compatible features the analyser understands.
const RO_COMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x4, "btree_dir"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x4000, "shared_blocks"),
    (0x8000, "verity"),
    (0x1_0000, "orphan_present"),
];

/// Read-only compatible features known but refused (out-of-tree snapshot and replica
/// formats whose blocks the bitmaps may not describe).
const RO_COMPAT_REFUSED: &[(u32, &str)] = &[(0x80, "snapshot"), (0x800, "replica")];

fn mask(names: &[(u32, &str)]) -> u32 {
    names.iter().fold(0, |m, (bit, _)| m | bit)
}

fn hex_bits(bits: u32) -> String {
    format!("{bits:#x}")
}

impl Features {
    /// Why the volume cannot be read by this analyser, if an incompatible or read-only
    /// compatible feature is unknown or refused.
    pub(crate) fn unknown(&self) -> Option<String> {
        for (word, known, refused, kind) in [
            (
                self.incompat,
                INCOMPAT_NAMES,
                INCOMPAT_REFUSED,
                "incompatible",
            ),
            (
                self.ro_compat,
                RO_COMPAT_NAMES,
                RO_COMPAT_REFUSED,
                "read-only compatible",
            ),
        ] {
            if let Some((_, name)) = refused.iter().find(|(bit, _)| word & bit != 0) {
                return Some(format!(
                    "ext4 feature '{name}' is not supported: its free space cannot be vouched for"
                ));
            }
            let unknown = word & !mask(known);
            if unknown != 0 {
                return Some(format!(
                    "ext4 volume uses unknown {kind} features ({}): a newer file system this \
                     version of vdisk cannot read safely",
                    hex_bits(unknown)
                ));
            }
        }
        None
    }

    /// The names of the features set, in `mke2fs -O` spelling; unknown compatible bits as hex.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (word, names) in [
            (self.compat, COMPAT_NAMES),
            (self.incompat, INCOMPAT_NAMES),
            (self.ro_compat, RO_COMPAT_NAMES),
        ] {
            out.extend(
                names
                    .iter()
                    .filter(|(bit, _)| word & bit != 0)
                    .map(|(_, n)| (*n).to_owned()),
            );
        }
        let unknown = self.compat & !mask(COMPAT_NAMES);
        if unknown != 0 {
            out.push(format!("compat:{}", hex_bits(unknown)));
        }
        out
    }

    /// `64bit`: 64-bit block numbers, descriptors of `s_desc_size` bytes.
    pub(crate) fn is_64bit(&self) -> bool {
        self.incompat & Incompat::BIT64 != 0
    }

    /// `metadata_csum`: crc32c of every metadata block.
    pub(crate) fn has_metadata_csum(&self) -> bool {
        self.ro_compat & RoCompat::METADATA_CSUM != 0
    }

    /// `metadata_csum_seed`: the checksum seed is stored in the superblock.
    pub(crate) fn has_csum_seed(&self) -> bool {
        self.incompat & Incompat::CSUM_SEED != 0
    }

    /// Group descriptors carry checksums (`uninit_bg` or `metadata_csum`): only then are the
    /// `*_UNINIT` flags honoured, as in the kernel.
    pub(crate) fn has_group_csum(&self) -> bool {
        self.ro_compat & (RoCompat::GDT_CSUM | RoCompat::METADATA_CSUM) != 0
    }

    /// `meta_bg`.
    pub(crate) fn has_meta_bg(&self) -> bool {
        self.incompat & Incompat::META_BG != 0
    }

    /// `sparse_super`.
    pub(crate) fn has_sparse_super(&self) -> bool {
        self.ro_compat & RoCompat::SPARSE_SUPER != 0
    }

    /// `sparse_super2`.
    pub(crate) fn has_sparse_super2(&self) -> bool {
        self.compat & 0x200 != 0
    }

    /// The file system generation as users name it: ext4 when any ext4-only feature is set,
    /// ext3 when it has a journal, else ext2 (as blkid tells them apart).
    pub(crate) fn generation(&self) -> &'static str {
        const EXT3_INCOMPAT: u32 = 0x2 | Incompat::RECOVER | Incompat::META_BG;
        const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4;
        if self.incompat & !EXT3_INCOMPAT != 0 || self.ro_compat & !EXT3_RO_COMPAT != 0 {
            "ext4"
        } else if self.compat & Compat::HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(compat: u32, incompat: u32, ro_compat: u32) -> Features {
        Features {
            compat,
            incompat,
            ro_compat,
        }
    }

    #[test]
    fn unknown_incompatible_and_read_only_features_are_refused_compatible_ones_listed() {
        // A WSL ext4: has_journal ext_attr resize_inode dir_index filetype extent 64bit
        // flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum.
        let wsl = f(0x3c, 0x2c2, 0x46b);
        assert_eq!(wsl.unknown(), None);
        assert_eq!(wsl.generation(), "ext4");
        assert!(wsl.names().contains(&"metadata_csum".to_owned()));
        assert!(
            f(0, 0x8000_0000, 0)
                .unknown()
                .unwrap()
                .contains("0x80000000")
        );
        assert!(f(0, 0, 0x10_0000).unknown().unwrap().contains("read-only"));
        assert!(f(0, 0x1, 0).unknown().unwrap().contains("compression"));
        assert!(f(0, 0, 0x80).unknown().unwrap().contains("snapshot"));
        let odd = f(0x8000, 0, 0);
        assert_eq!(odd.unknown(), None);
        assert!(odd.names().contains(&"compat:0x8000".to_owned()));
        assert_eq!(f(0x4, 0x2, 0x3).generation(), "ext3");
        assert_eq!(f(0x0, 0x2, 0x3).generation(), "ext2");
    }
}
