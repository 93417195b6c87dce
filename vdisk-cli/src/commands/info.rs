//! `vdisk info`: what an image is, how much of it is allocated, and its parent chain.

use vdisk_core::{DiskImage, OpenOptions, ParentPolicy, Registry, image_info};

use crate::cli::InfoArgs;
use crate::exit::FirstFailure;
use crate::report::{self, ChainMember, InfoJson, Stage};

/// Runs `vdisk info`.
pub fn run(args: &InfoArgs, registry: &Registry, parents: &ParentPolicy) -> u8 {
    let mut result = FirstFailure::default();
    let opts = OpenOptions::read_only().with_parents(parents.clone());
    for (i, file) in args.files.iter().enumerate() {
        let info = registry
            .open_path(file, &opts)
            .and_then(|image| Ok((image_info(&*image)?, chain_of(&*image))));
        match info {
            Ok((info, chain)) if args.json => {
                report::json_line(&InfoJson::new(file, &info).with_chain(chain))
            }
            Ok((info, chain)) => {
                if i > 0 {
                    report::out("");
                }
                report::out(&report::info_human(file, &info, &chain));
            }
            Err(e) => result.record(report::failure(file, &e, Stage::Untouched, args.json)),
        }
    }
    result.code()
}

/// The ancestors of `image`, immediate parent first.
pub fn chain_of(image: &dyn DiskImage) -> Vec<ChainMember> {
    let mut out = Vec::new();
    let mut current = image;
    while let Some(parent) = current.parent() {
        out.push(ChainMember {
            path: current
                .parent_path()
                .map_or_else(|| "(unknown)".to_string(), report::shown),
            format: parent.format(),
            kind: parent.kind().as_str(),
        });
        current = parent;
    }
    out
}
