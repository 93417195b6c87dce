//! `vdisk create`: a new empty image in a file that must not exist yet.

use std::path::Path;

use vdisk_core::{
    Access, CreateSpec, Error, ErrorKind, ImageKind, ParentPolicy, Registry, StdFile, image_info,
};

use crate::cli::CreateArgs;
use crate::registry::known_ids;
use crate::report::{self, Stage, human_size};

/// Runs `vdisk create`.
pub fn run(args: &CreateArgs, registry: &Registry, parents: &ParentPolicy) -> u8 {
    match create(args, registry, parents) {
        Ok(line) => {
            report::out(&line);
            0
        }
        Err((e, stage)) => report::failure(&args.file, &e, stage, false),
    }
}

/// The spec to create and the format id asked for (or, for a child, its parent's).
fn spec_for(
    args: &CreateArgs,
    registry: &Registry,
    parents: &ParentPolicy,
) -> Result<(CreateSpec, String), Error> {
    let usage = |m: &str| Error::new(ErrorKind::InvalidInput, m.to_string());
    if args.kind.kind() != ImageKind::Differencing {
        if parents.explicit.is_some() {
            return Err(usage(
                "--parent is for differencing images (--type differencing)",
            ));
        }
        let size = args
            .size
            .ok_or_else(|| usage("--size is required for fixed and dynamic images"))?;
        if size == 0 || size % 512 != 0 {
            return Err(usage(&format!(
                "--size {size} is not a whole number of 512-byte sectors; a disk holds whole \
                 sectors (try {})",
                size.div_ceil(512).max(1) * 512
            )));
        }
        let format = args
            .format
            .clone()
            .ok_or_else(|| usage("--format is required (e.g. --format vhd)"))?;
        return Ok((CreateSpec::new(args.kind.kind(), size), format));
    }
    let parent = parents
        .explicit
        .as_ref()
        .ok_or_else(|| usage("--type differencing needs --parent PATH (the image to build on)"))?;
    if args.size.is_some() {
        return Err(usage(
            "a differencing image has its parent's size; leave out --size",
        ));
    }
    // Refused before the file is created: a lossy locator would orphan the child.
    vdisk_core::parent::check_storable(parent)?;
    let format = match &args.format {
        Some(f) => f.clone(),
        None => {
            let file = StdFile::open(parent, Access::ReadOnly)?;
            registry
                .detect(&file)
                .map_err(|e| e.with_path(parent))?
                .id()
                .to_string()
        }
    };
    let spec = CreateSpec::differencing(parent, &args.file)
        .parent_dirs(parents.allowed_dirs.clone())
        .with_registry(registry.clone());
    Ok((spec, format))
}

fn create(
    args: &CreateArgs,
    registry: &Registry,
    parents: &ParentPolicy,
) -> Result<String, (Error, Stage)> {
    let (mut spec, format) =
        spec_for(args, registry, parents).map_err(|e| (e, Stage::NotCreated))?;
    let id = format.to_ascii_lowercase();
    let driver = registry.by_id(&id).ok_or_else(|| {
        let e = Error::new(
            ErrorKind::Unsupported,
            format!(
                "this build of vdisk cannot create {format:?} images (formats it knows: {})",
                known_ids(registry)
            ),
        );
        (e, Stage::NotCreated)
    })?;
    if let Some(b) = args.block_size {
        spec = spec.block_size(b);
    }
    // Every argument is checked before the file exists, so a refusal leaves nothing behind.
    driver
        .check_spec(&spec)
        .map_err(|e| (e, Stage::NotCreated))?;
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
    let over = spec
        .parent
        .as_ref()
        .map(|p| format!(", over parent {}", report::shown(p)))
        .unwrap_or_default();
    match made {
        Ok(info) => Ok(format!(
            "{}: created {} {} image, {} virtual ({} bytes), block size {}, file {}{over}",
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
