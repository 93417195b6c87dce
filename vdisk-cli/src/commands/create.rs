//! `vdisk create`: a new empty image in a file that must not exist yet.

use std::path::Path;

use vdisk_core::{CreateSpec, Error, ErrorKind, Registry, StdFile, image_info};

use crate::cli::CreateArgs;
use crate::registry::known_ids;
use crate::report::{self, Stage, human_size};

/// Runs `vdisk create`.
pub fn run(args: &CreateArgs, registry: &Registry) -> u8 {
    match create(args, registry) {
        Ok(line) => {
            report::out(&line);
            0
        }
        Err((e, stage)) => report::failure(&args.file, &e, stage, false),
    }
}

fn create(args: &CreateArgs, registry: &Registry) -> Result<String, (Error, Stage)> {
    let id = args.format.to_ascii_lowercase();
    let driver = registry.by_id(&id).ok_or_else(|| {
        let e = Error::new(
            ErrorKind::Unsupported,
            format!(
                "this build of vdisk cannot create {:?} images (formats it knows: {})",
                args.format,
                known_ids(registry)
            ),
        );
        (e, Stage::NotCreated)
    })?;
    let mut spec = CreateSpec::new(args.kind.kind(), args.size);
    if let Some(b) = args.block_size {
        spec = spec.block_size(b);
    }
    let file = StdFile::create_new(&args.file).map_err(|e| {
        let stage = if args.file.exists() {
            Stage::Untouched
        } else {
            Stage::NotCreated
        };
        (e, stage)
    })?;
    let made = driver
        .create(Box::new(file), &spec)
        .and_then(|image| image_info(&*image));
    match made {
        Ok(info) => Ok(format!(
            "{}: created {} {} image, {} virtual ({} bytes), block size {}, file {}",
            report::shown(&args.file),
            info.kind.as_str(),
            info.format,
            human_size(info.virtual_size),
            info.virtual_size,
            human_size(info.block_size),
            human_size(info.file_size),
        )),
        Err(e) => Err(remove_partial(&args.file, e)),
    }
}

/// Removes the file `create` made before failing, so a failed run leaves nothing behind.
fn remove_partial(file: &Path, error: Error) -> (Error, Stage) {
    match std::fs::remove_file(file) {
        Ok(()) => (error, Stage::CreatedAndRemoved),
        Err(_) => (error, Stage::CreatedNotRemoved),
    }
}
