//! `vdisk info`: what an image is, how much of it is allocated, and its partitions and file
//! systems.

use vdisk_core::{BlockDevice, DiskAnalysis, OpenOptions, Registry, analyze_disk, image_info};

use crate::cli::InfoArgs;
use crate::exit::FirstFailure;
use crate::registry;
use crate::report::{self, InfoJson, Stage};
use crate::volumes;

/// Runs `vdisk info`.
pub fn run(args: &InfoArgs, registry: &Registry) -> u8 {
    let mut result = FirstFailure::default();
    for (i, file) in args.files.iter().enumerate() {
        let info = registry
            .open_path(file, &OpenOptions::read_only())
            .and_then(|image| {
                let info = image_info(&*image)?;
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
                Ok((info, analysis))
            });
        match info {
            Ok((info, analysis)) if args.json => {
                report::json_line(&InfoJson::new(file, &info, analysis.as_ref()));
            }
            Ok((info, analysis)) => {
                if i > 0 {
                    report::out("");
                }
                report::out(&report::info_human(file, &info));
                if let Some(a) = analysis {
                    report::out(&volumes_human(&a));
                }
            }
            Err(e) => result.record(report::failure(file, &e, Stage::Untouched, args.json)),
        }
    }
    result.code()
}

/// The partition section of `info`.
fn volumes_human(a: &DiskAnalysis) -> String {
    let mut text = format!("  partition table: {}", a.layout.scheme_name());
    for line in volumes::human_lines(a) {
        text.push_str(&format!("\n    {line}"));
    }
    text
}
