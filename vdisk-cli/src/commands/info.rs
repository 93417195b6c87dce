//! `vdisk info`: what an image is and how much of it is allocated.

use vdisk_core::{OpenOptions, Registry, image_info};

use crate::cli::InfoArgs;
use crate::exit::FirstFailure;
use crate::report::{self, InfoJson, Stage};

/// Runs `vdisk info`.
pub fn run(args: &InfoArgs, registry: &Registry) -> u8 {
    let mut result = FirstFailure::default();
    for (i, file) in args.files.iter().enumerate() {
        let info = registry
            .open_path(file, &OpenOptions::read_only())
            .and_then(|image| image_info(&*image));
        match info {
            Ok(info) if args.json => report::json_line(&InfoJson::new(file, &info)),
            Ok(info) => {
                if i > 0 {
                    report::out("");
                }
                report::out(&report::info_human(file, &info));
            }
            Err(e) => result.record(report::failure(file, &e, Stage::Untouched, args.json)),
        }
    }
    result.code()
}
