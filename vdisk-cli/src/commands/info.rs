//! `vdisk info`: what an image is, how much of it is allocated, its parent chain, and its
//! partitions and file systems.

use vdisk_core::{
    BlockDevice, DiskAnalysis, DiskImage, OpenOptions, ParentPolicy, Registry, analyze_disk,
    image_info,
};

use crate::cli::InfoArgs;
use crate::exit::FirstFailure;
use crate::registry;
use crate::report::{self, ChainMember, InfoJson, Stage};
use crate::volumes;

/// Runs `vdisk info`.
pub fn run(args: &InfoArgs, registry: &Registry, parents: &ParentPolicy) -> u8 {
    let mut result = FirstFailure::default();
    let opts = OpenOptions::read_only()
        .with_parents(parents.clone())
        .with_format(args.format.clone());
    for (i, file) in args.files.iter().enumerate() {
        let info = registry.open_path(file, &opts).and_then(|image| {
            let info = image_info(&*image)?;
            let chain = chain_of(&*image);
            // The partitions and file systems are extra facts: if the guest disk cannot be
            // read for them, say so and still show the rest.
            let disk: &dyn BlockDevice = &*image;
            let analysis = analyze_disk(disk, registry::analyzers())
                .map_err(|e| {
                    report::note(
                        file,
                        &format!(
                            "cannot list partitions: {}",
                            report::error_message(file, &e)
                        ),
                    );
                })
                .ok();
            Ok((info, chain, analysis))
        });
        match info {
            Ok((info, chain, analysis)) if args.json => {
                report::json_line(&InfoJson::new(file, &info, analysis.as_ref()).with_chain(chain));
            }
            Ok((info, chain, analysis)) => {
                if i > 0 {
                    report::out("");
                }
                report::out(&report::info_human(file, &info, &chain));
                if let Some(a) = analysis {
                    report::out(&volumes_human(&a));
                }
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

/// The partition section of `info`.
fn volumes_human(a: &DiskAnalysis) -> String {
    let mut text = format!("  partition table: {}", a.layout.scheme_name());
    for line in volumes::human_lines(a) {
        text.push_str(&format!("\n    {line}"));
    }
    text
}
